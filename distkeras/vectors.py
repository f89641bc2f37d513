"""Flat float32 vectors, the currency of every exchange: the checks that keep them finite, their
split into ``[parameters | statistics]`` (``distkeras.state``), and means that neither overflow
nor drift. Shared by the driver's services and the workers' exchanges alike.

Example::

    params, statistics = split(theta, layout.params)
    check_finite(theta, "weights", "worker 0, epoch 1, step 40")
    centre = mean_of([theta_0, theta_1])
"""
from __future__ import annotations

import numpy as np


class DivergedError(FloatingPointError):
    """A worker's weights or gradient became NaN/inf: its loss diverged. Nothing was sent."""

    retry_helps = False     # the same data and weights diverge again: the run ends at once


def all_finite(vector: np.ndarray) -> bool:
    """No NaN or inf in ``vector``. One BLAS pass: NaN and inf survive the squared norm x·x
    (40 GB/s on one core, 5x a float64 sum), and only a norm that overflowed, or a NaN, is told
    apart value by value (exact either way)."""
    flat = np.asarray(vector).reshape(-1)
    if flat.dtype in (np.float32, np.float64):
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.dot(flat, flat)):
                return True
    return bool(np.isfinite(flat).all())


def check_finite(vector: np.ndarray, what: str, where: str) -> None:
    """Raise :class:`DivergedError` before a non-finite vector reaches a peer, the driver or
    the next window."""
    if not all_finite(vector):
        raise DivergedError(
            f"{where}: the {what} became non-finite (NaN/inf): the loss diverged, so nothing "
            "was sent. Lower the learning rate, clip gradients (an optimizer with clipnorm=1.0) "
            "or look for extreme values in the inputs")


def split(vector: np.ndarray, params: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(parameters, statistics)`` views of a flat vector whose statistics start at
    ``params`` (None: it is all parameters)."""
    cut = vector.size if params is None else params
    return vector[:cut], vector[cut:]


def mean_of(vectors) -> np.ndarray:
    """The mean of finite float32 vectors as x₀ + Σ(xᵢ − x₀)/n accumulated in float64: exactly x₀
    when they are all equal (a plain sum over n divided by n is not, for n not a power of two),
    and finite where their sum would overflow float32."""
    first = np.asarray(vectors[0], dtype=np.float32)
    deviation = np.zeros(first.shape, np.float64)
    for v in vectors[1:]:
        deviation += np.asarray(v, np.float64) - first
    return (first + deviation / len(vectors)).astype(np.float32)
