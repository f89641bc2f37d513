"""The seam between the shared training loop and an algorithm's communication.

A worker's loop is the same for every algorithm (``distkeras.executor.remote``): read a window of
batches, run the local steps in one compiled call, then hand the replica's weights to its
**exchange**, which returns the weights to continue from. What differs between algorithms is
only the exchange: a commit to the parameter server, a ring all-reduce, a gossip with
neighbours, or nothing. Control (progress, epoch logs, stop) always goes to the driver's
coordinator, whatever the exchange.

An exchange says how it communicates:

- ``run_model``: what the run's model is, a :class:`RunModel`: ``CENTRE`` (θ̃ on the parameter
  server), ``MEAN`` (the mean of the replicas, reported to the coordinator at epoch ends) or
  ``MEMBERS`` (an ensemble of the workers' final replicas);
- ``needs_parameter_server``: the driver hosts a parameter server for it;
- ``can_overlap``: its round trips can be in flight while the next window computes;
- ``endpoint``: the ``host:port`` of this worker's peer endpoint, if it serves one;
- ``refusal(compressor)``: why it cannot take a compressor (``distkeras.compression``), None
  when it can; the driver asks before any task starts, and the exchange again when it is made.

A flat vector is ``[parameters | statistics]`` (``distkeras.state``): the first
``worker.params`` values are what update rules move, the rest (BatchNorm moving moments) is
only ever averaged.

Example (a custom exchange; ``Algorithm.exchange`` returns it)::

    class Halve(Exchange):
        run_model = MEAN
        def after_window(self, theta, steps):
            return theta * 0.5           # the weights the next window starts from
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from distkeras.compression import Compressor, compressor
from distkeras.vectors import DivergedError, all_finite, check_finite, split  # noqa: F401


@dataclass(frozen=True)
class RunModel:
    """What the model of a run is, and what the workers report to the driver for it."""

    name: str
    epoch_replicas: bool = False    # each worker reports θ at every epoch end (model: the mean)
    final_replicas: bool = False    # each worker reports its final θ
    ensemble: bool = False          # the final replicas are the members of an ensemble

    def __str__(self) -> str:
        return self.name


CENTRE = RunModel("centre")                                          # θ̃ on the parameter server
MEAN = RunModel("mean", epoch_replicas=True, final_replicas=True)    # mean of the replicas
MEMBERS = RunModel("members", final_replicas=True, ensemble=True)    # one model per worker


@dataclass
class ExchangeStats:
    """Where a worker's communication time and bytes went (its row of ``history.workers``)."""

    exchange_seconds: float = 0.0   # inside exchanges (including the waits below)
    wait_seconds: float = 0.0            # blocked on a barrier, a round or a peer
    bytes_sent: int = 0
    bytes_received: int = 0
    exchanges: int = 0
    peers: set = field(default_factory=set)   # worker ids met
    missed_commits: int = 0   # others' commits an overlapped window did not see (staleness)
    raw_bytes_sent: int = 0   # what the same exchanges would have sent as float32 (compressed)
    feedback_norm: float = 0.0   # ‖what a compressor dropped and is still to send‖, at the end

    def as_row(self) -> dict:
        row = asdict(self)
        row["peers"] = ",".join(str(p) for p in sorted(self.peers))
        row["raw_bytes_sent"] = self.raw_bytes_sent or self.bytes_sent   # uncompressed: the same
        row["compression_ratio"] = (row["raw_bytes_sent"] / self.bytes_sent if self.bytes_sent
                                    else 1.0)
        return row

    @contextmanager
    def waiting(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.wait_seconds += time.perf_counter() - t0


@dataclass
class WorkerContext:
    """What an exchange knows of its worker: identity, addresses of the driver's services, the
    per-run secret, timeouts, and how to meet its peers."""

    worker: int
    num_workers: int
    secret: bytes
    coordinator: tuple[str, int]
    parameter_server: Optional[tuple[str, int]] = None
    connect_timeout: float = 30.0
    round_timeout: float = 600.0
    tls_cert: Optional[str] = None
    seed: int = 0
    peer_host: Optional[str] = None          # address this worker's endpoint advertises
    peer_ports: Optional[tuple[int, int]] = None   # port range for the endpoint (None: ephemeral)
    overlap: bool = False                    # parameter-server commits in flight during windows
    params: Optional[int] = None             # where the statistics start in a flat vector
    barrier: Any = None                      # BarrierTaskContext in a barrier stage
    control: Any = None                      # the coordinator client (rendezvous of async peers)
    compression: Optional[str] = None        # the run's compressor spec (None: float32)


class Exchange:
    """Base exchange: no communication at all (each worker trains alone)."""

    run_model: RunModel = MEMBERS
    needs_parameter_server = False
    can_overlap = False            # round trips can be in flight during the next window
    peer_endpoint = None   # a PeerEndpoint, for exchanges between workers

    def __init__(self, algorithm, worker: WorkerContext):
        self.algorithm = algorithm
        self.worker = worker
        self.stats = ExchangeStats()
        self.compressor = compressor(worker.compression,
                                     seed=(worker.seed * 7919 + worker.worker) % 2 ** 32)
        problem = self.refusal(self.compressor)
        if problem:
            raise ValueError(problem)

    @classmethod
    def refusal(cls, compressor: Optional[Compressor]) -> Optional[str]:
        """Why this exchange cannot take ``compressor`` (None: it can, or there is none)."""
        if compressor is None:
            return None
        return (f"compression={compressor.spec!r}: the workers of this algorithm do not "
                "communicate while training (an ensemble): there is nothing to compress")

    @property
    def endpoint(self) -> Optional[str]:
        """``host:port`` of this worker's peer endpoint (None: it serves none)."""
        return self.peer_endpoint.address if self.peer_endpoint is not None else None

    def open(self) -> None:
        """Connect and bind (called once, before the worker registers with the coordinator)."""

    def start(self, theta: np.ndarray) -> np.ndarray:
        """The weights to begin training from, given the coordinator's current model (called
        once the worker is registered: peers meet here)."""
        return theta

    def after_window(self, theta: np.ndarray, steps: int) -> Optional[np.ndarray]:
        """Exchange after a window of ``steps`` local steps that ended at ``theta``; return the
        weights the next window starts from (None: continue from ``theta``)."""
        return None

    def settle(self, theta: np.ndarray) -> Optional[np.ndarray]:
        """At each epoch end: complete what is still in flight; return the weights to go on
        from (None: ``theta``). Default: nothing is ever in flight."""
        return None

    def finish(self, theta: np.ndarray) -> np.ndarray:
        """The worker's final weights, once training is over (pending gossip folded in)."""
        return theta

    def close(self) -> None:
        """Release connections and endpoints; idempotent."""

    def __enter__(self) -> "Exchange":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def timed(self, fn: Callable, *args: Any):
        """Run ``fn(*args)`` counting its time as communication."""
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.stats.exchange_seconds += time.perf_counter() - t0
