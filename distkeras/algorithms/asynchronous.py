"""The asynchronous parameter-server rules: DOWNPOUR, Hogwild, AGN, ADAG, DynSGD, AEASGD/EAMSGD.

Each worker commits every λ local steps and immediately gets its reply (commit and pull in one
round trip); no worker waits for another.
"""
from __future__ import annotations

import numpy as np

from distkeras.algorithms.base import Algorithm, WorkerRecord
from distkeras.algorithms.registry import TrainerSpec, register
from distkeras.compression import Mirror

SGD_NESTEROV = {"class_name": "SGD", "config": {"learning_rate": 0.05, "momentum": 0.9,
                                                 "nesterov": True}}


@register
class DOWNPOUR(Algorithm):
    """Dean et al. 2012. Worker: send Δ = θ − θ₀, adopt θ̃. Server: θ̃ ← θ̃ + Δ."""

    name = "downpour"
    trainers = (TrainerSpec("DOWNPOUR", "downpour", """Asynchronous DOWNPOUR SGD (Dean et al.
    2012): commit Δ every λ=5 steps, pull θ̃."""),)
    default_window = 5
    learning_rate_scaling = None      # θ̃ adds every worker's Δ: an epoch moves it as far as one

    def server_commit(self, centre, payload, worker, version):
        centre += payload
        return centre


@register
class Hogwild(DOWNPOUR):
    """DOWNPOUR without the server lock: commits may interleave (Recht et al. 2011)."""

    name = "hogwild"
    trainers = (TrainerSpec("Hogwild", "hogwild", "DOWNPOUR with lock-free commits on the "
                            "server."),)
    lock = False


@register
class AGN(DOWNPOUR):
    """Accumulated gradient normalisation (Hermans 2017). Worker: send Δ/m. Server: θ̃ ← θ̃ + Δ/m.

    m = λ in the paper, where there are at least as many workers as local steps: θ̃ then takes
    n commits of one "average step" each per window. With fewer workers (n < λ) that would
    move θ̃ λ/n times slower than one worker, so m = min(λ, n): θ̃ moves by the mean of the
    workers' updates, the averaging rules' pace (and their learning-rate scaling).
    """

    name = "agn"
    default_window = 12
    learning_rate_scaling = "linear"
    trainers = (TrainerSpec("AGN", "agn", """Accumulated gradient normalisation (Hermans 2017):
    commit Δ/m, m = min(λ, n), λ=12 by default."""),)

    def normaliser(self) -> np.float32:
        return np.float32(max(1, min(self.communication_window, self.num_workers)))

    def worker_send(self, theta, anchor):
        return (theta - anchor) / self.normaliser()


@register
class ADAG(AGN):
    """Asynchronous distributed adaptive gradients (Hermans 2017).

    Server: θ̃ ← θ̃ + (Δ/m) ⊙ 1 / (1 + (θ̃ − θ̃_pulled)² / η), per weight (m as AGN's): a weight that
    moved a lot since this worker pulled (a stale commit) gets a proportionally smaller step.
    """

    name = "adag"
    keeps_pulled_centre = True
    trainers = (TrainerSpec("ADAG", "adag", """Asynchronous distributed adaptive gradients
    (Hermans 2017): AGN with per-weight staleness-scaled server updates; the recommended
    asynchronous default.

    Example::

        ADAG(model, loss="categorical_crossentropy", num_workers=4, batch_size=128,
             communication_window=12, epochs=5).fit(df)
    """),)

    def server_commit(self, centre, payload, worker: WorkerRecord, version):
        drift = centre - worker.pulled_centre
        np.square(drift, out=drift)
        drift *= np.float32(1.0 / self.learning_rate)
        drift += np.float32(1.0)
        centre += payload / drift
        return centre


@register
class DynSGD(DOWNPOUR):
    """Jiang et al. 2017. Server: θ̃ ← θ̃ + Δ/(τ+1), τ = server updates since this worker pulled."""

    name = "dynsgd"
    trainers = (TrainerSpec("DynSGD", "dynsgd", "Staleness-aware DynSGD (Jiang et al. 2017): "
                            "commits scaled by 1/(τ+1)."),)

    def server_commit(self, centre, payload, worker, version):
        staleness = version - worker.pulled_version
        centre += payload * np.float32(1.0 / (staleness + 1))
        return centre


@register
class AEASGD(Algorithm):
    """Asynchronous elastic averaging (Zhang et al. 2015).

    Worker: send θ; the server answers the elastic difference E = α(θ − θ̃) computed against the
    freshest θ̃ and moves θ̃ ← θ̃ + E; the worker moves θ ← θ − E.

    α = β/n with β = 0.9 (the paper's choice of the moving rate β = nα), whatever the workers'
    optimizer; ``alpha`` sets it, or ``rho`` as α = ρη (the paper's parametrisation for plain
    SGD: with Adam's η = 1e-3 it gives an elastic force too weak to move θ̃).
    """

    name = "aeasgd"
    commit_stream = Mirror           # it commits its replica θ
    learning_rate_scaling = "elastic"     # θ̃ is pulled along: n workers and θ̃ move at n/(n+1)
    default_window = 32
    trainers = (TrainerSpec("AEASGD", "aeasgd", """Asynchronous EASGD, λ=32, elastic force
    α = 0.9/n whatever the workers' optimizer (``alpha=``, or ``rho=`` for the paper's
    α = ρη)."""),)

    def __init__(self, communication_window=None, learning_rate=0.1, num_workers=1,
                 alpha: float | None = None, rho: float | None = None, **params):
        super().__init__(communication_window, learning_rate, num_workers, **params)
        if alpha is not None and rho is not None:
            raise ValueError("give alpha or rho (α = ρη), not both")
        self.rho = None if rho is None else float(rho)
        self.alpha = np.float32(alpha if alpha is not None else
                                self.rho * self.learning_rate if self.rho is not None
                                else 0.9 / max(1, self.num_workers))

    def worker_send(self, theta, anchor):
        return theta

    def worker_receive(self, theta, anchor, reply):
        return theta - reply

    def server_commit(self, centre, payload, worker, version):
        elastic = (payload - centre) * self.alpha
        centre += elastic
        return elastic


@register
class EAMSGD(AEASGD):
    """AEASGD with Nesterov momentum in the workers' optimizer (the trainer sets it up)."""

    name = "eamsgd"
    trainers = (TrainerSpec("EAMSGD", "eamsgd", "AEASGD whose workers use SGD with Nesterov "
                            "momentum 0.9 (η=0.05) unless the model was compiled with an "
                            "optimizer.", default_optimizer=SGD_NESTEROV),)
