"""What every data-parallel algorithm is: a worker rule and a server rule over flat float32 vectors.

θ̃ is the centre variable held by the parameter server, θ a worker's replica, θ₀ ("anchor") the
replica's value right after its last exchange, λ the communication window (local steps between
exchanges). Transport, data feeding and the training loop are shared (``distkeras.executor`` and
``distkeras.driver``); an algorithm only says what a worker sends, how it folds the reply back
into its replica, and how the server folds a commit into θ̃.

Asynchronous algorithms implement :meth:`Algorithm.server_commit` (one worker at a time);
synchronous ones set ``synchronous = True`` and implement :meth:`Algorithm.server_round`
(called once all workers of a round have sent).

How the workers communicate is the algorithm's **exchange** (``distkeras.exchange``): the
parameter server by default; a ring all-reduce, neighbour or pairwise gossip for the
decentralised algorithms (``allreduce``, ``decentralised``, ``slowmo``); nothing for ensembles.
An algorithm object travels to the executors in the Spark task closure, so a rule subclassed in
user code trains like the built-in ones::

    class HalfStep(algorithms.DOWNPOUR):
        # θ̃ ← θ̃ + Δ/2
        name = "halfstep"
        def server_commit(self, centre, payload, worker, version):
            centre += payload * np.float32(0.5)
            return centre

    dk.trainers.Trainer(model, algorithm=HalfStep(), num_workers=2).fit(df)
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from distkeras.compression import ErrorFeedback
from distkeras.exchange import (Exchange, OverlappedParameterServerExchange,
                                ParameterServerExchange)
from distkeras.exchange.ring import replica_refusal

#: fewer exchanges per worker and epoch and the workers hardly share what they learn
EXCHANGES_PER_EPOCH = 4


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
    # how the workers' learning rate grows with their number n by default (the trainers'
    # learning_rate_scaling="auto"): "linear" where the run's model moves by the *mean* of the
    # workers' progress (averaging, elastic and all-reduce rules, gossip): each of n workers
    # takes 1/n of the steps per epoch, so η·n keeps an epoch's progress that of one worker
    # on all the data (Goyal et al. 2017; Horovod's examples scale Adam's rate the same way).
    # "elastic" (η·(n+1)) where the centre variable is one more member of an elastic system
    # (EASGD, AEASGD): the n workers and the centre move together at n/(n+1) of a worker's pace.
    # None where commits add up (DOWNPOUR, Hogwild, DynSGD): they already move that far.
    learning_rate_scaling: str | None = "linear"
    windowed = True               # λ is a setting to tune (AR-SGD: every step; gossip: λ = 1)
    trainers: tuple = ()          # the trainers made from this rule (``registry.TrainerSpec``)
    synchronous = False
    lock = True
    keeps_pulled_centre = False   # the server keeps a copy of θ̃ per worker (memory: workers × model)
    default_window: int | None = 5
    exchange_type: type[Exchange] = ParameterServerExchange   # how its workers communicate
    # what its parameter-server commits are, for compression: updates (error feedback) or, for a
    # rule that sends its replica θ, points (Mirror: both ends keep the driver's view of θ)
    commit_stream: type = ErrorFeedback

    def __new__(cls, *args, **kwargs):
        rule = super().__new__(cls)
        rule._arguments = (args, kwargs)     # what get_config() returns
        return rule

    def __init__(self, communication_window: int | None = None, learning_rate: float = 0.01,
                 num_workers: int = 1, **params):
        self.communication_window = (self.default_window if communication_window is None
                                     else communication_window)
        self.learning_rate = float(learning_rate)
        self.num_workers = int(num_workers)
        self.params = params

    def fit_to(self, steps: int, unset: set[str]) -> dict[str, tuple]:
        """Fit the settings the user left at their defaults (``unset``) to ``steps`` steps per
        epoch: a window that would give a worker fewer than :data:`EXCHANGES_PER_EPOCH`
        exchanges per epoch (small data) shrinks to ``steps // EXCHANGES_PER_EPOCH``. Returns
        ``{setting: (was, now)}`` of what changed."""
        window = self.communication_window
        if (not self.windowed or "communication_window" not in unset or window is None
                or window * EXCHANGES_PER_EPOCH <= steps):
            return {}
        self.communication_window = max(1, steps // EXCHANGES_PER_EPOCH)
        return {"communication_window": (window, self.communication_window)}

    # -- executor side --------------------------------------------------------------------------
    def exchange(self, worker) -> Exchange:
        """This worker's exchange (``worker`` is a :class:`distkeras.exchange.WorkerContext`);
        an asynchronous parameter-server rule's round trips overlap its windows when
        ``worker.overlap``."""
        if worker.overlap and self.can_overlap:
            return OverlappedParameterServerExchange(self, worker)
        return self.exchange_type(self, worker)

    def compression_refusal(self, compressor) -> str | None:
        """Why its workers' exchange cannot take ``compressor`` (None: it can); asked on the
        driver before any task starts."""
        if (compressor is not None and not compressor.dense and self.commit_stream is not
                ErrorFeedback and self.exchange_type.needs_parameter_server):
            return replica_refusal(compressor)       # it commits whole replicas
        return self.exchange_type.refusal(compressor)

    def model_refusal(self, model) -> str | None:
        """Why this rule cannot train ``model`` as ``model.fit`` would (None: it can); asked
        on the driver before the data is read. Every windowed rule runs the model's own
        ``train_step``."""
        return None

    @property
    def can_overlap(self) -> bool:
        """Whether its commits can be in flight while the next window computes."""
        return self.exchange_type.can_overlap and not self.synchronous

    def window_length(self, rng: np.random.Generator, steps: int) -> int:
        """Local steps before the next exchange (λ; an epoch when λ is None)."""
        return self.communication_window or steps

    def local_steps(self, replica, exchange: Exchange, window, start: np.ndarray | None
                    ) -> np.ndarray:
        """Run one window of ``len(window)`` local steps on ``replica`` from ``start`` (None:
        where the last window ended); return the weights after it. ``window`` is a
        :class:`~distkeras.feed.Window` of mini-batches. Default: one compiled call."""
        return replica.train(window, start=start)

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

    def server_state(self) -> dict[str, np.ndarray]:
        """Arrays the server rule keeps between commits beyond θ̃ (e.g. a momentum buffer);
        written with every checkpoint and given back by :meth:`restore_server_state` when a run
        resumes after the driver died. The built-in rules keep none."""
        return {}

    def restore_server_state(self, state: dict[str, np.ndarray]) -> None:
        """Take back what :meth:`server_state` returned (a resumed run)."""

    def get_config(self) -> dict:
        """The arguments this rule was made with, as Keras layers give theirs:
        ``type(rule)(**rule.get_config())`` makes the same rule (λ, η and the workers as they
        are now). Saving a trainer writes its rule this way, never as a pickle."""
        args, kwargs = getattr(self, "_arguments", ((), {}))
        signature = inspect.signature(type(self).__init__)
        config = dict(signature.bind(self, *args, **kwargs).arguments)
        config.pop("self", None)
        for name, parameter in signature.parameters.items():
            if parameter.kind == parameter.VAR_KEYWORD:
                config.update(config.pop(name, {}))
        config.update(communication_window=self.communication_window,
                      learning_rate=self.learning_rate, num_workers=self.num_workers)
        return config

    def __repr__(self) -> str:
        return f"{type(self).__name__}(communication_window={self.communication_window})"
