"""SwarmSGD (Nadiradze et al. 2019): H local steps, then average with one random neighbour.

This module is the whole algorithm, as a new one would be written: the rule under its formula,
the trainer it makes (``dk.trainers.SwarmSGD``, the study's ``swarmsgd``, a SlowMo base), and
nothing to edit elsewhere. Its exchange, pairwise gossip, is shared with AD-PSGD
(``distkeras.exchange.gossip``); a rule with an exchange of its own defines it here too and
returns it from :meth:`exchange`.

    x_i, x_j ← (x_i + x_j)/2   after every H local steps, j a random neighbour of i
"""
from __future__ import annotations

from distkeras.algorithms.decentralised import Decentralised
from distkeras.algorithms.registry import TrainerSpec, register
from distkeras.exchange import PairwiseGossip


@register
class SwarmSGD(Decentralised):
    """SwarmSGD: H local steps, then x_i, x_j ← (x_i + x_j)/2 with one random neighbour j of the
    graph (blocking for i, answered from j's endpoint without stopping j). ``local_steps`` H is
    fixed, or with ``geometric=True`` drawn per interaction from a geometric distribution of
    mean H (windows run as power-of-two compiled calls, so only log₂ H programs are compiled)."""

    name = "swarmsgd"
    default_window = 3
    exchange_type = PairwiseGossip
    trainers = (TrainerSpec("SwarmSGD", "swarmsgd", """SwarmSGD (Nadiradze et al. 2019):
    ``local_steps`` H (fixed, or geometric with mean H when ``geometric=True``) between
    averagings with one random neighbour.

    Example::

        SwarmSGD(model, local_steps=3, num_workers=4).fit(df)
    """, slowmo_base={}),)

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
        return int(min(rng.geometric(1.0 / self.communication_window),
                       8 * self.communication_window))

    def local_steps(self, replica, exchange, window, start):
        if not self.geometric:
            return replica.train(window, start=start)
        done, theta = 0, None
        while done < len(window):    # power-of-two pieces: one compiled program per size
            k = 1 << ((len(window) - done).bit_length() - 1)
            theta = replica.train(window[done:done + k], start=start)
            start, done = None, done + k
        return theta
