"""Parameter spaces: distributions, validation, grid expansion and seeded sampling.

A space is a dict ``name -> spec``. A ``list`` is a set of options (grid axis, or a uniform
choice in random search); a distribution (``Uniform``, ``LogUniform``, ``IntUniform``,
``Choice``, or the dict form ``{"type": "loguniform", "low": 1e-4, "high": 1e-2}``) is sampled;
anything else is a constant. Tuples are values, so layer sizes are ``[(64,), (64, 32)]``.
Reserved keys configure training instead of the model: ``optimizer``, ``learning_rate``,
``batch_size``, ``epochs`` (and ``loss``).

Everything is checked on the driver before a single task is launched.

Example::

    space = {"units": [16, 64], "learning_rate": LogUniform(1e-4, 1e-2),
             "batch_size": Choice([32, 128]), "optimizer": "adam"}
    trials = sample(space, 10, seed=1)          # list of 10 parameter dicts
    grid({"units": [16, 64], "batch_size": [32, 64]})   # 4 dicts, every combination once
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

RESERVED = ("optimizer", "learning_rate", "batch_size", "epochs", "loss")
# names the results table uses for its own columns
TABLE_COLUMNS = ("trial", "status", "error", "score", "seconds", "rung")  # + "epochs" (== the key)


class SpaceError(ValueError):
    """The parameter space is invalid; raised before anything is launched."""


class Distribution:
    """Base of the sampled parameter specs."""

    def sample(self, rng: np.random.Generator) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def validate(self, name: str) -> None:
        pass


@dataclass(frozen=True)
class Uniform(Distribution):
    """A float uniform in ``[low, high]``."""

    low: float
    high: float

    def validate(self, name: str) -> None:
        _check_bounds(name, self, self.low, self.high)

    def sample(self, rng):
        return float(rng.uniform(self.low, self.high))


@dataclass(frozen=True)
class LogUniform(Distribution):
    """A float whose logarithm is uniform in ``[log low, log high]`` (learning rates)."""

    low: float
    high: float

    def validate(self, name: str) -> None:
        _check_bounds(name, self, self.low, self.high)
        if self.low <= 0:
            raise SpaceError(f"{name!r}: LogUniform needs low > 0, got low={self.low}")

    def sample(self, rng):
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))


@dataclass(frozen=True)
class IntUniform(Distribution):
    """An integer uniform in ``[low, high]`` (both included)."""

    low: int
    high: int

    def validate(self, name: str) -> None:
        _check_bounds(name, self, self.low, self.high)
        if int(self.low) != self.low or int(self.high) != self.high:
            raise SpaceError(f"{name!r}: IntUniform bounds must be integers, got {self}")

    def sample(self, rng):
        return int(rng.integers(int(self.low), int(self.high) + 1))


@dataclass(frozen=True)
class Choice(Distribution):
    """One of ``options``, uniformly."""

    options: Sequence[Any]

    def validate(self, name: str) -> None:
        if isinstance(self.options, (str, bytes)) or not hasattr(self.options, "__len__"):
            raise SpaceError(f"{name!r}: Choice needs a list of options, got {self.options!r}")
        if len(self.options) == 0:
            raise SpaceError(f"{name!r}: Choice has no options")

    def sample(self, rng):
        return self.options[int(rng.integers(len(self.options)))]


_BY_NAME = {"uniform": Uniform, "loguniform": LogUniform, "log_uniform": LogUniform,
            "intuniform": IntUniform, "int_uniform": IntUniform, "randint": IntUniform,
            "choice": Choice}


def _check_bounds(name, dist, low, high) -> None:
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, (int, float, np.number)) \
                or not math.isfinite(bound):
            raise SpaceError(f"{name!r}: {type(dist).__name__} bounds must be finite numbers, "
                             f"got {dist}")
    if low > high:
        raise SpaceError(f"{name!r}: {type(dist).__name__} has low={low} > high={high}")


def _from_dict(name: str, spec: dict) -> Distribution:
    kind = str(spec.get("type", spec.get("distribution"))).lower()
    if kind not in _BY_NAME:
        raise SpaceError(f"{name!r}: unknown distribution {kind!r}; use one of "
                         f"{sorted(set(_BY_NAME))}")
    args = {k: v for k, v in spec.items() if k not in ("type", "distribution")}
    try:
        return _BY_NAME[kind](**args)
    except TypeError as exc:
        raise SpaceError(f"{name!r}: bad arguments for {kind}: {exc}") from None


def normalise(space: dict) -> dict:
    """Validated copy of ``space``: dict specs become distributions, lists stay lists.

    Raises :class:`SpaceError` for empty lists, unknown distributions, low > high, reserved
    keys with a bad type or value, and non-string names.
    """
    if not isinstance(space, dict) or not space:
        raise SpaceError(f"the parameter space must be a non-empty dict, got {space!r}")
    out = {}
    for name, spec in space.items():
        if not isinstance(name, str) or not name:
            raise SpaceError(f"parameter names must be non-empty strings, got {name!r}")
        if name in TABLE_COLUMNS:
            raise SpaceError(f"{name!r} is a column of the results table; rename the parameter")
        if isinstance(spec, dict) and ("type" in spec or "distribution" in spec):
            spec = _from_dict(name, spec)
        elif not isinstance(spec, (Distribution, list)) and (
                hasattr(spec, "rvs") or (hasattr(spec, "sample") and not isinstance(spec, type))):
            raise SpaceError(f"{name!r}: unknown distribution {type(spec).__name__}; use "
                             "Uniform, LogUniform, IntUniform, Choice or a list")
        if isinstance(spec, Distribution):
            spec.validate(name)
        elif isinstance(spec, list) and not spec:
            raise SpaceError(f"{name!r}: empty list of options")
        for value in _values(spec):
            check_reserved(name, value)
        out[name] = spec
    return out


def _values(spec) -> list:
    """The concrete values a spec can take (bounds for continuous distributions)."""
    if isinstance(spec, list):
        return spec
    if isinstance(spec, Choice):
        return list(spec.options)
    if isinstance(spec, (Uniform, LogUniform, IntUniform)):
        return [spec.low, spec.high]
    return [spec]


def check_reserved(name: str, value: Any) -> None:
    """Type and range checks of the reserved training keys."""
    if name in ("batch_size", "epochs"):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise SpaceError(f"{name!r} must be a positive integer, got {value!r}")
    elif name == "learning_rate":
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or not value > 0 or not math.isfinite(value):
            raise SpaceError(f"'learning_rate' must be a positive number, got {value!r}")
    elif name == "optimizer":
        if not isinstance(value, (str, dict)) and not hasattr(value, "get_config"):
            raise SpaceError("'optimizer' must be a Keras optimizer name, config dict or "
                             f"instance, got {value!r}")
    elif name == "loss":
        if not isinstance(value, (str, dict)) and not callable(value):
            raise SpaceError(f"'loss' must be a Keras loss name, config dict or object, got "
                             f"{value!r}")


def grid(space: dict) -> list[dict]:
    """Every combination of the options, each exactly once, in the order of the space."""
    space = normalise(space)
    axes = []
    for name, spec in space.items():
        if isinstance(spec, Choice):
            spec = list(spec.options)
        elif isinstance(spec, Distribution):
            raise SpaceError(f"{name!r}: a grid needs a list of values, not {spec}; use "
                             "RandomSearch (or SuccessiveHalving with n_trials) for distributions")
        axes.append(spec if isinstance(spec, list) else [spec])
    return [dict(zip(space, combo)) for combo in itertools.product(*axes)]


def grid_size(space: dict) -> int:
    return len(grid(space))


def sample(space: dict, n: int, seed: int = 0) -> list[dict]:
    """``n`` parameter dicts drawn from ``space`` with a seeded generator (same seed, same list)."""
    space = normalise(space)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise SpaceError(f"n_trials must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(int(n)):
        params = {}
        for name, spec in space.items():
            if isinstance(spec, list):
                spec = Choice(spec)
            params[name] = spec.sample(rng) if isinstance(spec, Distribution) else spec
        trials.append(params)
    return trials
