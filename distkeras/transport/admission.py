"""Who gets a connection slot on a :class:`~distkeras.transport.server.FrameServer`: workers first.

Connections that have not authenticated yet live in their own small budget (``max_pending``,
``max_pending_per_host`` per peer address); when it is full the *oldest* is evicted, so idle or
slowloris connections can delay a worker's handshake by a retry at most and never take the
slots of authenticated workers (``max_connections``). With ``unique_workers`` a second live
connection claiming a worker id is refused; it replaces the first once that one is gone.

Example::

    admission = Admission(max_connections=256, max_pending=128, max_pending_per_host=64)
    evicted = admission.arrive(conn)          # close ``evicted`` (if any): it waited longest
    refusal = admission.admit(conn, worker)   # None, or (error code, message, reason)
    admission.leave(conn)
"""
from __future__ import annotations

import socket
import threading
from typing import Any, Optional

from .protocol import ERR_FULL, ERR_HANDLER

BUSY = "server busy with pending connections; retry"


class Admission:
    """The pending budget, the authenticated slots and the worker ids of one server."""

    def __init__(self, max_connections: int = 256, max_pending: int = 128,
                 max_pending_per_host: int = 64, unique_workers: bool = False):
        self.max_connections = int(max_connections)
        self.max_pending, self.max_pending_per_host = int(max_pending), int(max_pending_per_host)
        self.unique_workers = unique_workers
        self._lock = threading.Lock()
        self._pending: dict[Any, None] = {}         # in the handshake, oldest first
        self._admitted: set = set()
        self._by_worker: dict[int, Any] = {}

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

    def admit(self, conn, worker: int) -> Optional[tuple[int, str, str]]:
        """Move an authenticated connection to the workers' slots; returns (error code,
        message, reason counted as dropped) when it cannot be served."""
        with self._lock:
            self._pending.pop(conn, None)
            if conn.evicted:          # evicted while its AUTH was being checked: retry
                return ERR_FULL, BUSY, "evicted"
            if len(self._admitted) >= self.max_connections:
                return (ERR_FULL, f"server full ({self.max_connections} connections)",
                        "too_many_connections")
            old = self._by_worker.get(worker) if self.unique_workers else None
            if old is not None and _alive(old.sock):
                return (ERR_HANDLER, f"worker id {worker} already has a live connection (from "
                                     f"{old.peer}); a second one is refused", "duplicate_worker")
            self._admitted.add(conn)
            self._by_worker[worker] = conn
        return None

    def leave(self, conn) -> None:
        with self._lock:
            self._admitted.discard(conn)
            self._pending.pop(conn, None)
            if self._by_worker.get(conn.worker_id) is conn:
                del self._by_worker[conn.worker_id]

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


def _alive(sock: socket.socket) -> bool:
    """Is this connection still open (no EOF or error waiting on it)? Non-blocking peek."""
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        return data != b""
    except (BlockingIOError, InterruptedError, ValueError):   # ValueError: TLS cannot peek
        return True
    except OSError:
        return False
