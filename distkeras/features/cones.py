"""Fixed-radius neighbour search in (eta, phi), vectorised over many events at once.

Isolation sums need, for every particle, the particles of other collections within ΔR < 0.3.
A per-pair loop costs O(n²) per event; here every map particle is put in an (event, η-cell,
φ-cell) grid with cells at least R wide, and each query only looks at its 3 × 3 neighbour
cells. Everything is flat numpy (no Python loop over events or particles).

Example::

    index = ConeIndex(event, eta, phi, n_events=len(events), radius=0.3)
    qi, mi, dr2 = index.pairs(q_event, q_eta, q_phi)       # all pairs with ΔR < 0.3
"""
from __future__ import annotations

import numpy as np

TWO_PI = 2.0 * np.pi
_ETA_CLIP = 8.0  # particles beyond |η| = 8 share the edge cells (still exact, just slower)


def wrap_phi(phi: np.ndarray) -> np.ndarray:
    """Wrap angles to (−π, π]. Example: ``wrap_phi(np.array([3.5]))`` → ``[-2.783...]``."""
    x = np.mod(np.asarray(phi, dtype=np.float64), TWO_PI)  # [0, 2π)
    return np.where(x > np.pi, x - TWO_PI, x)


def delta_phi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a − b wrapped to (−π, π]."""
    return wrap_phi(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))


def group_starts(group: np.ndarray, n_groups: int) -> np.ndarray:
    """Start offset of each group for a non-decreasing group-id array."""
    counts = np.bincount(group, minlength=n_groups)
    return np.cumsum(counts) - counts


def rank_in_group(group: np.ndarray, n_groups: int) -> np.ndarray:
    """0, 1, 2, ... within each group of a non-decreasing group-id array."""
    return np.arange(len(group)) - group_starts(group, n_groups)[group]


class ConeIndex:
    """Grid of map particles for ΔR queries (see module docstring).

    Cells are R wide in η and R/4 in φ; entries within R of φ = ±π get a ghost copy shifted by
    ∓2π, so the φ-window of a query is one contiguous run of cells per η row (3 runs in all)
    and no Δφ wrapping is needed per pair.
    """

    def __init__(self, event: np.ndarray, eta: np.ndarray, phi: np.ndarray, n_events: int,
                 radius: float, phi_split: int = 4) -> None:
        if not 0.0 < radius <= TWO_PI / 3:
            raise ValueError(f"radius must be in (0, 2π/3], got {radius}")
        self.radius = r = float(radius)
        self.n_phi = max(3, int(TWO_PI // (r / phi_split)))
        self._w = TWO_PI / self.n_phi
        self._s = int(np.ceil(r / self._w))                 # φ cells a query reaches each side
        self.n_cols = self.n_phi + 2 * self._s
        eta = np.asarray(eta, dtype=np.float64)
        phi = wrap_phi(phi)
        event = np.asarray(event, dtype=np.int64)
        clipped = np.clip(eta, -_ETA_CLIP, _ETA_CLIP)
        lo = int(np.floor(clipped.min() / r)) if len(eta) else 0
        hi = int(np.floor(clipped.max() / r)) if len(eta) else 0
        self._row_lo, self._row_hi = lo - 1, hi + 1          # queries are clipped to these rows
        self.n_eta = hi - lo + 5                             # plus one empty row each side
        self.n_events = int(n_events)
        ib, jb = self._bins(eta, phi)
        src = np.arange(len(eta))
        low, high = jb < self._s, jb >= self.n_phi - self._s  # ghosts across φ = ±π
        src = np.concatenate([src, src[low], src[high]])
        jb = np.concatenate([jb, jb[low] + self.n_phi, jb[high] - self.n_phi])
        phi = np.concatenate([phi, phi[low] + TWO_PI, phi[high] - TWO_PI])
        cell = (event[src] * self.n_eta + ib[src]) * self.n_cols + jb + self._s
        order = np.argsort(cell, kind="stable")
        n_cells = self.n_events * self.n_eta * self.n_cols
        self.ends = np.cumsum(np.bincount(cell, minlength=n_cells))
        self.order = src[order]
        self.eta = eta[self.order]
        self.phi = phi[order]

    def _bins(self, eta: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ib = np.floor(np.clip(eta, -_ETA_CLIP, _ETA_CLIP) / self.radius).astype(np.int64)
        ib = np.clip(ib, self._row_lo, self._row_hi) - self._row_lo + 1
        jb = np.floor((phi + np.pi) / self._w).astype(np.int64)
        return ib, np.clip(jb, 0, self.n_phi - 1)

    def pairs(self, event: np.ndarray, eta: np.ndarray, phi: np.ndarray,
              radius: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query, map particle) pairs in the same event with ΔR < radius (≤ index radius).

        Returns query indices, map indices (positions in the arrays given to the constructor)
        and ΔR², grouped by query.
        """
        r = self.radius if radius is None else float(radius)
        if r > self.radius:
            raise ValueError(f"query radius {r} exceeds the index radius {self.radius}")
        eta = np.asarray(eta, dtype=np.float64)
        phi = wrap_phi(phi)
        nq = len(eta)
        ib, jb = self._bins(eta, phi)
        rows = np.asarray(event, dtype=np.int64) * self.n_eta + ib
        rows = rows[:, None] + np.array([-1, 0, 1])[None, :]                     # (nq, 3)
        first = rows * self.n_cols + jb[:, None]            # column jb - s, shifted by +s
        last = first + 2 * self._s
        ends = self.ends[last].ravel()
        lens = ends - np.where(first > 0, self.ends[first - 1], 0).ravel()
        total = int(lens.sum())
        offs = np.cumsum(lens) - lens
        pos = np.arange(total, dtype=np.int64) + np.repeat(ends - lens - offs, lens)
        per_q = lens.reshape(nq, 3).sum(axis=1)
        deta = self.eta[pos] - np.repeat(eta, per_q)
        dphi = self.phi[pos] - np.repeat(phi, per_q)
        dr2 = deta * deta + dphi * dphi
        keep = np.flatnonzero(dr2 < r * r)
        qi = np.repeat(np.arange(nq), per_q)[keep]
        return qi, self.order[pos[keep]], dr2[keep]
