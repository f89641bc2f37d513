"""Who gets a connection slot on a :class:`~distkeras.transport.server.FrameServer`, workers first,
and the :class:`Connection` record each one is.

Connections that have not authenticated yet live in their own small budget (``max_pending``,
``max_pending_per_host`` per peer address); when it is full the *oldest* is evicted, so idle or
slowloris connections can delay a worker's handshake by a retry at most and never take the
slots of authenticated workers (``max_connections``).

**Rejoin by the newest proof.** A worker holds at most ``per_worker`` connections (1 for the
driver's services; a few for a peer endpoint, where a worker may keep one client per channel).
A connection that authenticates for worker id w beyond that *replaces* w's oldest: a host that
crashed or dropped off the network sent no FIN, so its old socket looks alive forever, and the
retried task must be served all the same. The replaced connection is shut down (its frame in
flight, if any, is dropped) and reported as superseded, not as a lost worker.

Nothing here blocks or waits on a socket while the lock is held: shutting the replaced
connection down is the caller's job, after ``admit`` returns.

Example::

    admission = Admission(max_connections=256, max_pending=128, max_pending_per_host=64)
    evicted = admission.arrive(conn)          # close ``evicted`` (if any): it waited longest
    refusal, replaced = admission.admit(conn, worker)   # refusal: None or (code, message, reason)
    for old in replaced: old.sock.shutdown(socket.SHUT_RDWR)
    admission.leave(conn)
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any, Optional

from .protocol import ERR_FULL

BUSY = "server busy with pending connections; retry"


class Connection:
    """One client connection as seen by the handler.

    ``state`` is a private dict for the handler (e.g. a reply buffer, the worker's last clock).
    Counters: ``frames``, ``bytes_in``, ``bytes_out``, ``handler_seconds``.
    """

    def __init__(self, sock: socket.socket, peer: Any):
        self.sock = sock
        self.peer = peer
        self.worker_id: Optional[int] = None
        self.authenticated = False
        self.state: dict = {}
        self.frames = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.handler_seconds = 0.0
        self.connected_at = time.time()
        self.thread: Optional[threading.Thread] = None
        self.evicted = False          # pushed out of the pending budget by newer connections
        self.superseded = False       # replaced by a newer connection of the same worker

    def __repr__(self) -> str:
        return f"Connection(worker_id={self.worker_id}, peer={self.peer})"


class Admission:
    """The pending budget, the authenticated slots and the worker ids of one server."""

    def __init__(self, max_connections: int = 256, max_pending: int = 128,
                 max_pending_per_host: int = 64, per_worker: int | None = None):
        self.max_connections = int(max_connections)
        self.max_pending, self.max_pending_per_host = int(max_pending), int(max_pending_per_host)
        self.per_worker = per_worker          # None: no limit
        self._lock = threading.Lock()
        self._pending: dict[Any, None] = {}         # in the handshake, oldest first
        self._admitted: set = set()
        self._by_worker: dict[int, list] = {}       # each worker's connections, oldest first

    def arrive(self, conn) -> Optional[Any]:
        """Count a new connection as pending; returns the one it pushes out of the budget (its
        ``evicted`` is set: close its reading side, it answers "busy")."""
        host = _host(conn.peer)
        with self._lock:
            same_host = [c for c in self._pending if _host(c.peer) == host]
            if len(same_host) >= self.max_pending_per_host:
                evict = same_host[0]
            elif len(self._pending) >= self.max_pending:
                evict = next(iter(self._pending))
            else:
                evict = None
            if evict is not None:
                self._pending.pop(evict, None)
                evict.evicted = True
            self._pending[conn] = None
        return evict

    def admit(self, conn, worker: int) -> tuple[Optional[tuple[int, str, str]], list]:
        """Move an authenticated connection to the workers' slots. Returns ``(refusal,
        replaced)``: ``refusal`` is (error code, message, reason counted as dropped) when it
        cannot be served, else None; ``replaced`` the worker's older connections it takes the
        place of (marked ``superseded``: shut them down)."""
        with self._lock:
            self._pending.pop(conn, None)
            if conn.evicted:          # evicted while its AUTH was being checked: retry
                return (ERR_FULL, BUSY, "evicted"), []
            mine = self._by_worker.setdefault(worker, [])
            excess = 0 if self.per_worker is None else len(mine) + 1 - self.per_worker
            replaced = mine[:max(0, excess)]
            if len(self._admitted) - len(replaced) >= self.max_connections:
                return (ERR_FULL, f"server full ({self.max_connections} connections)",
                        "too_many_connections"), []
            for old in replaced:
                mine.remove(old)
                self._admitted.discard(old)
                old.superseded = True
            self._admitted.add(conn)
            mine.append(conn)
        return None, replaced

    def leave(self, conn) -> None:
        with self._lock:
            self._admitted.discard(conn)
            self._pending.pop(conn, None)
            for mine in self._by_worker.values():     # admitted, whether or not its
                if conn in mine:                      # handshake then completed
                    mine.remove(conn)
                    break

    def connections(self) -> list:
        """Every connection, pending or admitted (to close them)."""
        with self._lock:
            return list(self._admitted) + list(self._pending)

    def counts(self) -> tuple[int, int]:
        """(admitted, pending)."""
        with self._lock:
            return len(self._admitted), len(self._pending)


def _host(peer: Any) -> Any:
    return peer[0] if isinstance(peer, tuple) and peer else peer
