"""Communication graphs of the decentralised algorithms and their mixing matrices.

A topology only says who may talk to whom; the exchanges (``gossip``, ``ring``) say how, and the
transport (``peers``) carries the bytes. Mixing weights are Metropolis–Hastings weights
W_ij = 1 / (1 + max(d_i, d_j)) for neighbours i ~ j and W_ii = 1 − Σ_j W_ij: symmetric and doubly
stochastic for every undirected graph, so neighbour averaging x ← W x preserves the mean of the
replicas.

Example::

    ring = Topology.named("ring", 4)
    ring.neighbours(0)        # [1, 3]
    ring.mixing_matrix()[0]   # [1/3, 1/3, 0, 1/3]
"""
from __future__ import annotations

import math

import numpy as np


class Topology:
    """An undirected communication graph on workers ``0..n-1``."""

    NAMES = ("ring", "complete", "torus", "exponential")

    def __init__(self, n: int, edges: set[tuple[int, int]], name: str = "custom"):
        self.n, self.name = int(n), name
        self._adj: dict[int, set[int]] = {i: set() for i in range(self.n)}
        for i, j in edges:
            if i != j:
                self._adj[i].add(j)
                self._adj[j].add(i)

    @classmethod
    def named(cls, name: str, n: int) -> "Topology":
        """``ring`` (i ~ i±1), ``complete``, ``torus`` (a 2-D grid with wrap-around, the most
        square factorisation of n) or ``exponential`` (i ~ i ± 2^k, as in SGP)."""
        if n < 1:
            raise ValueError(f"a topology needs at least one worker, got {n}")
        edges: set[tuple[int, int]] = set()
        if name == "ring":
            edges = {(i, (i + 1) % n) for i in range(n)}
        elif name == "complete":
            edges = {(i, j) for i in range(n) for j in range(i + 1, n)}
        elif name == "torus":
            rows = max(r for r in range(1, int(math.isqrt(n)) + 1) if n % r == 0)
            cols = n // rows
            for i in range(n):
                r, c = divmod(i, cols)
                edges |= {(i, r * cols + (c + 1) % cols), (i, ((r + 1) % rows) * cols + c)}
        elif name == "exponential":
            k = 1
            while k < n:
                edges |= {(i, (i + k) % n) for i in range(n)}
                k *= 2
        else:
            raise ValueError(f"unknown topology {name!r}; use one of {', '.join(cls.NAMES)}")
        return cls(n, edges, name)

    def neighbours(self, rank: int) -> list[int]:
        return sorted(self._adj[rank])

    def degree(self, rank: int) -> int:
        return len(self._adj[rank])

    def mixing_weights(self, rank: int) -> dict[int, float]:
        """Row ``rank`` of the mixing matrix: {j: W_ij} for j = rank and its neighbours."""
        row = {j: 1.0 / (1 + max(self.degree(rank), self.degree(j))) for j in self._adj[rank]}
        row[rank] = 1.0 - sum(row.values())
        return row

    def mixing_matrix(self) -> np.ndarray:
        w = np.zeros((self.n, self.n))
        for i in range(self.n):
            for j, v in self.mixing_weights(i).items():
                w[i, j] = v
        return w

    def passive_neighbours(self, rank: int) -> list[int]:
        """AD-PSGD's bipartite roles: even ranks are active and call odd (passive) ranks, so two
        workers never wait on each other. Empty for passive workers."""
        if rank % 2:
            return []
        return [j for j in self.neighbours(rank) if j % 2]

    def __repr__(self) -> str:
        return f"Topology({self.name!r}, n={self.n})"
