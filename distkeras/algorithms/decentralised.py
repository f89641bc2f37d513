"""Decentralised algorithms: no centre variable, workers average with their peers.

x_i is worker i's replica, η its learning rate, g_i its stochastic gradient, W the mixing matrix
of the topology (symmetric, doubly stochastic; ``distkeras.exchange.topology``). The model of the
run is the mean of the replicas x̄; Γ = Σᵢ‖x̄ − x_i‖² (consensus distance) is reported per epoch.
"""
from __future__ import annotations

from distkeras.algorithms.base import Algorithm
from distkeras.algorithms.registry import TrainerSpec, register
from distkeras.exchange import NeighbourExchange, PairwiseGossip, Topology


class Decentralised(Algorithm):
    """A rule over peer exchanges on a ``topology`` (``distkeras.exchange.topology``)."""

    default_topology = "ring"
    windowed = False            # λ = 1 by the algorithm (SwarmSGD: its own local_steps)

    def __init__(self, communication_window=None, learning_rate=0.01, num_workers=1,
                 topology: str = None, **params):
        super().__init__(communication_window, learning_rate, num_workers, **params)
        self.topology = topology or self.default_topology
        Topology.named(self.topology, max(1, self.num_workers))   # an unknown name fails here

    def graph(self) -> Topology:
        return Topology.named(self.topology, self.num_workers)


@register
class DPSGD(Decentralised):
    """D-PSGD (Lian et al. 2017), synchronous: after every λ=1 local steps
    x_i ← Σ_j W_ij x_j over i's neighbours (adapt, then combine: x_i ← Σ_j W_ij (x_j − η g_j));
    a barrier stage, every worker waits for its neighbours each round. With ``compression=``
    the mixing is CHOCO gossip with step γ = ``consensus_step`` (None: the compressor's own,
    1 for fp16/bf16/int8, 0.1 for top-k)."""

    name = "dpsgd"
    synchronous = True
    default_window = 1
    exchange_type = NeighbourExchange
    trainers = (TrainerSpec("DPSGD", "dpsgd", """D-PSGD (Lian et al. 2017): after every λ=1
    local steps, average with the neighbours of a ``topology`` (``ring`` default, ``torus``,
    ``exponential``, ``complete``); synchronous.

    Example::

        DPSGD(model, topology="ring", num_workers=4).fit(df)
    """, slowmo_base={}),)

    def __init__(self, communication_window=None, learning_rate=0.01, num_workers=1,
                 topology: str = None, consensus_step: float | None = None, **params):
        super().__init__(communication_window, learning_rate, num_workers, topology, **params)
        if consensus_step is not None and not 0 < consensus_step <= 1:
            raise ValueError(f"consensus_step={consensus_step}: CHOCO gossip's γ is in (0, 1]")
        self.consensus_step = consensus_step

    def exchange(self, worker):
        return NeighbourExchange(self, worker, self.graph())


@register
class ADPSGD(Decentralised):
    """AD-PSGD (Lian et al. 2018), asynchronous and wait-free: after every λ=1 local steps an
    active (even) worker averages with a random passive (odd) neighbour j,
    x_i, x_j ← (x_i + x_j)/2, in a background thread while its next window computes; the
    correction is folded in at the next boundary. Passive workers answer from their endpoint and
    never wait, so no two workers wait on each other."""

    name = "adpsgd"
    default_window = 1
    exchange_type = PairwiseGossip
    trainers = (TrainerSpec("ADPSGD", "adpsgd", """AD-PSGD (Lian et al. 2018): asynchronous,
    wait-free pairwise averaging with a random neighbour after every λ=1 local steps,
    overlapped with the next steps.

    Example::

        ADPSGD(model, num_workers=4).fit(df)
    """, slowmo_base={}),)

    def exchange(self, worker):
        return PairwiseGossip(self, worker, self.graph(), overlap=True)


def __getattr__(name: str):
    """``decentralised.SwarmSGD``: where SwarmSGD lived before it had its own module (trainers
    saved then name it so)."""
    if name == "SwarmSGD":
        from distkeras.algorithms.swarmsgd import SwarmSGD

        return SwarmSGD
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
