"""Ring all-reduce between the workers' peer endpoints: bandwidth-optimal, chunked.

The vector is cut into n chunks. In n−1 reduce-scatter steps worker r sends chunk (r − s) mod n
to worker r+1 and adds the chunk (r − s − 1) mod n it receives from worker r−1; it then holds
the full sum of chunk (r + 1) mod n. In n−1 all-gather steps it passes complete chunks on
(sends (r + 1 − s) mod n, receives (r − s) mod n, straight into place). Every worker sends and
receives 2(n−1)/n of the vector, whatever n; sending to r+1 and receiving from r−1 overlap (the
receive runs in the endpoint's connection thread).

Example::

    ring = RingAllReduce(ctx, endpoint, group, stats)
    mean = ring.mean(gradient)          # identical on every worker
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from distkeras import messages
from distkeras.exchange.base import ExchangeStats, WorkerContext
from distkeras.exchange.compressed import CompressedMean
from distkeras.exchange.peers import (PeerEndpoint, PeerExchange, PeerGroup, PeerLostError, Rounds,
                                      ack)
from distkeras.vectors import check_finite

SEGMENT = 1 << 20       # floats per ring frame (4 MB): the receiver adds one while the next flies


def send_chunk(rank: int, n: int, step: int) -> int:
    """The chunk worker ``rank`` of ``n`` sends at ``step`` (of 2(n−1): reduce-scatter, then
    all-gather)."""
    return (rank - step) % n if step < n - 1 else (rank + 1 - (step - n + 1)) % n


def recv_chunk(rank: int, n: int, step: int) -> int:
    """The chunk worker ``rank`` of ``n`` receives at ``step``."""
    return (rank - step - 1) % n if step < n - 1 else (rank - (step - n + 1)) % n


class RingAllReduce:
    """Sum or mean of one float32 vector over all workers, through the ring r → r+1.

    Each chunk travels as segments of ``segment`` floats sent back to back, so the receiver
    adds segment i while segment i+1 is on the wire; all-gather segments are received straight
    into their place in the result (no copy). Frame ``aux`` = round << 32 | step << 16 | segment.
    """

    def __init__(self, ctx: WorkerContext, endpoint: PeerEndpoint, group: PeerGroup,
                 stats: ExchangeStats, segment: int = SEGMENT):
        self.ctx, self.endpoint, self.group, self.stats = ctx, endpoint, group, stats
        self.n, self.rank = ctx.num_workers, ctx.worker
        self.next, self.prev = (self.rank + 1) % self.n, (self.rank - 1) % self.n
        self.segment = int(segment)
        self.rounds = Rounds(ctx.round_timeout)
        self._round = 0
        endpoint.handlers[messages.RING] = self._on_chunk
        endpoint.targets[messages.RING] = self._target
        endpoint.on_lost(lambda w: w == self.prev and self.rounds.fail(
            f"worker {self.rank}: ring peer worker {w} was lost mid-round"))

    def _check_sender(self, conn) -> None:
        if conn.worker_id != self.prev:
            raise ValueError(f"ring chunk from worker {conn.worker_id}, expected {self.prev}")

    def _target(self, conn, aux, nbytes):
        self._check_sender(conn)
        return self.rounds.target(aux >> 32, aux & 0xFFFFFFFF, nbytes)

    def _on_chunk(self, conn, frame):
        self._check_sender(conn)
        self.rounds.deliver(frame.aux >> 32, frame)
        return ack(frame)

    def _recv_chunk(self, step: int) -> int:
        return recv_chunk(self.rank, self.n, step)

    def _send_chunk(self, step: int) -> int:
        return send_chunk(self.rank, self.n, step)

    def sum(self, vector: np.ndarray, out: np.ndarray | None = None,
            scale: float = 1.0) -> np.ndarray:
        """``scale`` × Σ over workers of ``vector``, into ``out`` (default: a new array).

        ``vector`` is only read. No pass over the whole vector is spent on copies: the first
        add of each chunk reads ``vector`` and writes ``out``, the owner of a complete chunk
        scales it before the all-gather, and all-gather segments land in place.
        """
        src = np.ascontiguousarray(vector, dtype=np.float32).ravel()
        out = np.empty_like(src) if out is None else out
        n = self.n
        if n == 1:
            np.multiply(src, np.float32(scale), out=out)
            return out
        bounds = np.linspace(0, src.size, n + 1).astype(np.int64)
        starts = [list(range(bounds[c], bounds[c + 1], self.segment)) or [bounds[c]]
                  for c in range(n)]
        cut = lambda a, c, x: x[a:min(a + self.segment, bounds[c + 1])]  # noqa: E731
        mine = [[cut(a, c, src) for a in starts[c]] for c in range(n)]
        done = [[cut(a, c, out) for a in starts[c]] for c in range(n)]
        round_, self._round = self._round, self._round + 1

        def where(aux, nbytes):
            step, seg = aux >> 16, aux & 0xFFFF
            parts = done[self._recv_chunk(step)]
            if seg >= len(parts) or parts[seg].nbytes != nbytes:
                raise ValueError(f"ring segment {step}/{seg} of {nbytes} bytes does not fit")
            return parts[seg] if step >= n - 1 else None   # all-gather: straight into place

        def apply(frame):
            step, seg = (frame.aux >> 16) & 0xFFFF, frame.aux & 0xFFFF
            c = self._recv_chunk(step)
            if seg >= len(done[c]) or frame.payload.shape != done[c][seg].shape:
                raise ValueError(f"ring segment of {frame.payload.size} values does not fit "
                                 f"step {step} segment {seg}")
            if step < n - 1:           # each chunk is received once in the reduce-scatter
                np.add(mine[c][seg], frame.payload, out=done[c][seg])
            elif frame.payload is not done[c][seg]:
                np.copyto(done[c][seg], frame.payload)

        self.rounds.open(round_, apply, where)
        expected = 0
        for step in range(2 * (n - 1)):
            c = self._send_chunk(step)
            if step == n - 1 and scale != 1.0:      # this worker's complete chunk
                for part in done[c]:
                    part *= np.float32(scale)
            parts = mine[c] if step == 0 else done[c]
            self.group.request_many(self.next, messages.RING, parts,
                                    [(round_ << 32) | (step << 16) | k for k in range(len(parts))])
            expected += len(done[self._recv_chunk(step)])
            with self.stats.waiting():
                self.rounds.wait(expected, self._check, f"ring peer worker {self.prev}")
        self.stats.peers.update({self.next, self.prev})
        return out

    def mean(self, vector: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(1/n) Σ over workers of ``vector`` (identical on every worker, bit for bit)."""
        return self.sum(vector, out=out, scale=1.0 / self.n)

    # -- compressed rounds: one frame per chunk, its bytes a compressed vector -----------------
    def sum_encoded(self, vector: np.ndarray, compressor, scale: float = 1.0) -> np.ndarray:
        """``scale`` × Σ over workers, every chunk compressed on the wire by a ``dense``
        compressor: reduce-scatter partial sums are re-encoded at each hop; each complete chunk
        is encoded once by its owner, who keeps what it sent, so the result is identical on
        every worker."""
        src = np.ascontiguousarray(vector, dtype=np.float32).ravel()
        n = self.n
        if n == 1:
            return src * np.float32(scale)
        out = np.empty_like(src)
        bounds = np.linspace(0, src.size, n + 1).astype(np.int64)
        part = lambda c, x: x[bounds[c]:bounds[c + 1]]  # noqa: E731
        forward: dict[int, bytes] = {}      # all-gather: the owners' bytes, passed on as they came

        def apply(frame):
            step = (frame.aux >> 16) & 0xFFFF
            c = self._recv_chunk(step)
            decoded, _ = compressor.decode(_bytes(frame), bounds[c + 1] - bounds[c])
            if step < n - 1:
                np.add(part(c, src), decoded, out=part(c, out))
            else:
                part(c, out)[:] = decoded
                forward[c] = _bytes(frame)

        def send(step):
            c = self._send_chunk(step)
            if step == 0:
                return compressor.encode(part(c, src))
            if step < n - 1:
                return compressor.encode(part(c, out))
            if step == n - 1:               # this worker's complete chunk
                mine = part(c, out)
                mine *= np.float32(scale)
                blob = compressor.encode(mine)
                mine[:] = compressor.decode(blob, mine.size)[0]
                return blob
            return forward[c]

        self._rounds_of(2 * (n - 1), apply, send)
        return out

    def gather_encoded(self, blob: np.ndarray) -> list:
        """Every worker's ``blob`` (bytes), by worker: a ring all-gather of n − 1 steps."""
        n, r = self.n, self.rank
        blobs: list = [None] * n
        blobs[r] = blob

        def apply(frame):
            step = (frame.aux >> 16) & 0xFFFF
            blobs[(r - step - 1) % n] = _bytes(frame)

        self._rounds_of(n - 1, apply, lambda step: blobs[(r - step) % n])
        return blobs

    def _rounds_of(self, steps: int, apply, send) -> None:
        """One ring round of ``steps`` steps: ``send(step)`` to the next worker, then wait for
        the previous worker's frame of that step (folded in by ``apply(frame)``)."""
        round_, self._round = self._round, self._round + 1
        self.rounds.open(round_, apply)
        for step in range(steps):
            self.group.request(self.next, messages.RING, send(step),
                               aux=(round_ << 32) | (step << 16))
            with self.stats.waiting():
                self.rounds.wait(step + 1, self._check, f"ring peer worker {self.prev}")
        self.stats.peers.update({self.next, self.prev})

    def _check(self) -> None:
        if self.ctx.control is not None:
            table = self.group.refresh()
            if self.prev not in table:
                raise PeerLostError(f"worker {self.rank}: ring peer worker {self.prev} is no "
                                    "longer registered with the driver (lost)")


def replica_refusal(compressor) -> str:
    """Why a sparsifying compressor cannot carry whole replicas that are averaged and adopted."""
    return (f"compression={compressor.spec!r} keeps a small part of each step of a stream and "
            "delays the rest; where whole replicas are averaged and adopted (model averaging, "
            "LocalSGD, EASGD, AEASGD, SlowMo's average) the run would go on from a mean that "
            "barely moves (measured: a BatchNorm MLP at 0.29-0.39 accuracy against 0.84-0.86). "
            "Use 'int8', 'fp16' or 'bf16' here; top-k and PowerSGD suit gradients and updates "
            "(AR-SGD, DOWNPOUR, ADAG, D-PSGD)")


def _bytes(frame):
    """A compressed frame's bytes (a float32 frame here is a peer that does not compress)."""
    if not isinstance(frame.payload, (bytes, bytearray)):
        raise ValueError(f"ring frame of {type(frame.payload).__name__} in a compressed round "
                         "(do all workers run the same compression=?)")
    return frame.payload


class RingExchange(PeerExchange):
    """Synchronous exchanges through a ring all-reduce. ``after_window`` replaces each replica by
    the exact mean of all replicas (LocalSGD, SlowMo's exact average); AR-SGD calls
    :meth:`mean` on gradients every step. With ``compression=`` the means are compressed
    (``distkeras.exchange.compressed``): replicas as differences from the last mean."""

    exact_average = True
    averages_replicas = True     # its stream is replicas (GradientRing: gradients)

    @classmethod
    def refusal(cls, compressor):
        if compressor is not None and cls.averages_replicas and not compressor.dense:
            return replica_refusal(compressor)
        return None       # gradients: every compressor; replicas: the dense ones

    def open(self) -> None:
        super().open()
        self.ring = RingAllReduce(self.worker, self.peer_endpoint, self.group, self.stats)
        self.compressed: Optional[CompressedMean] = None

    def start(self, theta: np.ndarray) -> np.ndarray:
        self.group.meet(wait_for_all=True)
        if self.compressor is not None:
            self.compressed = CompressedMean(self.ring, self.compressor, self.stats,
                                             self.worker.seed,
                                             theta if self.averages_replicas else None)
        return theta

    def mean(self, vector: np.ndarray, out: np.ndarray | None = None,
             check: bool = True) -> np.ndarray:
        """The mean over the workers, exact unless compressed. Identical on each worker: with
        ``check``, if it overflowed, every worker raises here and the synchronous run fails at
        once. ``check=False`` where an overflow is expected and handled: under loss scaling
        every replica then skips the same step."""
        self.stats.exchanges += 1
        reduce = self.ring.mean if self.compressed is None else self.compressed
        mean = self.timed(reduce, vector, out)
        if check:
            check_finite(mean, "all-reduced mean", f"worker {self.worker.worker}, ring round "
                                                    f"{self.ring._round - 1}")
        return mean

    def after_window(self, theta: np.ndarray, steps: int) -> np.ndarray:
        return self.mean(theta)
