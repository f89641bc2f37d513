"""Decentralised algorithms: no centre variable, workers average with their peers.

x_i is worker i's replica, η its learning rate, g_i its stochastic gradient, W the mixing matrix
of the topology (symmetric, doubly stochastic; ``distkeras.exchange.topology``). The model of the
run is the mean of the replicas x̄; Γ = Σᵢ‖x̄ − x_i‖² (consensus distance) is reported per epoch.
"""
from __future__ import annotations

from distkeras.algorithms.base import Algorithm
from distkeras.exchange import NeighbourExchange, PairwiseGossip, Topology


class _Decentralised(Algorithm):
    default_topology = "ring"

    def __init__(self, communication_window=None, learning_rate=0.01, num_workers=1,
                 topology: str = None, **params):
        super().__init__(communication_window, learning_rate, num_workers, **params)
        self.topology = topology or self.default_topology
        Topology.named(self.topology, max(1, self.num_workers))   # an unknown name fails here

    def graph(self) -> Topology:
        return Topology.named(self.topology, self.num_workers)


class DPSGD(_Decentralised):
    """D-PSGD (Lian et al. 2017), synchronous: after every λ=1 local steps
    x_i ← Σ_j W_ij x_j over i's neighbours (adapt, then combine: x_i ← Σ_j W_ij (x_j − η g_j));
    a barrier stage, every worker waits for its neighbours each round."""

    name = "dpsgd"
    synchronous = True
    default_window = 1
    exchange_type = NeighbourExchange

    def exchange(self, worker):
        return NeighbourExchange(self, worker, self.graph())


class ADPSGD(_Decentralised):
    """AD-PSGD (Lian et al. 2018), asynchronous and wait-free: after every λ=1 local steps an
    active (even) worker averages with a random passive (odd) neighbour j,
    x_i, x_j ← (x_i + x_j)/2, in a background thread while its next window computes; the
    correction is folded in at the next boundary. Passive workers answer from their endpoint and
    never wait, so no two workers wait on each other."""

    name = "adpsgd"
    default_window = 1
    exchange_type = PairwiseGossip

    def exchange(self, worker):
        return PairwiseGossip(self, worker, self.graph(), overlap=True)


class SwarmSGD(_Decentralised):
    """SwarmSGD (Nadiradze et al. 2019): H local steps, then x_i, x_j ← (x_i + x_j)/2 with one
    random neighbour j of the graph (blocking for i, answered from j's endpoint without stopping
    j). ``local_steps`` H is fixed, or with ``geometric=True`` drawn per interaction from a
    geometric distribution of mean H (windows run as power-of-two compiled calls, so only
    log₂ H programs are compiled)."""

    name = "swarmsgd"
    default_window = 3
    exchange_type = PairwiseGossip

    def __init__(self, communication_window=None, learning_rate=0.01, num_workers=1,
                 topology: str = None, local_steps: int | None = None, geometric: bool = False,
                 **params):
        super().__init__(communication_window if local_steps is None else local_steps,
                         learning_rate, num_workers, topology, **params)
        self.geometric = bool(geometric)

    def exchange(self, worker):
        return PairwiseGossip(self, worker, self.graph(), overlap=False)

    def window_length(self, rng, steps):
        if not self.geometric:
            return self.communication_window
        return int(min(rng.geometric(1.0 / self.communication_window), 8 * self.communication_window))

    def local_steps(self, replica, exchange, window, start):
        if not self.geometric:
            return replica.train(window, start=start)
        done, theta = 0, None
        while done < len(window):    # power-of-two pieces: one compiled program per size
            k = 1 << ((len(window) - done).bit_length() - 1)
            theta = replica.train(window[done:done + k], start=start)
            start, done = None, done + k
        return theta
