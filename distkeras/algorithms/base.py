"""What every data-parallel algorithm is: a worker rule and a server rule over flat float32 vectors.

θ̃ is the centre variable held by the parameter server, θ a worker's replica, θ₀ ("anchor") the
replica's value right after its last exchange, λ the communication window (local steps between
exchanges). Transport, data feeding and the training loop are shared (``distkeras.executor`` and
``distkeras.driver``); an algorithm only says what a worker sends, how it folds the reply back
into its replica, and how the server folds a commit into θ̃.

Asynchronous algorithms implement :meth:`Algorithm.server_commit` (one worker at a time);
synchronous ones set ``synchronous = True`` and implement :meth:`Algorithm.server_round`
(called once all workers of a round have sent).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class WorkerRecord:
    """What the server remembers of one worker between its commits."""

    pulled_version: int = 0               # server update count at the worker's last exchange
    pulled_centre: np.ndarray | None = None  # θ̃ at the worker's last exchange (ADAG only)
    extra: dict = field(default_factory=dict)


class Algorithm:
    """Base class: override the worker rule and the server rule.

    ``communication_window`` is λ; ``None`` means "once per epoch". ``lock`` False lets the server
    apply commits concurrently (Hogwild).
    """

    name = "algorithm"
    synchronous = False
    lock = True
    keeps_pulled_centre = False   # the server keeps a copy of θ̃ per worker (memory: workers × model)
    independent = False           # workers never exchange; each returns its own model (ensembles)
    default_window: int | None = 5

    def __init__(self, communication_window: int | None = None, learning_rate: float = 0.01,
                 num_workers: int = 1, **params):
        self.communication_window = (self.default_window if communication_window is None
                                     else communication_window)
        self.learning_rate = float(learning_rate)
        self.num_workers = int(num_workers)
        self.params = params

    # -- executor side --------------------------------------------------------------------------
    def worker_send(self, theta: np.ndarray, anchor: np.ndarray) -> np.ndarray:
        """The payload a worker commits after λ local steps (default: its update Δ = θ − θ₀)."""
        return theta - anchor

    def worker_receive(self, theta: np.ndarray, anchor: np.ndarray, reply: np.ndarray) -> np.ndarray:
        """The worker's new replica given the server's reply (default: adopt θ̃)."""
        return reply

    # -- driver side ----------------------------------------------------------------------------
    def server_commit(self, centre: np.ndarray, payload: np.ndarray, worker: WorkerRecord,
                      version: int) -> np.ndarray:
        """Fold one asynchronous commit into ``centre`` in place; return the reply vector."""
        raise NotImplementedError

    def server_round(self, centre: np.ndarray, payloads: list[np.ndarray]) -> np.ndarray:
        """Fold a full synchronous round into ``centre`` in place; return the reply (same for all)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(communication_window={self.communication_window})"
