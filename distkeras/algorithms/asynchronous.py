"""The asynchronous parameter-server rules: DOWNPOUR, Hogwild, AGN, ADAG, DynSGD, AEASGD/EAMSGD.

Each worker commits every λ local steps and immediately gets its reply (commit and pull in one
round trip); no worker waits for another.
"""
from __future__ import annotations

import numpy as np

from distkeras.algorithms.base import Algorithm, WorkerRecord


class DOWNPOUR(Algorithm):
    """Dean et al. 2012. Worker: send Δ = θ − θ₀, adopt θ̃. Server: θ̃ ← θ̃ + Δ."""

    name = "downpour"
    default_window = 5

    def server_commit(self, centre, payload, worker, version):
        centre += payload
        return centre


class Hogwild(DOWNPOUR):
    """DOWNPOUR without the server lock: commits may interleave (Recht et al. 2011)."""

    name = "hogwild"
    lock = False


class AGN(DOWNPOUR):
    """Accumulated gradient normalisation (Hermans 2017). Worker: send Δ/λ. Server: θ̃ ← θ̃ + Δ/λ."""

    name = "agn"
    default_window = 12

    def worker_send(self, theta, anchor):
        return (theta - anchor) / np.float32(self.communication_window)


class ADAG(AGN):
    """Asynchronous distributed adaptive gradients (Hermans 2017).

    Server: θ̃ ← θ̃ + (Δ/λ) ⊙ 1 / (1 + (θ̃ − θ̃_pulled)² / η), per weight: a weight that moved a lot
    since this worker pulled (a stale commit) gets a proportionally smaller step.
    """

    name = "adag"
    keeps_pulled_centre = True

    def server_commit(self, centre, payload, worker: WorkerRecord, version):
        drift = centre - worker.pulled_centre
        np.square(drift, out=drift)
        drift *= np.float32(1.0 / self.learning_rate)
        drift += np.float32(1.0)
        centre += payload / drift
        return centre


class DynSGD(DOWNPOUR):
    """Jiang et al. 2017. Server: θ̃ ← θ̃ + Δ/(τ+1), τ = server updates since this worker pulled."""

    name = "dynsgd"

    def server_commit(self, centre, payload, worker, version):
        staleness = version - worker.pulled_version
        centre += payload * np.float32(1.0 / (staleness + 1))
        return centre


class AEASGD(Algorithm):
    """Asynchronous elastic averaging (Zhang et al. 2015), α = ρη.

    Worker: send θ; the server answers the elastic difference E = α(θ − θ̃) computed against the
    freshest θ̃ and moves θ̃ ← θ̃ + E; the worker moves θ ← θ − E.
    """

    name = "aeasgd"
    default_window = 32

    def __init__(self, communication_window=None, learning_rate=0.1, num_workers=1,
                 rho: float = 5.0, **params):
        super().__init__(communication_window, learning_rate, num_workers, **params)
        self.rho = float(rho)
        self.alpha = np.float32(self.rho * self.learning_rate)

    def worker_send(self, theta, anchor):
        return theta

    def worker_receive(self, theta, anchor, reply):
        return theta - reply

    def server_commit(self, centre, payload, worker, version):
        elastic = (payload - centre) * self.alpha
        centre += elastic
        return elastic


class EAMSGD(AEASGD):
    """AEASGD with Nesterov momentum in the workers' optimizer (the trainer sets it up)."""

    name = "eamsgd"
