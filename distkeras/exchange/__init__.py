"""How workers communicate: the exchange an algorithm chooses after each window of local steps.

- :class:`Exchange` (no communication: ensembles), the seam itself (``base``);
- :class:`ParameterServerExchange`: commit to θ̃ on the driver, and
  :class:`OverlappedParameterServerExchange`, its round trips hidden behind compute
  (``parameter_server``);
- :class:`RingExchange` / :class:`RingAllReduce`: bandwidth-optimal ring all-reduce (``ring``);
- :class:`NeighbourExchange`, :class:`PairwiseGossip`: D-PSGD, AD-PSGD, SwarmSGD (``gossip``);
- :class:`SlowMoExchange`: slow momentum on top of any of the peer exchanges (``slowmo``);
- :class:`Topology`: who may talk to whom, and the mixing weights (``topology``);
- :class:`PeerEndpoint`, :class:`PeerGroup`: the authenticated transport between workers
  (``peers``).

Nothing here imports TensorFlow or Spark: exchanges run in executors and are tested alone.
"""
from distkeras.exchange.base import (CENTRE, MEAN, MEMBERS, DivergedError, Exchange, ExchangeStats,
                                     RunModel, WorkerContext, check_finite, split)
from distkeras.exchange.gossip import NeighbourExchange, PairwiseGossip, SharedReplica
from distkeras.exchange.parameter_server import (OverlappedParameterServerExchange,
                                                 ParameterServerExchange)
from distkeras.exchange.peers import PeerEndpoint, PeerExchange, PeerGroup, PeerLostError
from distkeras.exchange.ring import RingAllReduce, RingExchange
from distkeras.exchange.slowmo import SlowMoExchange
from distkeras.exchange.topology import Topology

__all__ = ["DivergedError", "check_finite", "split", "Exchange", "ExchangeStats", "WorkerContext",
           "RunModel", "CENTRE", "MEAN", "MEMBERS",
           "NeighbourExchange", "PairwiseGossip", "SharedReplica",
           "OverlappedParameterServerExchange", "ParameterServerExchange", "PeerEndpoint",
           "PeerExchange", "PeerGroup", "PeerLostError", "RingAllReduce", "RingExchange",
           "SlowMoExchange", "Topology"]
