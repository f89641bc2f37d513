"""The parameter-server exchange: commit to θ̃ on the driver, fold the reply in.

Every λ local steps the worker sends ``algorithm.worker_send(θ, θ₀)`` and continues from
``algorithm.worker_receive(θ, θ₀, reply)``; θ₀ (the anchor) is the replica right after its last
exchange. The rule sees the parameters only: the statistics (``distkeras.state``) ride along
unchanged at the end of each commit, for the server to average into θ̃, and the worker keeps its
own. The server side is ``distkeras.driver.parameter_server``.

:class:`OverlappedParameterServerExchange` hides the round trip behind the next window: the
commit of window k is in flight while window k+1 computes, and its reply is folded in at the
next boundary (one window more staleness).

With ``compression=`` the commit's parameters travel compressed as the rule's
``commit_stream`` says (error feedback for updates, a mirrored view for replicas; the driver
keeps the other end per worker, started at the pull both sides share); the statistics follow as
float32. Replies stay float32: the centre variable is what every worker continues from.

Example::

    with ParameterServerExchange(algorithms.ADAG(), ctx) as exchange:
        theta = exchange.start(theta)                  # pulls θ̃
        theta = exchange.after_window(theta, steps=12) # commit Δ/λ, adopt θ̃
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional

import numpy as np

from distkeras import messages
from distkeras.exchange.base import CENTRE, Exchange, WorkerContext, split
from distkeras.transport import Client, pinned_tls


class ParameterServerExchange(Exchange):
    run_model = CENTRE
    needs_parameter_server = True
    can_overlap = True

    def __init__(self, algorithm, worker: WorkerContext):
        super().__init__(algorithm, worker)
        self.client: Optional[Client] = None
        self.anchor: Optional[np.ndarray] = None
        self.version: Optional[int] = None     # the server's update count in its last reply
        self.stream = None                     # this end of the compressed commit stream

    @classmethod
    def refusal(cls, compressor):
        if compressor is not None and compressor.collective:
            return (f"compression={compressor.spec!r} is an all-reduce of its own (the ring's); "
                    "a parameter-server commit takes 'fp16', 'bf16', 'int8' or "
                    "'topk:<fraction>'")
        return None

    def open(self) -> None:
        host, port = self.worker.parameter_server
        self.client = Client(host, port, self.worker.secret, self.worker.worker,
                             connect_timeout=self.worker.connect_timeout,
                             ssl_context=pinned_tls(self.worker.tls_cert),
                             role="the parameter server")

    def start(self, theta: np.ndarray) -> np.ndarray:
        reply = self.client.request(messages.PULL)
        self.anchor, self.version = reply.payload.copy(), reply.aux
        if self.compressor is not None:     # the driver starts its end at this same pull
            self.stream = self.algorithm.commit_stream(
                self.compressor, split(self.anchor, self.worker.params)[0])
        return self.anchor

    def after_window(self, theta: np.ndarray, steps: int) -> np.ndarray:
        return self.timed(self._commit, theta)

    def _commit(self, theta: np.ndarray) -> np.ndarray:
        return self._take_reply(theta, *self._round_trip(self._payload(theta)))

    def _payload(self, theta: np.ndarray) -> np.ndarray:
        """``worker_send`` on the parameters, followed by this worker's statistics."""
        params, statistics = split(theta, self.worker.params)
        payload = self.algorithm.worker_send(params, split(self.anchor, self.worker.params)[0])
        if self.stream is not None:
            self.stats.raw_bytes_sent += payload.nbytes + statistics.nbytes
            payload = self.stream.send(payload)
            self.stats.feedback_norm = self.stream.norm
            statistics = np.ascontiguousarray(statistics, np.float32).view(np.uint8)
        return np.concatenate([payload, statistics]) if statistics.size else payload

    def _round_trip(self, payload: np.ndarray) -> tuple[np.ndarray, int]:
        """Commit ``payload``; the reply (a view of the client's receive buffer) and θ̃'s
        update count."""
        reply = self.client.request(messages.COMMIT, payload=payload)
        self.stats.bytes_sent += payload.nbytes
        self.stats.bytes_received += reply.payload.nbytes
        return reply.payload, reply.aux

    def _take_reply(self, sent: np.ndarray, reply: np.ndarray, version: int) -> np.ndarray:
        """The replica the reply to a commit sent from ``sent`` gives (its parameters from the
        rule, its own statistics); it becomes the anchor."""
        params, statistics = split(sent, self.worker.params)
        anchor = np.empty(sent.size, np.float32)
        moved, kept = split(anchor, self.worker.params)
        moved[:] = self.algorithm.worker_receive(params, split(self.anchor, self.worker.params)[0],
                                                 split(reply, self.worker.params)[0])
        if self.stream is not None:      # continue from θ̃ as it will be with what is unsent
            self.stream.ahead(moved)
        kept[:] = statistics
        self.anchor = anchor
        self.stats.exchanges += 1
        self.version = version
        return self.anchor

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class OverlappedParameterServerExchange(ParameterServerExchange):
    """The parameter-server exchange with each round trip in flight during the next window.

    At a boundary the worker waits for the reply to its previous commit (sent from θₛ, anchor
    θ₀), takes where it would have been had the reply come at once, ρ = worker_receive(θₛ, θ₀,
    reply), keeps the progress it made meanwhile, θ ← ρ + (θ − θₛ), and sends its next commit,
    worker_send(θ, ρ), from a background thread while the next window computes. The other
    workers' commits that a window therefore did not see are counted in
    ``stats.missed_commits`` (the extra staleness: ``missed_commits / exchanges`` per commit).
    ``settle`` (each epoch end) waits for the commit in flight, so the centre holds every window.
    """

    def __init__(self, algorithm, worker: WorkerContext):
        super().__init__(algorithm, worker)
        self._pool: Optional[ThreadPoolExecutor] = None
        self._in_flight: Optional[Future] = None
        self._sent: Optional[np.ndarray] = None      # θₛ: the weights the commit was sent from

    def open(self) -> None:
        super().open()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="distkeras-commit")

    def after_window(self, theta: np.ndarray, steps: int) -> np.ndarray:
        return self.timed(self._send, theta)

    def settle(self, theta: np.ndarray) -> Optional[np.ndarray]:
        return self.timed(self._fold, theta) if self._in_flight is not None else None

    def _send(self, theta: np.ndarray) -> np.ndarray:
        if self._in_flight is not None:
            theta = self._fold(theta)
        payload = self._payload(theta)
        self._sent = np.array(theta, dtype=np.float32, copy=True)
        self._in_flight = self._pool.submit(self._round_trip, payload)
        return theta

    def _round_trip(self, payload: np.ndarray) -> tuple[np.ndarray, int]:
        reply, version = super()._round_trip(payload)
        return reply.copy(), version     # read later, after the client may have reused it

    def _fold(self, theta: np.ndarray) -> np.ndarray:
        future, self._in_flight = self._in_flight, None
        reply, version = future.result()
        if self.version is not None and version > self.version:
            self.stats.missed_commits += version - self.version - 1
        return self._take_reply(self._sent, reply, version) + (theta - self._sent)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)    # a commit in flight ends (or fails) first
            self._pool = None
        super().close()
