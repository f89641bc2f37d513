"""Transport between workers: each worker serves a peer endpoint on its executor's host, and
talks to other workers' endpoints with authenticated clients.

The guarantees are the parameter server's (``distkeras.transport``): the versioned binary frame,
zero-copy float32 payloads, mutual HMAC authentication with the per-run secret, no pickle,
bounded connect and receive timeouts; garbage and unauthenticated frames are dropped and counted
and never reach a replica. A peer that cannot be reached gives an error naming its worker id,
its ``host:port`` and the settings to change.

Peers meet through the barrier stage (``BarrierTaskContext.allGather`` of ``host:port``, for
synchronous algorithms) or through the coordinator's rendezvous (``PEERS``, for asynchronous
ones, so that a retried task is found again at its new address).

Example::

    endpoint = PeerEndpoint(ctx, {messages.GOSSIP: on_gossip})   # handler(conn, frame) -> Reply
    group = PeerGroup(ctx, endpoint)
    group.meet()                                   # the peer table
    group.client(1).request(messages.GOSSIP, payload=theta)
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Callable, Optional

import numpy as np

from distkeras import messages
from distkeras.exchange.base import MEAN, Exchange, WorkerContext
from distkeras.transport import (BindError, Client, FrameServer, Reply, TransportError,
                                 payload_size)

log = logging.getLogger(__name__)

PEER_HINT = ("Executors must reach each other: set SPARK_LOCAL_IP on the executors (or the "
             "trainer's peer_host=) to an address other executors can reach, and open the ports "
             "of peer_ports= between executors.")


#: connections one worker may hold to a peer endpoint (a gossip client, SlowMo's ring client,
#: one spare); a newer one replaces its oldest (a retried task, a crashed host's silent socket)
PER_WORKER = 3


class PeerLostError(ConnectionError):
    """A peer of a synchronous exchange is gone, unreachable or silent: the round cannot end."""


def advertised_host(toward: str) -> str:
    """The address other hosts reach this executor on: ``SPARK_LOCAL_IP`` when set, else the
    local address of the route toward ``toward`` (the driver), else the host name's address."""
    if os.environ.get("SPARK_LOCAL_IP"):
        return os.environ["SPARK_LOCAL_IP"]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((toward, 9))   # no packet is sent: this only picks the route
            return s.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())


class PeerEndpoint:
    """This worker's endpoint: a ``FrameServer`` dispatching peer ops to ``handlers``.

    A handler is ``handler(conn, frame) -> Reply | None``; ``conn.worker_id`` is the caller's
    authenticated worker id. ``lost`` records peers whose connection broke mid-run.
    """

    def __init__(self, ctx: WorkerContext, handlers: dict[int, Callable]):
        self.ctx = ctx
        self.handlers = dict(handlers)
        #: op → ``target(conn, aux, nbytes)``: where a float32 payload lands (None: a buffer)
        self.targets: dict[int, Callable] = {}
        self.host = ctx.peer_host or advertised_host(ctx.coordinator[0])
        self.lost: dict[int, str] = {}
        self.bytes_in = self.bytes_out = 0   # payload bytes of requests served / replies sent
        self._listeners: list[Callable[[int], None]] = []
        self._lock = threading.Lock()
        self.server = self._bind()

    def _bind(self) -> FrameServer:
        lo, hi = self.ctx.peer_ports or (0, 0)
        last: Optional[Exception] = None
        for port in range(lo, hi + 1):
            server = FrameServer(self._handle, self.ctx.secret, host=self.host, port=port,
                                 on_disconnect=self._on_disconnect,
                                 max_connections=4 * self.ctx.num_workers + 8,
                                 payload_target=self._target, num_workers=self.ctx.num_workers,
                                 per_worker=PER_WORKER,
                                 name=f"peer endpoint of worker {self.ctx.worker}")
            try:
                return server.start()
            except BindError as exc:
                last = exc
        raise BindError(getattr(last, "errno", 0),
                          f"worker {self.ctx.worker}: no free port for its peer endpoint on "
                          f"{self.host} in {lo}..{hi} ({last}); widen peer_ports= or use the "
                          "default (an ephemeral port)")

    @property
    def address(self) -> str:
        host, port = self.server.address
        return f"{host}:{port}"

    def on_lost(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(worker)`` when a peer's connection to this endpoint breaks."""
        self._listeners.append(listener)

    def _target(self, conn, op: int, aux: int, nbytes: int):
        target = self.targets.get(op)
        return target(conn, aux, nbytes) if target is not None else None

    def _handle(self, conn, frame):
        handler = self.handlers.get(frame.op)
        if handler is None:
            raise ValueError(f"op {frame.op} is not served by peer endpoints")
        reply = handler(conn, frame)
        with self._lock:
            self.bytes_in += payload_size(frame.payload)
            if reply is not None:
                self.bytes_out += payload_size(reply.payload)
        return reply

    def _on_disconnect(self, conn, clean: bool) -> None:
        if clean or conn.worker_id is None or conn.superseded:
            return
        self.lost[conn.worker_id] = f"connection from {conn.peer} broke"
        for listener in self._listeners:
            listener(conn.worker_id)

    @property
    def dropped(self) -> dict:
        return self.server.stats["dropped"]

    def close(self, linger: float = 2.0) -> None:
        """Close, after waiting up to ``linger`` s for the peers to hang up: a peer may still be
        reading the acknowledgement of its last frame (close your own clients first)."""
        deadline = time.monotonic() + linger
        while self.server.stats["active"] and time.monotonic() < deadline:
            time.sleep(0.005)
        self.server.close(timeout=2.0)


class PeerGroup:
    """Clients to the other workers' endpoints, and the table of where they are."""

    def __init__(self, ctx: WorkerContext, endpoint: PeerEndpoint,
                 connect_timeout: Optional[float] = None, io_timeout: Optional[float] = None):
        self.ctx, self.endpoint = ctx, endpoint
        self.connect_timeout = ctx.connect_timeout if connect_timeout is None else connect_timeout
        self.io_timeout = ctx.round_timeout if io_timeout is None else io_timeout
        self.table: dict[int, str] = {}
        self.finished: set[int] = set()      # workers that already finished training
        self._clients: dict[int, Client] = {}
        self.bytes_out = self.bytes_in = 0   # payload bytes of requests sent / replies received

    def meet(self, wait_for_all: bool, required: bool = True) -> dict[int, str]:
        """Publish this endpoint and learn the others': through the barrier stage when there is
        one, else through the coordinator, waiting (up to ``connect_timeout``) until every
        worker has registered or finished when ``wait_for_all``. A timeout is an error when
        ``required``, else a warning (asynchronous peers go on with those that came)."""
        me = self.ctx.worker
        if self.ctx.barrier is not None:
            rows = self.ctx.barrier.allGather(json.dumps({"worker": me,
                                                          "endpoint": self.endpoint.address}))
            self.table = {int(r["worker"]): r["endpoint"] for r in map(json.loads, rows)}
            return self.table
        deadline = time.monotonic() + self.ctx.connect_timeout
        while True:
            self.refresh()
            missing = set(range(self.ctx.num_workers)) - set(self.table) - self.finished
            if not wait_for_all or not missing:
                return self.table
            if time.monotonic() > deadline:
                message = (f"worker {me}: workers {sorted(missing)} did not register their peer "
                           f"endpoints within {self.ctx.connect_timeout:g} s (more workers than "
                           "free task slots?)")
                if required:
                    raise PeerLostError(message)
                log.warning("%s; going on with the peers that came", message)
                return self.table
            time.sleep(0.05)

    def refresh(self) -> dict[int, str]:
        """Ask the coordinator where the live peers are now (a retried task has a new address)."""
        reply = self.ctx.control.request(messages.PEERS).payload
        if reply.get("failure"):
            raise PeerLostError(reply["failure"])
        table = {int(w): a for w, a in reply["peers"].items() if isinstance(a, str)}
        self.finished = {int(w) for w in reply.get("done", [])}
        for w in list(self._clients):
            if table.get(w) != self.table.get(w):
                self.drop(w)
        self.table = table
        return table

    def client(self, peer: int) -> Client:
        client = self._clients.get(peer)
        if client is None:
            where = self.table.get(peer)
            if where is None:
                raise PeerLostError(f"worker {self.ctx.worker}: peer worker {peer} has no "
                                    "registered endpoint (lost, or not started yet)")
            host, port = where.rsplit(":", 1)
            client = Client(host, int(port), self.ctx.secret, self.ctx.worker,
                            connect_timeout=self.connect_timeout, io_timeout=self.io_timeout,
                            role=f"peer worker {peer}", hint=PEER_HINT)
            self._clients[peer] = client
        return client

    def request(self, peer: int, op: int, payload: np.ndarray, aux: int = 0):
        """One request to ``peer``; a broken connection raises :class:`PeerLostError` naming it."""
        return self.request_many(peer, op, [payload], [aux])[0]

    def request_many(self, peer: int, op: int, payloads: list[np.ndarray], auxes: list[int]):
        """Pipelined requests to ``peer`` (sent back to back, replies read after)."""
        try:
            replies = self.client(peer).request_many(op, payloads, auxes)
        except TransportError as exc:
            self.drop(peer)
            raise PeerLostError(f"worker {self.ctx.worker}: peer worker {peer} at "
                                f"{self.table.get(peer)} failed: {exc}") from exc
        self.bytes_out += sum(payload_size(p) for p in payloads)
        self.bytes_in += sum(payload_size(r.payload) for r in replies)
        return replies

    def drop(self, peer: int) -> None:
        client = self._clients.pop(peer, None)
        if client is not None:
            client.close()

    def close(self) -> None:
        for peer in list(self._clients):
            self.drop(peer)


class Rounds:
    """Synchronous rounds between peers. A frame of round k waits until this worker has opened
    round k (then ``apply(frame)`` folds it in); the worker waits until it got what it expects.
    A lost peer or the coordinator's failure ends every wait with :class:`PeerLostError`."""

    def __init__(self, timeout: float):
        self.timeout = float(timeout)
        self._cond = threading.Condition()
        self._round = -1
        self._apply: Optional[Callable] = None
        self._target: Optional[Callable] = None
        self._received = 0
        self.failure: Optional[str] = None

    def open(self, round_: int, apply: Callable, target: Optional[Callable] = None) -> None:
        """Open round ``round_``: ``apply(frame)`` folds each frame in; ``target(aux, nbytes)``,
        when given, says where a frame's payload may be received directly."""
        with self._cond:
            self._round, self._apply, self._target, self._received = round_, apply, target, 0
            self._cond.notify_all()

    def _wait_open(self, round_: int) -> None:
        if not self._cond.wait_for(lambda: self._round >= round_ or self.failure,
                                   timeout=self.timeout):
            raise PeerLostError(f"round {round_} never opened here within {self.timeout:g} s")
        if self.failure:
            raise PeerLostError(self.failure)
        if self._round != round_:
            raise ValueError(f"frame of round {round_} arrived during round {self._round}")

    def target(self, round_: int, aux: int, nbytes: int):
        """Connection side, before the payload is read: where it may land (None: a buffer)."""
        with self._cond:
            self._wait_open(round_)
            return self._target(aux, nbytes) if self._target is not None else None

    def deliver(self, round_: int, frame) -> None:
        """Handler side: fold ``frame`` into round ``round_`` once it is open."""
        with self._cond:
            self._wait_open(round_)
            self._apply(frame)
            self._received += 1
            self._cond.notify_all()

    def wait(self, count: int, check: Callable[[], None], from_whom: str) -> None:
        """Worker side: wait until ``count`` frames of the open round arrived; ``check()`` runs
        every second of waiting (it raises when the run failed elsewhere)."""
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while self._received < count and not self.failure:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PeerLostError(f"no data from {from_whom} for {self.timeout:g} s "
                                        "(round_timeout=): the peer is stuck or lost")
                if not self._cond.wait(min(1.0, left)):
                    self._cond.release()
                    try:
                        check()
                    finally:
                        self._cond.acquire()
            if self.failure:
                raise PeerLostError(self.failure)

    def fail(self, reason: str) -> None:
        with self._cond:
            self.failure = self.failure or reason
            self._cond.notify_all()


def reply_buffer(conn, like: np.ndarray) -> np.ndarray:
    """A per-connection float32 buffer for replies (sent zero-copy after the handler returns)."""
    buf = conn.state.get("reply")
    if buf is None or buf.shape != like.shape:
        buf = conn.state["reply"] = np.empty_like(like)
    return buf


def ack(frame) -> Reply:
    return Reply(frame.op)


class PeerExchange(Exchange):
    """Base of the exchanges between workers: binds this worker's endpoint at ``open`` (so the
    coordinator learns its address at HELLO) and closes it, and its clients, at ``close``."""

    run_model = MEAN

    def handlers(self) -> dict[int, Callable]:
        """Peer ops this exchange serves: {op: handler(conn, frame) -> Reply}."""
        return {}

    #: seconds to reach a peer, and to wait for its reply (None: the run's connect and round
    #: timeouts); asynchronous exchanges give up on a peer sooner and try another
    peer_timeouts: tuple[Optional[float], Optional[float]] = (None, None)
    #: seconds to wait at the end for peers to read their last acknowledgement (synchronous
    #: exchanges; an asynchronous peer's call to a closed endpoint is just skipped)
    linger = 2.0

    def open(self) -> None:
        self.peer_endpoint = PeerEndpoint(self.worker, self.handlers())
        self.group = PeerGroup(self.worker, self.peer_endpoint, *self.peer_timeouts)

    def stop_serving(self) -> None:
        if self.peer_endpoint is not None:
            self.stats.bytes_sent = self.group.bytes_out + self.peer_endpoint.bytes_out
            self.stats.bytes_received = self.group.bytes_in + self.peer_endpoint.bytes_in
            self.group.close()
            self.peer_endpoint.close(self.linger)
            self.peer_endpoint = None

    def close(self) -> None:
        self.stop_serving()
