"""The simulated transport: the algorithms' real exchanges, with their messages carried in
virtual time instead of over sockets.

:func:`simulated` turns an exchange an algorithm made (``algorithm.exchange(ctx)``) into its
simulated self by swapping only what touches the network:

- parameter server (DOWNPOUR, ADAG, AGN, DynSGD, EASGD, AEASGD, model averaging): the real
  ``ParameterServerExchange`` with an in-process client calling the real server's handler; the
  server's NIC and rule are one FIFO resource (upload, service, reply);
- ring (AR-SGD's gradients, LocalSGD, SlowMo's exact average): the real ``RingExchange`` over a
  :class:`VirtualRing` (the mean in worker order, then 2(n−1)(α + b/(nβ)));
- neighbour mixing (D-PSGD): x_i ← W_ii x_i + Σ_j W_ij x_j over the real topology's weights;
- pairwise gossip (AD-PSGD, SwarmSGD): the real ``PairwiseGossip`` and ``SharedReplica``; the
  request reaches the peer's real handler after α + b/β and the answer comes back after as
  long (AD-PSGD: as timed events while the caller computes on);
- SlowMo: the real ``SlowMoExchange`` around its simulated base, its average on a virtual ring.

Example::

    exchange = simulated(algorithm.exchange(ctx), cluster)
"""
from __future__ import annotations

import numpy as np

from distkeras import messages
from distkeras.exchange import (Exchange, NeighbourExchange, PairwiseGossip,
                                ParameterServerExchange, RingExchange)
from distkeras.exchange.parameter_server import OverlappedParameterServerExchange
from distkeras.exchange.slowmo import SlowMoExchange
from distkeras.transport import RemoteError
from distkeras.transport.protocol import Frame
from distkeras.vectors import check_finite


class LocalConnection:
    """What a server handler knows of the connection a frame came on (in-process)."""

    superseded = False

    def __init__(self, worker: int):
        self.worker_id = worker
        self.state: dict = {}


class ServiceClient:
    """A client of a driver service (coordinator, parameter server) that calls its handler
    in-process; the handler's errors come back as :class:`RemoteError`, as over a socket."""

    connected = True

    def __init__(self, server, worker: int):
        self.server, self.worker = server, worker
        self.conn = LocalConnection(worker)

    def request(self, op: int, payload=None, aux: int = 0, flags: int = 0, out=None) -> Frame:
        if isinstance(payload, np.ndarray):      # a socket delivers a copy
            payload = payload.copy()
        try:
            reply = self.server._handle(self.conn, Frame(op, flags, self.worker, 0, aux, payload))
        except Exception as exc:  # noqa: BLE001 - what the peer would send back
            raise RemoteError(f"{type(exc).__name__}: {exc}") from None
        return Frame(reply.op, reply.flags, self.worker, 0, reply.aux, reply.payload)

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def nbytes(payload) -> int:
    if isinstance(payload, np.ndarray):
        return payload.nbytes
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return len(payload)
    return 64 if payload is None else 512


class ServerQueue:
    """The parameter server's NIC and rule: one commit at a time, first come first served."""

    def __init__(self) -> None:
        self.free_at = 0.0


# -- the simulated exchanges ------------------------------------------------------------------------
class _Simulated:
    """What every simulated exchange shares: the run's clock, network and time model; time
    spent in exchanges is virtual."""

    cluster = None        # the SimulatedCluster (set by ``simulated``)

    @property
    def clock(self):
        return self.cluster.clock

    @property
    def network(self):
        return self.cluster.network

    def timed(self, fn, *args):
        w = self.worker.worker
        t0 = self.clock.now[w]
        try:
            return fn(*args)
        finally:
            self.stats.exchange_seconds += self.clock.now[w] - t0


class SimulatedParameterServer(_Simulated):
    """The real parameter-server exchange; its client reaches the real server in virtual time."""

    def open(self) -> None:
        self.client = _ServerClient(self.cluster, self.worker.worker)


class _ServerClient(ServiceClient):
    """A worker's connection to the parameter server: α + b/β to the server, the server's
    FIFO (its NIC at β and the rule's measured service time), α + b/β back. A synchronous
    round waits for every worker's commit, then the server replies to each in turn."""

    def __init__(self, cluster, worker: int):
        super().__init__(cluster.parameter_server, worker)
        self.cluster = cluster
        self._round = 0

    def request(self, op, payload=None, aux=0, flags=0, out=None):
        cluster, w = self.cluster, self.worker
        clock, net, queue = cluster.clock, cluster.network, cluster.server_queue
        up = nbytes(payload)
        down = cluster.vector_bytes
        clock.sleep(w, net.latency)                       # at the server's door
        if op == messages.COMMIT and self.server.algorithm.synchronous:
            arrivals, _, shared = clock.gather(w, ("ps-round", self._round), cluster.num_workers,
                                               clock.now[w])
            self._round += 1
            if "done" not in shared:     # uploads one after the other, then the round
                free = queue.free_at
                for t in sorted(arrivals.values()):
                    free = max(free, t) + up / net.bandwidth
                shared["done"] = free + cluster.time_model.service_seconds
                queue.free_at = shared["done"] + cluster.num_workers * down / net.bandwidth
            reply = clock.outside(w, lambda: super(_ServerClient, self).request(
                op, payload, aux, flags))
            order = sorted(arrivals).index(w) + 1         # replies go out one after the other
            clock.at(w, shared["done"] + order * down / net.bandwidth + net.latency)
            return reply
        service = cluster.time_model.service_seconds if op == messages.COMMIT else 0.0
        start = max(clock.now[w], queue.free_at)        # FIFO: reserved on arrival
        applied = start + up / net.bandwidth + service
        queue.free_at = sent = applied + down / net.bandwidth
        clock.at(w, applied)
        reply = super().request(op, payload, aux, flags)
        clock.at(w, sent + net.latency)
        return reply


class VirtualRing:
    """A ring all-reduce in virtual time: the mean of every worker's vector (summed in worker
    order, then scaled, as the ring does), after 2(n−1)(α + b/(nβ))."""

    def __init__(self, cluster, worker: int, key: str = "ring"):
        self.cluster, self.worker, self.key = cluster, worker, key
        self._round = 0

    def sum(self, vector, out=None, scale: float = 1.0):
        cluster, w = self.cluster, self.worker
        vector = np.ascontiguousarray(vector, dtype=np.float32).ravel()
        values, t, shared = cluster.clock.gather(w, (self.key, self._round), cluster.num_workers,
                                                 vector.copy())
        self._round += 1
        if "sum" not in shared:
            total = values[0].copy()
            for v in (values[k] for k in sorted(values)[1:]):
                total += v
            if scale != 1.0:
                total *= np.float32(scale)
            shared["sum"] = total
        cluster.clock.at(w, t + cluster.network.ring_allreduce(vector.nbytes,
                                                               cluster.num_workers))
        out = np.empty_like(vector) if out is None else out
        np.copyto(out, shared["sum"])
        return out

    def mean(self, vector, out=None):
        return self.sum(vector, out=out, scale=1.0 / self.cluster.num_workers)


class SimulatedRing(_Simulated):
    """The real ring exchange (LocalSGD, AR-SGD's gradient ring) over a :class:`VirtualRing`."""

    def open(self) -> None:
        self.peer_endpoint = None
        self.ring = VirtualRing(self.cluster, self.worker.worker)
        self.compressed = None

    def start(self, theta):
        return theta


class SimulatedNeighbours(_Simulated):
    """D-PSGD's mixing, x_i ← W_ii x_i + Σ_j W_ij x_j, all workers in step (a barrier stage)."""

    def open(self) -> None:
        self.peer_endpoint = None

    def start(self, theta):
        return theta

    def _mix(self, theta):
        w = self.worker.worker
        values, t, _ = self.clock.gather(w, ("mix", self._round), self.cluster.num_workers,
                                         np.array(theta, dtype=np.float32, copy=True))
        round_, self._round = self._round, self._round + 1
        mixed = theta * np.float32(self.weights[w])
        for j in self.neighbours:
            mixed += values[j] * np.float32(self.weights[j])
        check_finite(mixed, "replica mixed with its neighbours",
                     f"worker {w}, D-PSGD round {round_}")
        self.clock.at(w, t + self.network.neighbours(theta.nbytes, len(self.neighbours)))
        self.stats.exchanges += 1
        self.stats.peers.update(self.neighbours)
        return mixed


class _PeerTable:
    """The rendezvous table a simulated worker sees: the workers still training."""

    def __init__(self, cluster):
        self.cluster = cluster

    @property
    def table(self) -> dict:
        return {w: "simulated" for w in self.cluster.training}

    def refresh(self) -> dict:
        return self.table

    def meet(self, **_) -> None:
        """Every simulated worker is there from time 0."""

    bytes_out = bytes_in = 0

    def close(self) -> None:
        pass


class SimulatedGossip(_Simulated):
    """The real pairwise gossip: the callee's real handler answers from its real
    ``SharedReplica`` when the request lands (α + b/β), the caller mixes the answer in when it
    is back. SwarmSGD waits for it; AD-PSGD computes on, and folds it in at a later boundary."""

    _busy_until = 0.0

    def open(self) -> None:
        self.peer_endpoint = None
        self.group = _PeerTable(self.cluster)

    def start(self, theta):
        from distkeras.exchange.gossip import SharedReplica

        self.shared = SharedReplica(theta)
        self.cluster.gossips[self.worker.worker] = self
        return theta

    def _after_window(self, theta):
        theta = self.shared.fold(theta)
        w, now = self.worker.worker, self.clock.now[self.worker.worker]
        if self._busy_until > now:       # the last gossip is still on its way
            return theta
        peer = self._pick()
        if peer is None:
            return theta
        sent = self.shared.snapshot()
        hop = self.network.message(sent.nbytes)
        callee = self.cluster.gossips[peer]

        def answer():     # at the callee, by its real handler
            frame = Frame(messages.GOSSIP, 0, w, 0, 0, sent)
            return callee._on_gossip(LocalConnection(w), frame).payload.copy()

        if not self.overlap:
            self.clock.at(w, now + hop)
            reply = answer()
            self.clock.at(w, now + 2 * hop)
            self._mix_in(peer, sent, reply)
            return self.shared.fold(theta)
        self._busy_until = now + 2 * hop
        landed = {}
        self.clock.event(now + hop, lambda: landed.setdefault("reply", answer()))
        self.clock.event(now + 2 * hop, lambda: self._mix_in(peer, sent, landed["reply"]))
        return theta

    def _join(self) -> None:
        """Wait (in virtual time) for the gossip still on its way."""
        w = self.worker.worker
        if self._busy_until > self.clock.now[w]:
            self.clock.at(w, self._busy_until)

    def _serve_callers(self, poll: float = 0.1) -> None:
        """A passive worker keeps answering until its active neighbours are done."""
        self.cluster.training.discard(self.worker.worker)
        self.clock.wait_finished(self.worker.worker, self.callers)

    def finish(self, theta):
        self.cluster.training.discard(self.worker.worker)
        return super().finish(theta)


class SimulatedSlowMo(_Simulated):
    """The real SlowMo exchange around its simulated base; its exact average on a virtual
    ring."""

    def open(self) -> None:
        self.base = simulated(self.base, self.cluster)
        self.base.open()
        self.ring = self.ring_group = None
        if self.algorithm.average and not getattr(self.base, "exact_average", False):
            self.ring_group = _PeerTable(self.cluster)
            self.ring = VirtualRing(self.cluster, self.worker.worker, key="slowmo-average")


class _Alone(_Simulated):
    """Workers that never communicate (ensembles)."""


#: the simulated counterpart of each exchange, most specific first
ADAPTERS: tuple[tuple[type, type], ...] = (
    (SlowMoExchange, SimulatedSlowMo),
    (ParameterServerExchange, SimulatedParameterServer),
    (RingExchange, SimulatedRing),
    (NeighbourExchange, SimulatedNeighbours),
    (PairwiseGossip, SimulatedGossip),
)


def simulated(exchange: Exchange, cluster) -> Exchange:
    """``exchange`` (as its algorithm made it, not yet opened) with its transport simulated in
    ``cluster``; raises ValueError for an exchange the simulation has no model of."""
    if isinstance(exchange, _Simulated):
        return exchange
    if isinstance(exchange, OverlappedParameterServerExchange):
        raise ValueError("the simulation does not model overlapped commits: "
                         "overlap_communication=False")
    for real, adapter in ADAPTERS:
        if isinstance(exchange, real):
            break
    else:
        if type(exchange) is not Exchange:
            raise ValueError(f"the simulation has no model of {type(exchange).__name__}'s "
                             "network traffic (distkeras.simulation.exchanges.ADAPTERS)")
        adapter = _Alone
    exchange.__class__ = type(f"Simulated{type(exchange).__name__}",
                              (adapter, type(exchange)), {})
    exchange.cluster = cluster
    return exchange
