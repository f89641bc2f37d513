"""Slow momentum around a peer exchange: the base exchange runs as usual, and every ``τ`` base
steps the algorithm's slow step (``SlowMo.slow_step``) moves the replica's parameters from where
the period started, after an exact ring average when the algorithm asks for one (statistics
such as BatchNorm's moving moments are averaged, never extrapolated by the momentum). With
``compression=`` that average is compressed too, as differences from the last one.

Example::

    exchange = SlowMoExchange(slowmo, ctx, base=RingExchange(slowmo.base, ctx))
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from distkeras.exchange.base import MEAN, Exchange, WorkerContext, split
from distkeras.exchange.compressed import CompressedMean
from distkeras.exchange.peers import PeerExchange, PeerGroup
from distkeras.exchange.ring import RingAllReduce


class SlowMoExchange(Exchange):
    """``algorithm`` is a SlowMo rule (``slow_period``, ``average``, ``slow_step``); ``base`` the
    exchange of its base algorithm (a :class:`PeerExchange`)."""

    run_model = MEAN

    @classmethod
    def refusal(cls, compressor):
        return None      # its base exchange refuses what it cannot take; its average takes any

    def __init__(self, algorithm, worker: WorkerContext, base: PeerExchange):
        super().__init__(algorithm, worker)
        self.base = base
        self.stats = base.stats            # one account of this worker's communication
        self.ring: Optional[RingAllReduce] = None
        self.x_start: Optional[np.ndarray] = None
        self.momentum: Optional[np.ndarray] = None
        self.since = 0                      # base steps since the period started

    @property
    def endpoint(self):
        return self.base.endpoint

    def open(self) -> None:
        self.base.open()
        needs_ring = self.algorithm.average and not getattr(self.base, "exact_average", False)
        if needs_ring:
            # its own clients: the base's may be busy in a gossip thread (clients are not
            # thread-safe); the endpoint is shared
            self.ring_group = PeerGroup(self.worker, self.base.peer_endpoint)
            self.base.linger = 2.0     # the ring is synchronous: peers read their last acks
            self.ring = RingAllReduce(self.worker, self.base.peer_endpoint, self.ring_group,
                                      self.stats)

    def start(self, theta: np.ndarray) -> np.ndarray:
        theta = self.base.start(theta)
        if self.ring is not None:
            self.ring_group.meet(wait_for_all=True)
        self.x_start = np.array(theta, dtype=np.float32, copy=True)
        self.ring_mean = None if self.ring is None else (
            self.ring.mean if self.compressor is None else
            CompressedMean(self.ring, self.compressor, self.stats, self.worker.seed, theta))
        self.momentum = np.zeros_like(split(self.x_start, self.worker.params)[0])
        return theta

    def after_window(self, theta: np.ndarray, steps: int) -> Optional[np.ndarray]:
        mixed = self.base.after_window(theta, steps)
        x = theta if mixed is None else mixed
        self.since += steps
        if self.since < self.algorithm.slow_period:
            return mixed
        if self.ring is not None:
            x = self.timed(self.ring_mean, x)
            self.stats.exchanges += 1
        x = np.array(x, dtype=np.float32, copy=True)
        params, _ = split(x, self.worker.params)     # statistics are averaged, never stepped
        params[:] = self.algorithm.slow_step(split(self.x_start, self.worker.params)[0], params,
                                             self.momentum)
        np.copyto(self.x_start, x)
        self.since = 0
        return x

    def finish(self, theta: np.ndarray) -> np.ndarray:
        theta = self.base.finish(theta)
        self._close_ring()
        return theta

    def _close_ring(self) -> None:
        if self.ring is not None:
            self.stats.bytes_sent += self.ring_group.bytes_out
            self.ring_group.close()
            self.ring = None

    def close(self) -> None:
        self._close_ring()
        self.base.close()
