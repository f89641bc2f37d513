"""The synchronous rules: model averaging / LocalSGD and EASGD. Every worker sends, the server
waits for the whole round, and every worker gets the same reply."""
from __future__ import annotations

import numpy as np

from distkeras.algorithms.base import Algorithm
from distkeras.algorithms.registry import TrainerSpec, register
from distkeras.compression import Mirror
from distkeras.exchange import Exchange, ParameterServerExchange, RingExchange


@register
class Averaging(Algorithm):
    """Model averaging: θ̃ ← mean θᵢ, every worker adopts θ̃.

    ``communication_window=None`` averages once per epoch; an integer λ averages every λ local
    steps, which is LocalSGD (Lin et al. 2018). ``via="server"`` averages on the driver's
    parameter server, ``via="ring"`` with a ring all-reduce between the workers (no driver on
    the data path; the same mean).
    """

    name = "averaging"
    commit_stream = Mirror           # it commits its replica θ
    synchronous = True
    default_window = None
    trainers = (
        TrainerSpec("SingleTrainer", "single", "One worker on all the data: the baseline every "
                    "distributed trainer is measured against.", fixed={"num_workers": 1}),
        TrainerSpec("AveragingTrainer", "averaging", "Model averaging once per epoch, or every λ "
                    "steps when ``communication_window`` is set."),
        TrainerSpec("LocalSGD", "localsgd", "LocalSGD (Lin et al. 2018): average the replicas "
                    "every λ local steps (default 12).", defaults={"communication_window": 12},
                    slowmo_base={"via": "ring"}),
    )

    def __init__(self, communication_window=None, learning_rate=0.01, num_workers=1,
                 via: str = "server", **params):
        super().__init__(communication_window, learning_rate, num_workers, **params)
        if via not in ("server", "ring"):
            raise ValueError(f"via={via!r}: use 'server' (parameter server) or 'ring'")
        self.via = via
        self.exchange_type = RingExchange if via == "ring" else ParameterServerExchange

    def worker_send(self, theta, anchor):
        return theta

    def server_round(self, centre, payloads):
        total = np.zeros(centre.shape, np.float64)     # float64: a mean of floats never overflows
        for payload in payloads:
            total += payload
        np.divide(total, len(payloads), out=centre, casting="unsafe")
        return centre


@register
class EASGD(Algorithm):
    """Synchronous elastic averaging (Zhang et al. 2015).

    Server: θ̃ ← θ̃ + α Σᵢ(θᵢ − θ̃), reply the old θ̃; worker: θᵢ ← θᵢ − α(θᵢ − θ̃_old).
    α defaults to β/p with β = 0.9 (the paper's choice), p the number of workers.
    """

    name = "easgd"
    commit_stream = Mirror           # it commits its replica θ
    learning_rate_scaling = "elastic"     # θ̃ is pulled along: n workers and θ̃ move at n/(n+1)
    synchronous = True
    default_window = 12
    trainers = (TrainerSpec("EASGD", "easgd", "Synchronous elastic averaging SGD (Zhang et al. "
                            "2015), λ=12; ``alpha`` optional (0.9/n)."),)

    def __init__(self, communication_window=None, learning_rate=0.01, num_workers=1,
                 alpha: float | None = None, **params):
        super().__init__(communication_window, learning_rate, num_workers, **params)
        self.alpha = np.float32(0.9 / self.num_workers if alpha is None else alpha)

    def worker_send(self, theta, anchor):
        return theta

    def worker_receive(self, theta, anchor, reply):
        return theta - self.alpha * (theta - reply)

    def server_round(self, centre, payloads):
        old = centre.copy()
        centre += self.alpha * (np.sum(payloads, axis=0) - len(payloads) * old)
        return old


@register
class Ensemble(Algorithm):
    """No communication while training: every worker returns its own model."""

    name = "ensemble"
    default_window = None
    windowed = False
    exchange_type = Exchange      # none
    trainers = (TrainerSpec("EnsembleTrainer", "ensemble", "``num_workers`` independent models, "
                            "one per partition; predictions are averaged."),)

    def worker_send(self, theta, anchor):
        return theta

    def worker_receive(self, theta, anchor, reply):
        return theta
