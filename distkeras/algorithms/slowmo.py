"""SlowMo (Wang et al. 2019): slow momentum on top of a base algorithm.

The base algorithm (LocalSGD, D-PSGD, AD-PSGD, SwarmSGD) runs as usual; every τ base steps,
with γ the base optimizer's learning rate, α the slow learning rate and β the slow momentum::

    (average=True)  x ← (1/n) Σᵢ xᵢ                      (exact average, ring all-reduce)
                    u ← β u + (x_start − x) / γ
                    x ← x_start − α γ u ;  x_start ← x

With ``average=True`` the replicas are identical after the average, so every worker holds the
same buffer u; ``average=False`` needs no global communication and keeps a buffer per worker.
β = 0, α = 1 over LocalSGD is LocalSGD exactly (the test checks it).
"""
from __future__ import annotations

import numpy as np


from distkeras.algorithms import registry
from distkeras.algorithms.base import EXCHANGES_PER_EPOCH, Algorithm
from distkeras.algorithms.registry import TrainerSpec, register
from distkeras.exchange import SlowMoExchange
from distkeras.exchange.ring import replica_refusal


@register
class SlowMo(Algorithm):
    """SlowMo over ``base`` (a trainer key: ``localsgd``, ``dpsgd``, ``adpsgd``, ``swarmsgd``,
    any registered base): every ``slow_period`` τ=12 steps u ← βu + (x_start − x)/γ,
    x ← x_start − αγu (β=``slow_momentum`` 0.7, α=``slow_learning_rate`` 1)."""

    name = "slowmo"
    default_window = None          # its base's
    exchange_type = SlowMoExchange
    windowed = False               # its period is slow_period; its base's window is the base's
    trainers = (TrainerSpec("SlowMo", "slowmo", """SlowMo (Wang et al. 2019) on a ``base``
    (``localsgd``, ``dpsgd``, ``adpsgd``, ``swarmsgd``): every ``slow_period`` τ=12 steps,
    u ← βu + (x_start − x)/γ and x ← x_start − αγu, after an exact average (``average=True``)
    or without (``False``).

    Example::

        SlowMo(model, base="adpsgd", slow_momentum=0.7, slow_period=12, average=False).fit(df)
    """),)

    def __init__(self, communication_window=None, learning_rate=0.01, num_workers=1,
                 base: str = "localsgd", slow_momentum: float = 0.7, slow_period: int = 12,
                 slow_learning_rate: float = 1.0, average: bool = True, **base_params):
        bases = registry.slowmo_bases()
        if base not in bases:
            raise ValueError(f"SlowMo base {base!r}: use one of {', '.join(bases)}")
        rule, spec = bases[base]
        base_params = {**spec.slowmo_base, **base_params}
        if communication_window is None and rule.default_window is None:
            communication_window = slow_period    # LocalSGD's average: one per slow step
        self.base = rule(communication_window=communication_window,
                         learning_rate=learning_rate, num_workers=num_workers, **base_params)
        super().__init__(self.base.communication_window, learning_rate, num_workers)
        self.base_name = base
        self.slow_momentum = np.float32(slow_momentum)
        self.slow_period = int(slow_period)
        self.slow_learning_rate = np.float32(slow_learning_rate)
        self.average = bool(average)
        self.synchronous = self.base.synchronous or self.average
        if self.slow_period < 1:
            raise ValueError(f"slow_period must be positive, got {slow_period}")

    @classmethod
    def extra_parameters(cls) -> dict:
        """The bases' own parameters (``topology``, ``local_steps``, ``geometric``, ``via``):
        SlowMo passes them on to its base."""
        found: dict = {}
        for rule, _ in registry.slowmo_bases().values():
            for name, param in registry.parameters(rule).items():
                found.setdefault(name, param)
        return found

    def fit_to(self, steps: int, unset: set[str]) -> dict[str, tuple]:
        """A slow period the data fits (at least 4 slow steps per epoch, as the window of any
        rule), and the base's window with it."""
        changed = {}
        if "slow_period" in unset and self.slow_period * EXCHANGES_PER_EPOCH > steps:
            was, self.slow_period = self.slow_period, max(1, steps // EXCHANGES_PER_EPOCH)
            changed["slow_period"] = (was, self.slow_period)
            if self.base.communication_window == was and "communication_window" in unset:
                self.base.communication_window = self.communication_window = self.slow_period
        return changed

    def slow_step(self, x_start: np.ndarray, x: np.ndarray, momentum: np.ndarray) -> np.ndarray:
        """u ← βu + (x_start − x)/γ; return x_start − αγu (``momentum`` u updated in place)."""
        gamma = np.float32(self.learning_rate)
        momentum *= self.slow_momentum
        momentum += (x_start - x) / gamma
        return x_start - (self.slow_learning_rate * gamma) * momentum

    def exchange(self, worker):
        return SlowMoExchange(self, worker, self.base.exchange(worker))

    def compression_refusal(self, compressor):
        if compressor is not None and self.average and not compressor.dense:
            return replica_refusal(compressor)        # its average is of whole replicas
        return self.base.compression_refusal(compressor)

    def window_length(self, rng, steps):
        return self.base.window_length(rng, steps)

    def local_steps(self, replica, exchange, window, start):
        return self.base.local_steps(replica, exchange, window, start)
