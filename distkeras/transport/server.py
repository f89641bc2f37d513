"""Threaded frame server: authenticates workers and hands their frames to an application handler.

The transport knows nothing about training: an algorithm (e.g. the ADAG centre-variable rule)
is a *handler* ``handler(conn, frame) -> Reply | None`` called for every application frame
(op >= 16). Each connection is served by its own daemon thread, so a handler may block (a
synchronous round waits for the other workers) without stalling anyone else.

Malformed or unauthenticated input never reaches the handler: the frame is dropped, counted
in ``stats["dropped"][reason]``, and that connection is closed (a byte stream cannot resync).

Workers are served first (``admission.py``): connections still in the handshake have their own
budget, the oldest evicted first, and a short deadline. A worker that connects again (a retried
task, a host back from a crash that never said goodbye) is served at once: its newest
authenticated connection replaces the oldest beyond ``per_worker`` (one with
``unique_workers``), whose frame in flight is dropped. A frame whose header arrived must complete
within ``frame_timeout`` (plus time for its size).

Example::

    centre = np.zeros(n, np.float32); lock = threading.Lock()
    def handler(conn, frame):
        with lock:
            centre += frame.payload
            out = conn.state.setdefault("reply", np.empty_like(centre)); out[:] = centre
        return Reply(op=frame.op, payload=out)          # sent outside the lock, zero-copy

    with FrameServer(handler, secret) as server:
        host, port = server.address                     # ship (host, port, secret) to executors
"""
from __future__ import annotations

import errno
import logging
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from typing import Any, Callable, Optional

from .admission import Admission, Connection
from .errors import BindError, ProtocolError
from .handshake import handshake
from .protocol import (DEFAULT_MAX_PAYLOAD, DT_F32, ERR_HANDLER, HEADER_SIZE, OP_BYE, OP_ERROR,
                       OP_FIRST_APP, OP_PING, SOCKET_BUFFER, Frame, FrameIO, PeerClosed, Reply,
                       op_name, shutdown_quietly, tune_socket)

log = logging.getLogger(__name__)

Handler = Callable[["Connection", Frame], Optional[Reply]]


class FrameServer:
    """Authenticated, thread-per-connection frame server; a context manager.

    Args:
        handler: called as ``handler(conn, frame)`` for every application frame (op >= 16);
            returns a :class:`Reply` or None (None sends an empty reply echoing the op).
            ``frame.payload`` (float32) is a view valid until the handler returns.
        secret: the per-run shared secret (e.g. ``secrets.token_bytes(32)``).
        host, port: where to listen; ``port=0`` picks a free ephemeral port (see ``address``).
        ssl_context: optional server-side :class:`ssl.SSLContext` (TLS on every connection).
        max_payload: larger declared payloads are rejected before any allocation.
        handshake_timeout: seconds a new connection has to finish TLS + authentication.
        on_disconnect: ``on_disconnect(conn, clean)`` after an authenticated connection ends;
            ``clean`` is True when the client said BYE. ``conn.superseded`` is True when a
            newer connection of the same worker replaced it (the worker is not lost).
        max_connections: further connections are refused with an ERROR frame.
        payload_target: ``payload_target(conn, op, aux, nbytes)`` for a float32 frame whose
            header has arrived; may return a C-contiguous float32 array of exactly that size to
            receive the payload straight into (e.g. its place in a ring all-reduce), or None
            for the connection's own buffer.
        num_workers: when given, an authenticated worker id outside ``0..num_workers-1`` is
            refused at the handshake (an ERROR frame naming the valid range).
        max_pending, max_pending_per_host: budget of connections still in the handshake.
        unique_workers: one connection per worker id (``per_worker=1``).
        per_worker: connections a worker id may hold; a newer one replaces its oldest
            (None: no limit).
        name: what the server is, for logs and errors ("the coordinator", ...).
        frame_timeout: seconds (plus 1 s per 20 MB) a started frame has to arrive in full.
    """

    def __init__(self, handler: Handler, secret: bytes, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: Optional[ssl.SSLContext] = None,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, handshake_timeout: float = 2.0,
                 on_disconnect: Optional[Callable[[Connection, bool], None]] = None,
                 max_connections: int = 256, socket_buffer: int = SOCKET_BUFFER,
                 payload_target: Optional[Callable[[Connection, int, int, int],
                                                   Optional[Any]]] = None,
                 num_workers: Optional[int] = None, max_pending: int = 128,
                 max_pending_per_host: int = 64, unique_workers: bool = False,
                 frame_timeout: float = 30.0, per_worker: Optional[int] = None,
                 name: str = "frame server"):
        if not isinstance(secret, (bytes, bytearray)) or len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes (use secrets.token_bytes(32))")
        self.handler = handler
        self.name = name
        self.secret = bytes(secret)
        self.host, self.port = host, int(port)
        self.ssl_context = ssl_context
        self.max_payload = int(max_payload)
        self.handshake_timeout = float(handshake_timeout)
        self.on_disconnect = on_disconnect
        self.max_connections = int(max_connections)
        self.admission = Admission(max_connections, max_pending, max_pending_per_host,
                                   1 if unique_workers else per_worker)
        self.socket_buffer = int(socket_buffer)
        self.payload_target = payload_target
        self.num_workers = num_workers
        self.frame_timeout = float(frame_timeout)
        self._lock = threading.Lock()
        self._warned: dict[str, float] = {}
        self._suppressed: Counter = Counter()
        self._dropped: Counter = Counter()
        self._workers: dict[int, Counter] = {}
        self._n_connections = 0
        self._auth_failures = 0
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        self._closing = threading.Event()
        self._address: Optional[tuple[str, int]] = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FrameServer":
        """Bind, listen and start accepting; raises :class:`BindError` if the port is taken."""
        if self._listener is not None:
            return self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tune_socket(sock, self.socket_buffer)  # inherited by accepted sockets
            sock.bind((self.host, self.port))
            sock.listen(min(self.max_connections, socket.SOMAXCONN))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            where = f"{self.host}:{self.port}"
            if exc.errno == errno.EADDRINUSE:
                msg = (f"cannot bind the {self.name} to {where}: port {self.port} is already "
                       "in use. Use port=0 (an ephemeral port) or pick another ps_port=.")
            elif exc.errno == errno.EADDRNOTAVAIL:
                msg = (f"cannot bind the {self.name} to {where}: {self.host} is not an "
                       "address of this machine. Set spark.driver.host (or ps_host=) to one.")
            else:
                msg = f"cannot bind the {self.name} to {where}: {exc.strerror or exc}"
            raise BindError(exc.errno, msg) from exc
        self._listener = sock
        self._address = sock.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._closing.clear()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name=f"distkeras-accept-{self._address[1]}")
        self._accept_thread.start()
        log.info("%s listening on %s:%d%s", self.name, *self._address,
                 " (TLS)" if self.ssl_context else "")
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection, join threads (bounded by ``timeout``)."""
        if self._listener is None:
            return
        self._closing.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        self._listener.close()
        conns = self.admission.connections()
        for conn in conns:
            shutdown_quietly(conn.sock)
        for conn in conns:
            if conn.thread is not None:
                conn.thread.join(max(0.0, deadline - time.monotonic()))
        for conn in conns:  # threads stuck in a blocking handler: close their sockets anyway
            conn.sock.close()
        for s in (self._wake_r, self._wake_w):
            s.close()
        self._listener = None
        log.info("%s on %s:%d closed", self.name, *self._address)

    def __enter__(self) -> "FrameServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound; the port is the ephemeral one when ``port=0``."""
        if self._address is None:
            raise RuntimeError("server not started (use `with FrameServer(...)` or start())")
        return self._address

    @property
    def stats(self) -> dict:
        """Counters: connections (total), active, auth_failures, dropped by reason, per worker."""
        active, pending = self.admission.counts()
        with self._lock:
            return {"connections": self._n_connections, "active": active, "pending": pending,
                    "auth_failures": self._auth_failures, "dropped": dict(self._dropped),
                    "workers": {w: dict(c) for w, c in self._workers.items()}}

    # ------------------------------------------------------------------ accept
    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._closing.is_set():
                for key, _ in sel.select(timeout=1.0):
                    if key.fileobj is self._wake_r or self._closing.is_set():
                        return
                    try:
                        sock, peer = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        log.warning("accept failed: %s", exc)
                        continue
                    self._start_connection(sock, peer)
        finally:
            sel.close()

    def _start_connection(self, sock: socket.socket, peer: Any) -> None:
        sock.setblocking(True)
        tune_socket(sock, 0)
        conn = Connection(sock, peer)
        with self._lock:
            self._n_connections += 1
        evict = self.admission.arrive(conn)
        if evict is not None:         # its thread sees EOF, answers "busy" and closes
            shutdown_quietly(evict.sock, socket.SHUT_RD)
        conn.thread = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                       name=f"distkeras-conn-{peer}")
        conn.thread.start()

    # ------------------------------------------------------------------ per connection
    def _serve(self, conn: Connection) -> None:
        clean = False
        try:
            io = handshake(self, conn)
            if io is not None:
                clean = self._frame_loop(conn, io)
        except Exception:  # never let a connection thread die silently
            log.exception("unexpected error on connection %s", conn)
        finally:
            shutdown_quietly(conn.sock)
            conn.sock.close()
            self.admission.leave(conn)
            if conn.authenticated and self.on_disconnect is not None:
                try:
                    self.on_disconnect(conn, clean)
                except Exception:
                    log.exception("on_disconnect raised for %s", conn)

    def _frame_loop(self, conn: Connection, io: FrameIO) -> bool:
        """Serve frames until BYE (returns True), EOF or garbage (returns False)."""
        wc = self._workers[conn.worker_id]
        io.wait_in_kernel(self.frame_timeout)
        while not self._closing.is_set():
            try:
                frame, nin = self._recv(conn, io)
            except ProtocolError as exc:
                self.count_drop(conn, exc.reason, str(exc))
                return False
            except PeerClosed as exc:
                if not exc.at_boundary:
                    self.count_drop(conn, "truncated", str(exc))
                return False
            except (socket.timeout, TimeoutError):
                self.count_drop(conn, "slow_frame", f"a frame did not complete within its deadline "
                                               f"({self.frame_timeout:g} s + 1 s per 20 MB)")
                return False
            except OSError:
                return False
            if frame.worker_id != conn.worker_id:
                self.count_drop(conn, "worker_id_mismatch", f"frame claims worker {frame.worker_id}")
                return False
            if conn.superseded:    # a newer connection speaks for this worker: not applied
                return False
            if frame.op == OP_BYE:
                return True
            if frame.op < OP_FIRST_APP and frame.op != OP_PING:
                self.count_drop(conn, "bad_op", f"transport op {op_name(frame.op)} after auth")
                return False
            t0 = time.perf_counter()
            if frame.op == OP_PING:
                reply, err = Reply(OP_PING, aux=frame.aux), None
            else:
                reply, err = self._call_handler(conn, frame)
            dt = time.perf_counter() - t0
            try:
                if err is None:
                    try:
                        nout = io.send(reply.op, worker_id=conn.worker_id, seq=frame.seq,
                                       aux=reply.aux, flags=reply.flags, payload=reply.payload)
                    except (TypeError, ValueError) as exc:  # nothing sent yet
                        log.error("handler returned an unsendable reply: %s", exc)
                        err = f"{type(exc).__name__}: invalid reply from handler: {exc}"
                if err is not None:
                    nout = io.send(OP_ERROR, worker_id=conn.worker_id, seq=frame.seq,
                                   aux=ERR_HANDLER, payload={"error": err})
            except (socket.timeout, TimeoutError):
                self.count_drop(conn, "slow_reader", f"the worker did not read its reply within "
                                                     f"{self.frame_timeout:g} s + 1 s per 20 MB")
                return False
            except OSError:
                return False
            conn.frames += 1
            conn.bytes_in += nin
            conn.bytes_out += nout
            conn.handler_seconds += dt
            with self._lock:
                wc["frames"] += 1
                wc["bytes_in"] += nin
                wc["bytes_out"] += nout
                wc["handler_seconds"] += dt
                if err is not None:
                    wc["errors"] += 1
        return False

    def _recv(self, conn: Connection, io: FrameIO) -> tuple[Frame, int]:
        if not io.waits_in_kernel:    # between frames a worker may compute for as long as it likes
            conn.sock.settimeout(None)
        op, flags, dtype, wid, seq, aux, length = io.recv_header()
        deadline = time.monotonic() + self.frame_timeout + length / 20e6
        out = None
        if self.payload_target is not None and dtype == DT_F32 and op >= OP_FIRST_APP \
                and wid == conn.worker_id:
            try:
                out = self.payload_target(conn, op, aux, length)
            except Exception:  # noqa: BLE001 - the handler reports it; keep the stream in sync
                out = None
        payload = io.recv_payload(dtype, length, deadline, out)
        return Frame(op, flags, wid, seq, aux, payload), HEADER_SIZE + length + io.tag_size

    def _call_handler(self, conn: Connection, frame: Frame) -> tuple[Optional[Reply], Optional[str]]:
        try:
            reply = self.handler(conn, frame)
            if reply is None:
                reply = Reply(frame.op)
            elif not isinstance(reply, Reply):
                raise TypeError(f"handler returned {type(reply).__name__}, expected Reply or None")
            return reply, None
        except Exception as exc:
            if conn.superseded:       # replaced while its frame waited: dropped, as it should be
                log.info("%s of worker %s's replaced connection dropped: %s", op_name(frame.op),
                         conn.worker_id, exc)
            else:
                log.exception("handler failed on %s from worker %s", op_name(frame.op),
                              conn.worker_id)
            return None, f"{type(exc).__name__}: {exc}"

    def count_drop(self, conn: Connection, reason: str, detail: Optional[str]) -> None:
        """Count a dropped connection; with a ``detail``, warn at most once per reason every
        few seconds (a flood must not flood the log too)."""
        now = time.monotonic()
        with self._lock:
            self._dropped[reason] += 1
            if detail is None:
                return
            if now - self._warned.get(reason, -WARN_INTERVAL) < WARN_INTERVAL:
                self._suppressed[reason] += 1
                return
            self._warned[reason] = now
            suppressed = self._suppressed.pop(reason, 0)
        more = f"; {suppressed} more like it since the last warning" if suppressed else ""
        log.warning("dropped connection from %s (worker %s): %s (%s)%s", conn.peer,
                    conn.worker_id, reason, detail, more)

    def count_auth_failure(self) -> None:
        with self._lock:
            self._auth_failures += 1

    def count_worker(self, worker: int) -> None:
        """A connection of ``worker`` authenticated."""
        with self._lock:
            self._workers.setdefault(worker, Counter())["connections"] += 1


WARN_INTERVAL = 5.0
