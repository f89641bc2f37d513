"""How long a simulated worker computes, and how long the parameter server serves a commit.

A window of k local steps takes (``call_seconds`` + k · ``step_seconds``) · s · max(1, n/c): the
compiled call's fixed cost (dispatch, loading the weights in and out: what a window of one step
pays on top of a step, and what makes λ = 1 costly for small models), k steps, s a worker's
straggler factor for that window, drawn per (seed, worker) from ``stragglers``, and n/c the
time-sharing of n workers on ``cores`` c (None: a core each, a cluster; a small machine: its
cores). A gradient step outside a window (AR-SGD: a gradient call, then an apply call) takes
``gradient_seconds`` (None: a one-step window's time). Stragglers:

- ``none``: s = 1;
- ``lognormal:σ``: s = exp(σ·z − σ²/2), z ~ N(0, 1) (mean 1; a shared machine's jitter);
- ``slow:F:P``: a fraction P of the workers (the first ⌈P·n⌉) always run F times slower.

``step_seconds``, ``call_seconds``, ``gradient_seconds`` and ``service_seconds`` are measured on
this machine for the run's model and rule when not given (:func:`measure_window_seconds`,
:func:`measure_service_seconds`); give them to simulate other hardware (a GPU's step time) or to
replay a simulation exactly.

Example::

    TimeModel(step_seconds=2e-3, stragglers="lognormal:0.2").window(worker=3, steps=12)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TimeModel:
    step_seconds: float
    service_seconds: float = 0.0
    call_seconds: float = 0.0
    gradient_seconds: float | None = None
    stragglers: str = "none"
    seed: int = 0
    num_workers: int = 1
    cores: int | None = None
    _rngs: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        kind, _, rest = str(self.stragglers or "none").partition(":")
        self._kind = kind.lower()
        try:
            args = [float(a) for a in rest.split(":") if a]
        except ValueError:
            args = None
        if (self._kind not in ("none", "lognormal", "slow") or args is None
                or (self._kind == "lognormal" and len(args) != 1)
                or (self._kind == "slow" and len(args) != 2)):
            raise ValueError(f"stragglers={self.stragglers!r}: use 'none', 'lognormal:SIGMA' "
                             "(e.g. 'lognormal:0.2') or 'slow:FACTOR:FRACTION' (e.g. "
                             "'slow:2:0.1')")
        self._args = args
        if not (self.step_seconds >= 0 and math.isfinite(self.step_seconds)):
            raise ValueError(f"step_seconds={self.step_seconds}: a time per step in seconds")

    def factor(self, worker: int) -> float:
        """The straggler factor of ``worker``'s next window."""
        if self._kind == "none":
            return 1.0
        if self._kind == "slow":
            slow, fraction = self._args
            return slow if worker < math.ceil(fraction * self.num_workers) else 1.0
        rng = self._rngs.get(worker)
        if rng is None:
            rng = self._rngs[worker] = np.random.default_rng([self.seed, worker, 4099])
        sigma = self._args[0]
        return float(math.exp(sigma * rng.standard_normal() - sigma * sigma / 2))

    def window(self, worker: int, steps: int) -> float:
        """Seconds for ``worker``'s next window of ``steps`` local steps."""
        return (self.call_seconds + steps * self.step_seconds) * self._slowdown(worker)

    def gradient(self, worker: int) -> float:
        """Seconds for one gradient step outside a window (a gradient and an apply call)."""
        seconds = (self.call_seconds + self.step_seconds if self.gradient_seconds is None
                   else self.gradient_seconds)
        return seconds * self._slowdown(worker)

    def _slowdown(self, worker: int) -> float:
        shared = max(1.0, self.num_workers / self.cores) if self.cores else 1.0
        return self.factor(worker) * shared


def best_seconds(call, repeats: int = 5) -> float:
    """The best of ``repeats`` timed calls of ``call()``, after one (to compile)."""
    call()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_window_seconds(train, steps: int = 8) -> tuple[float, float]:
    """(seconds per call, seconds per step) of compiled windows, from ``train(k)`` timed on
    windows of 1 and ``steps`` steps: a window of k steps costs call + k · step."""
    one, many = best_seconds(lambda: train(1)), best_seconds(lambda: train(steps))
    step = max(0.0, (many - one) / (steps - 1))
    return max(0.0, one - step), step


def measure_service_seconds(algorithm, size: int, params: int, repeats: int = 20) -> float:
    """Seconds the parameter server's rule takes for one commit (asynchronous: one
    ``server_commit``; synchronous: a round of 2 over the worker count), on a centre variable of
    ``size`` floats: the median of ``repeats``."""
    from distkeras.algorithms import WorkerRecord

    rng = np.random.default_rng(0)
    centre = rng.standard_normal(params).astype(np.float32)
    payload = (rng.standard_normal(params) * 1e-3).astype(np.float32)
    record = WorkerRecord(pulled_centre=centre.copy())
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        if algorithm.synchronous:
            algorithm.server_round(centre, [payload, payload])
        else:
            algorithm.server_commit(centre, payload, record, i)
        times.append(time.perf_counter() - t0)
    # the statistics ride along: a copy per commit
    return float(np.median(times)) * (size / max(1, params))
