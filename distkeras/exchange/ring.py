"""Ring all-reduce between the workers' peer endpoints: bandwidth-optimal, chunked.

The vector is cut into n chunks. In n−1 reduce-scatter steps worker r sends chunk (r − s) mod n
to worker r+1 and adds the chunk (r − s − 1) mod n it receives from worker r−1; it then holds
the full sum of chunk (r + 1) mod n. In n−1 all-gather steps it passes complete chunks on
(sends (r + 1 − s) mod n, receives (r − s) mod n). Every worker sends and receives
2(n−1)/n of the vector, whatever n; sending to r+1 and receiving from r−1 overlap (the receive
runs in the endpoint's connection thread).

Example::

    ring = RingAllReduce(ctx, endpoint, group, stats)
    mean = ring.mean(gradient)          # identical on every worker
"""
from __future__ import annotations

import numpy as np

from distkeras import messages
from distkeras.exchange.base import ExchangeStats, WorkerContext
from distkeras.exchange.peers import (PeerEndpoint, PeerExchange, PeerGroup, PeerLostError, Rounds,
                                      ack)


class RingAllReduce:
    """Sum or mean of one float32 vector over all workers, through the ring r → r+1."""

    def __init__(self, ctx: WorkerContext, endpoint: PeerEndpoint, group: PeerGroup,
                 stats: ExchangeStats):
        self.ctx, self.endpoint, self.group, self.stats = ctx, endpoint, group, stats
        self.n, self.rank = ctx.num_workers, ctx.worker
        self.next, self.prev = (self.rank + 1) % self.n, (self.rank - 1) % self.n
        self.rounds = Rounds(ctx.round_timeout)
        self._round = 0
        endpoint.handlers[messages.RING] = self._on_chunk
        endpoint.on_lost(lambda w: w == self.prev and self.rounds.fail(
            f"worker {self.rank}: ring peer worker {w} was lost mid-round"))

    def _on_chunk(self, conn, frame):
        if conn.worker_id != self.prev:
            raise ValueError(f"ring chunk from worker {conn.worker_id}, expected {self.prev}")
        self.rounds.deliver(frame.aux // messages.RING_STEPS, frame)
        return ack(frame)

    def sum(self, vector: np.ndarray) -> np.ndarray:
        """Σ over workers of ``vector`` (a new array; ``vector`` is left untouched)."""
        out = np.array(vector, dtype=np.float32, copy=True).ravel()
        n, r = self.n, self.rank
        if n == 1:
            return out
        bounds = np.linspace(0, out.size, n + 1).astype(np.int64)
        chunks = [out[bounds[c]:bounds[c + 1]] for c in range(n)]
        round_, self._round = self._round, self._round + 1

        def apply(frame):
            step = frame.aux % messages.RING_STEPS
            if step < n - 1:
                target = chunks[(r - step - 1) % n]
                if frame.payload.shape != target.shape:
                    raise ValueError(f"ring chunk of {frame.payload.size} values, expected "
                                     f"{target.size}")
                np.add(target, frame.payload, out=target)
            else:
                target = chunks[(r - (step - n + 1)) % n]
                if frame.payload.shape != target.shape:
                    raise ValueError(f"ring chunk of {frame.payload.size} values, expected "
                                     f"{target.size}")
                np.copyto(target, frame.payload)

        self.rounds.open(round_, apply)
        for step in range(2 * (n - 1)):
            chunk = (r - step) % n if step < n - 1 else (r + 1 - (step - n + 1)) % n
            self.group.request(self.next, messages.RING, chunks[chunk],
                               aux=round_ * messages.RING_STEPS + step)
            with self.stats.waiting():
                self.rounds.wait(step + 1, self._check, f"ring peer worker {self.prev}")
        self.stats.peers.update({self.next, self.prev})
        return out

    def mean(self, vector: np.ndarray) -> np.ndarray:
        out = self.sum(vector)
        out *= np.float32(1.0 / self.n)
        return out

    def _check(self) -> None:
        if self.ctx.control is not None:
            table = self.group.refresh()
            if self.prev not in table:
                raise PeerLostError(f"worker {self.rank}: ring peer worker {self.prev} is no "
                                    "longer registered with the driver (lost)")


class RingExchange(PeerExchange):
    """Synchronous exchanges through a ring all-reduce. ``after_window`` replaces each replica by
    the exact mean of all replicas (LocalSGD, SlowMo's exact average); AR-SGD calls
    :meth:`mean` on gradients every step."""

    exact_average = True

    def open(self) -> None:
        super().open()
        self.ring = RingAllReduce(self.worker, self.peer_endpoint, self.group, self.stats)

    def start(self, theta: np.ndarray) -> np.ndarray:
        self.group.meet(wait_for_all=True)
        return theta

    def mean(self, vector: np.ndarray) -> np.ndarray:
        self.stats.exchanges += 1
        return self.timed(self.ring.mean, vector)

    def after_window(self, theta: np.ndarray, steps: int) -> np.ndarray:
        return self.mean(theta)
