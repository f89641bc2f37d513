"""The parameter-server exchange: commit to θ̃ on the driver, fold the reply in.

Every λ local steps the worker sends ``algorithm.worker_send(θ, θ₀)`` and continues from
``algorithm.worker_receive(θ, θ₀, reply)``; θ₀ (the anchor) is the replica right after its last
exchange. The server side is ``distkeras.driver.parameter_server``.

Example::

    with ParameterServerExchange(algorithms.ADAG(), ctx) as exchange:
        theta = exchange.start(theta)                  # pulls θ̃
        theta = exchange.after_window(theta, steps=12) # commit Δ/λ, adopt θ̃
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from distkeras import messages
from distkeras.exchange.base import Exchange, WorkerContext
from distkeras.transport import Client, pinned_tls


class ParameterServerExchange(Exchange):
    model = "centre"
    needs_parameter_server = True

    def __init__(self, algorithm, worker: WorkerContext):
        super().__init__(algorithm, worker)
        self.client: Optional[Client] = None
        self.anchor: Optional[np.ndarray] = None

    def open(self) -> None:
        host, port = self.worker.parameter_server
        self.client = Client(host, port, self.worker.secret, self.worker.worker,
                             connect_timeout=self.worker.connect_timeout,
                             ssl_context=pinned_tls(self.worker.tls_cert))

    def start(self, theta: np.ndarray) -> np.ndarray:
        self.anchor = self.client.request(messages.PULL).payload.copy()
        return self.anchor

    def after_window(self, theta: np.ndarray, steps: int) -> np.ndarray:
        return self.timed(self._commit, theta)

    def _commit(self, theta: np.ndarray) -> np.ndarray:
        payload = self.algorithm.worker_send(theta, self.anchor)
        reply = self.client.request(messages.COMMIT, payload=payload)
        self.anchor = np.ascontiguousarray(
            self.algorithm.worker_receive(theta, self.anchor, reply.payload),
            dtype=np.float32).copy()
        self.stats.exchanges += 1
        self.stats.bytes_sent += payload.nbytes
        self.stats.bytes_received += reply.payload.nbytes
        return self.anchor

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
