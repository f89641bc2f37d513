"""A new connection's handshake on a :class:`~distkeras.transport.server.FrameServer`: TLS
(optional) and mutual HMAC authentication under one deadline, then admission (its worker slot,
replacing an older connection of the same worker). Nothing reaches a handler before it succeeds;
a failure is counted as a dropped connection and, where the peer deserves an answer, answered
with an ERROR frame.

Example (what the server does for every accepted socket)::

    io = handshake(server, conn)          # a FrameIO with the session keys, or None
"""
from __future__ import annotations

import hmac
import logging
import secrets
import socket
import ssl
import time
from typing import Optional

from .admission import BUSY
from .errors import ProtocolError
from .protocol import (ERR_AUTH, ERR_FULL, ERR_HANDLER, MAC_SIZE, NONCE_SIZE, OP_AUTH,
                       OP_AUTH_OK, OP_CHALLENGE, OP_ERROR, FrameIO, PeerClosed, auth_mac,
                       op_name, server_mac, session_key, shutdown_quietly, tls_accept)

log = logging.getLogger(__name__)
MAX_AUTH_PAYLOAD = 1024


class _Refused(Exception):
    """The handshake ends here: ``reason`` is counted as dropped, ``reply`` (code, message) sent
    to the peer when given."""

    def __init__(self, reason: str, detail: Optional[str],
                 reply: Optional[tuple[int, str]] = None):
        super().__init__(detail or reason)
        self.reason, self.detail, self.reply = reason, detail, reply


def handshake(server, conn) -> Optional[FrameIO]:
    """Authenticate and admit ``conn``; its session-keyed FrameIO, or None (counted)."""
    deadline = time.monotonic() + server.handshake_timeout
    io = None
    try:
        if server.ssl_context is not None:
            conn.sock = tls_accept(server.ssl_context, conn.sock, deadline)
        io = FrameIO(conn.sock, server.max_payload)
        wid, nonce, client_nonce = _authenticate(server, io, conn, deadline)
        _admit(server, io, conn, wid)
        io.send(OP_AUTH_OK, worker_id=wid, payload=server_mac(server.secret, client_nonce))
        io.start_session(session_key(server.secret, nonce, client_nonce, wid), server=True)
        conn.sock.settimeout(None)  # handlers and training steps may take arbitrarily long
    except _Refused as refused:
        server.count_drop(conn, refused.reason, refused.detail)
        if refused.reply is not None and io is not None:
            try:
                io.send(OP_ERROR, aux=refused.reply[0], payload={"error": refused.reply[1]})
            except OSError:         # the peer is gone already: nothing more to tell it
                pass
        return None
    except (ProtocolError, PeerClosed, socket.timeout, TimeoutError, ssl.SSLError,
            OSError) as exc:
        _failed(server, conn, exc)
        return None
    conn.worker_id, conn.authenticated = wid, True
    server.count_worker(wid)
    log.debug("worker %d authenticated from %s", wid, conn.peer)
    return io


def _authenticate(server, io: FrameIO, conn, deadline: float) -> tuple[int, bytes, bytes]:
    """Challenge, then check the AUTH frame's HMAC: (worker id, nonce, client nonce)."""
    nonce = secrets.token_bytes(NONCE_SIZE)
    conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
    io.send(OP_CHALLENGE, payload=nonce)
    op, _f, dtype, wid, _s, _a, length = io.recv_header(deadline)
    if op != OP_AUTH:
        raise _Refused("before_auth", f"{op_name(op)} frame before authentication")
    if length > MAX_AUTH_PAYLOAD:
        raise _Refused("oversized", f"{length}-byte AUTH frame")
    body = io.recv_payload(dtype, length, deadline)
    if not isinstance(body, bytes) or len(body) != MAC_SIZE + NONCE_SIZE:
        raise _Refused("bad_auth", "malformed AUTH payload")
    mac, client_nonce = body[:MAC_SIZE], body[MAC_SIZE:]
    if not hmac.compare_digest(mac, auth_mac(server.secret, nonce, wid, client_nonce)):
        server.count_auth_failure()
        raise _Refused("bad_hmac", f"authentication failed for worker {wid}",
                       (ERR_AUTH, "authentication failed"))
    if server.num_workers is not None and not 0 <= wid < server.num_workers:
        raise _Refused("bad_worker_id", f"worker id {wid}",
                       (ERR_HANDLER, f"worker id {wid} outside 0..{server.num_workers - 1}"))
    return wid, nonce, client_nonce


def _admit(server, io: FrameIO, conn, wid: int) -> None:
    """A worker slot for ``conn``; the worker's older connections it replaces are shut down
    (outside the admission lock: nothing there waits on a socket)."""
    refusal, replaced = server.admission.admit(conn, wid)
    if refusal is not None:
        code, message, reason = refusal
        raise _Refused(reason, None, (code, message))
    for old in replaced:
        shutdown_quietly(old.sock)
        server.count_drop(old, "superseded", None)
        log.info("worker %d connected again from %s: its connection from %s is replaced", wid,
                 conn.peer, old.peer)


def _failed(server, conn, exc: BaseException) -> None:
    """Count a handshake that broke off; an evicted connection is told to retry."""
    if isinstance(exc, ProtocolError):
        server.count_drop(conn, exc.reason, str(exc))
    elif isinstance(exc, PeerClosed):
        if conn.evicted:
            server.count_drop(conn, "evicted", "oldest of the pending connections")
            _refuse(conn, ERR_FULL, BUSY)
        else:
            server.count_drop(conn, "truncated", f"closed during handshake: {exc}")
    elif isinstance(exc, (socket.timeout, TimeoutError)):
        server.count_drop(conn, "handshake_timeout",
                          f"no authentication within {server.handshake_timeout:g} s")
    elif isinstance(exc, ssl.SSLError):
        server.count_drop(conn, "tls", str(exc))
    else:
        server.count_drop(conn, "handshake_io", str(exc))


def _refuse(conn, code: int, message: str) -> None:
    try:
        conn.sock.settimeout(1.0)
        FrameIO(conn.sock).send(OP_ERROR, aux=code, payload={"error": message})
    except OSError:
        pass
