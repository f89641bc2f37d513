"""Deterministic validation splits: k-fold cross-validation and a hold-out set, by seed.

Pure numpy on row positions, so the driver (tests, reports) and every executor compute exactly
the same splits from ``(n, k, seed)``. Folds are disjoint, cover every row, and their sizes
differ by at most one.

Example::

    for train_idx, val_idx in kfold(1000, 5, seed=42):
        ...
    train_idx, val_idx = holdout(1000, 0.2, seed=42)
"""
from __future__ import annotations

import numpy as np


def fold_ids(n: int, k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of each of ``n`` rows: a seeded permutation dealt round-robin."""
    if k < 2 or k > n:
        raise ValueError(f"folds={k} needs 2 <= folds <= rows ({n})")
    ids = np.empty(n, dtype=np.int64)
    ids[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return ids


def kfold(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` pairs ``(train_idx, val_idx)``; each row is validated in exactly one fold."""
    ids = fold_ids(n, k, seed)
    return [(np.flatnonzero(ids != f), np.flatnonzero(ids == f)) for f in range(k)]


def holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded ``(train_idx, val_idx)`` split with ``round(n * fraction)`` validation rows."""
    n_val = int(round(n * fraction))
    if not 0 < n_val < n:
        raise ValueError(f"validation_fraction={fraction} of {n} rows leaves an empty split")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def splits(n: int, folds: int | None, validation_fraction: float, seed: int):
    """The splits a trial trains on: k folds, or one hold-out split."""
    return kfold(n, folds, seed) if folds else [holdout(n, validation_fraction, seed)]
