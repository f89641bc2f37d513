"""Worker-side client of the frame server: connect (with retries), authenticate, request/reply.

Runs inside Spark executors. Connection problems are reported with everything needed to fix
them (the address tried, for how long, from which executor host, and which setting to change)
because the usual cause is a driver address the executors cannot reach.

Example::

    with Client(host, port, secret, worker_id=TaskContext.get().partitionId()) as ps:
        centre = ps.request(OP_COMMIT, payload=delta, aux=clock).payload   # float32 view
        np.copyto(weights, centre)          # the view is valid until the next request
"""
from __future__ import annotations

import hmac
import logging
import secrets
import socket
import ssl
import time
from typing import Any, Optional

import numpy as np

from .errors import (AuthenticationError, ProtocolError, RemoteError, ServerBusyError,
                     TransportConnectionError, TransportError, TransportTimeoutError)
from .protocol import (ERR_AUTH, ERR_FULL, MAC_SIZE, NONCE_SIZE, OP_AUTH, OP_AUTH_OK, OP_BYE,
                       OP_CHALLENGE, OP_ERROR, SOCKET_BUFFER, Frame, FrameIO, Payload, PeerClosed,
                       auth_mac, server_mac, session_key, tune_socket)
from .tls import pinned_tls  # noqa: F401 - the client's side of TLS

log = logging.getLogger(__name__)


class Client:
    """One authenticated connection to a :class:`~distkeras.transport.server.FrameServer`.

    Args:
        host, port: the server address (``FrameServer.address`` on the driver).
        secret: the per-run secret shared with the server.
        worker_id: this worker's id (u32), bound to the connection by the HMAC handshake.
        connect_timeout: keep retrying (with backoff) for this many seconds, then raise
            :class:`TransportConnectionError`.
        io_timeout: seconds to wait for a reply (None = forever, e.g. synchronous rounds).
        ssl_context: client-side :class:`ssl.SSLContext` when the server uses TLS.
        handshake_timeout: seconds allowed for TLS + authentication once connected.
        role, hint: what the server is and how to fix an unreachable one, for error messages.

    A float32 reply payload is a view of this client's receive buffer, valid until the next
    :meth:`request`; pass ``out=`` to receive straight into your own float32 array instead.
    Not thread-safe: use one client per thread.
    """

    def __init__(self, host: str, port: int, secret: bytes, worker_id: int,
                 connect_timeout: float = 30.0, io_timeout: Optional[float] = None,
                 ssl_context: Optional[ssl.SSLContext] = None, handshake_timeout: float = 10.0,
                 max_payload: Optional[int] = None, socket_buffer: int = SOCKET_BUFFER,
                 role: str = "the server", hint: Optional[str] = None):
        if not 0 <= int(worker_id) < 2 ** 32:
            raise ValueError(f"worker_id must fit in a u32, got {worker_id}")
        self.host, self.port = host, int(port)
        self.secret = bytes(secret)
        self.worker_id = int(worker_id)
        self.io_timeout = io_timeout
        self.ssl_context = ssl_context
        self.role = role
        self.hint = hint or (f"Set spark.driver.host (or the trainer's ps_host=) to an address "
                             f"the executors can reach, and make sure port {self.port} is open "
                             f"(ps_port=).")
        self._seq = 0
        self._broken = False
        deadline = time.monotonic() + connect_timeout
        delay = 0.05
        while True:   # a busy server ("full", pending connections evicted) is retried
            self._sock = self._connect(max(0.0, deadline - time.monotonic()), socket_buffer)
            self._io = FrameIO(self._sock, **({"max_payload": max_payload} if max_payload else {}))
            try:
                self._authenticate(handshake_timeout)
                break
            except ServerBusyError:
                self._sock.close()
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 1.0)
            except BaseException:
                self._sock.close()
                raise
        if io_timeout is None or not self._io.wait_in_kernel(io_timeout):
            self._sock.settimeout(io_timeout)      # (TLS: a Python timeout on every call)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """Open, and in step with the server (a request can be made)."""
        return self._sock is not None and not self._broken

    # ------------------------------------------------------------------ connect
    def _connect(self, timeout: float, socket_buffer: int) -> socket.socket:
        t0 = time.monotonic()
        deadline = t0 + timeout
        delay, attempts, last = 0.05, 0, None
        while True:
            attempts += 1
            left = deadline - time.monotonic()
            try:
                sock = socket.create_connection((self.host, self.port),
                                                timeout=max(0.05, min(left, 10.0)))
                tune_socket(sock, socket_buffer)
                return sock
            except OSError as exc:
                last = exc
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(delay, left))
            delay = min(delay * 2, 1.0)
        raise TransportConnectionError(
            f"cannot reach {self.role} at {self.where} from executor host "
            f"{socket.gethostname()!r}: tried {attempts} times for {time.monotonic() - t0:.1f} s "
            f"(last error: {last}). {self.hint}")

    def _authenticate(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            if self.ssl_context is not None:
                self._sock.settimeout(timeout)
                self._sock = self.ssl_context.wrap_socket(self._sock, server_hostname=self.host)
                self._io = FrameIO(self._sock, self._io.max_payload)
            frame, _ = self._io.recv(deadline)
            if frame.op == OP_ERROR:
                self._raise_error(frame)
            if frame.op != OP_CHALLENGE or not isinstance(frame.payload, bytes) \
                    or len(frame.payload) != NONCE_SIZE:
                what = self.role.removeprefix("the ")
                raise AuthenticationError(f"{self.where} did not send a valid challenge: it is not a "
                                  f"distkeras {what} (or a different version)")
            server_nonce = frame.payload
            client_nonce = secrets.token_bytes(NONCE_SIZE)
            mac = auth_mac(self.secret, server_nonce, self.worker_id, client_nonce)
            self._sock.settimeout(max(0.01, deadline - time.monotonic()))
            self._io.send(OP_AUTH, worker_id=self.worker_id, payload=mac + client_nonce)
            frame, _ = self._io.recv(deadline)
            if frame.op == OP_ERROR:
                self._raise_error(frame)
            proof = frame.payload if isinstance(frame.payload, bytes) else b""
            if frame.op != OP_AUTH_OK or len(proof) != MAC_SIZE or \
                    not hmac.compare_digest(proof, server_mac(self.secret, client_nonce)):
                raise AuthenticationError(f"the server at {self.where} failed to prove it knows the "
                                  "secret: a different server is listening there")
            self._io.start_session(session_key(self.secret, server_nonce, client_nonce,
                                               self.worker_id), server=False)
        except (AuthenticationError, ServerBusyError):
            raise
        except RemoteError as exc:
            raise TransportConnectionError(f"{self.role} at {self.where} refused the "
                                    f"connection: {exc}") from None
        except PeerClosed:
            raise AuthenticationError(f"authentication with {self.where} failed (connection closed "
                              f"during the handshake): wrong secret, or a different server on "
                              f"{self.where}") from None
        except ProtocolError as exc:
            raise AuthenticationError(f"{self.where} spoke garbage during the handshake ({exc}): a "
                              "different server is listening there") from None
        except ssl.SSLError as exc:
            raise AuthenticationError(f"TLS handshake with {self.where} failed: {exc}") from None
        except (socket.timeout, TimeoutError):
            raise AuthenticationError(f"no authentication from {self.where} within {timeout:g} s: a "
                              "different server on that port, or a TLS mismatch") from None
        except OSError as exc:
            raise TransportConnectionError(f"connection to {self.where} failed during the handshake: "
                                    f"{exc}") from None

    def _raise_error(self, frame: Frame) -> None:
        msg = frame.payload.get("error", "") if isinstance(frame.payload, dict) else ""
        if frame.aux == ERR_AUTH:
            raise AuthenticationError(f"authentication with {self.where} failed: wrong secret, or a "
                              f"different server on {self.where}")
        if frame.aux == ERR_FULL:
            raise ServerBusyError(f"{self.role} at {self.where} is busy ({msg}) and did not take "
                              "the connection within the connect timeout")
        raise RemoteError(msg or "remote error without message")

    # ------------------------------------------------------------------ requests
    def request(self, op: int, payload: Payload = None, aux: int = 0, flags: int = 0,
                out: Optional[np.ndarray] = None) -> Frame:
        """Send one frame and wait for its reply.

        ``payload``: float32 ndarray (sent zero-copy), dict (JSON), bytes, or None.
        ``out``: optional C-contiguous float32 array receiving a float32 reply of the same size.
        Raises :class:`RemoteError` when the handler failed (the connection stays usable),
        :class:`TransportConnectionError` / :class:`TransportTimeoutError` when the connection broke.
        """
        if self._broken:
            raise TransportConnectionError(f"connection to {self.where} is broken or closed")
        self._seq += 1
        try:                    # request_many's steps for one frame (a commit's hot path)
            self._io.send(op, worker_id=self.worker_id, seq=self._seq, aux=aux, flags=flags,
                          payload=payload)
            frame, _ = self._io.recv(None if self.io_timeout is None or not self._io.waits_in_kernel
                                     else time.monotonic() + self.io_timeout, out=out)
        except Exception as exc:
            raise self._failure(exc) from None
        if frame.seq != self._seq:
            self._broken = True
            raise TransportConnectionError(f"reply out of sequence from {self.where}: "
                                           f"{frame.seq} != {self._seq}")
        if frame.op == OP_ERROR:
            self._raise_error(frame)
        return frame

    def request_many(self, op: int, payloads: list, auxes: list[int], flags: int = 0,
                     out: Optional[np.ndarray] = None) -> list[Frame]:
        """Send several frames back to back, then read their replies (a pipeline: the server
        works on frame i while frame i+1 travels). Replies must be small unless ``out`` is
        given for a single request; errors as :meth:`request`, after every reply is read."""
        if self._broken:
            raise TransportConnectionError(f"connection to {self.where} is broken or closed")
        first = self._seq + 1
        replies = []
        try:
            for payload, aux in zip(payloads, auxes):
                self._seq += 1
                self._io.send(op, worker_id=self.worker_id, seq=self._seq, aux=aux,
                              flags=flags, payload=payload)
            for i in range(len(payloads)):
                deadline = None if self.io_timeout is None or not self._io.waits_in_kernel \
                    else time.monotonic() + self.io_timeout
                frame, _ = self._io.recv(deadline, out=out)
                if frame.seq != first + i:
                    self._broken = True
                    raise TransportConnectionError(f"reply out of sequence from {self.where}: "
                                            f"{frame.seq} != {first + i}")
                replies.append(frame)
        except Exception as exc:
            raise self._failure(exc) from None
        for frame in replies:
            if frame.op == OP_ERROR:
                self._raise_error(frame)
        return replies

    def _failure(self, exc: Exception) -> Exception:
        """What a request raises for ``exc``; the connection is broken unless the stream is
        still in step (an ``out=`` mismatch: the reply was read)."""
        if isinstance(exc, ValueError) or not isinstance(
                exc, (PeerClosed, socket.timeout, TimeoutError, ProtocolError, OSError)):
            return exc
        self._broken = True
        if isinstance(exc, PeerClosed):
            return TransportConnectionError(f"{self.role} {self.where} closed the connection "
                                            f"({exc})")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return TransportTimeoutError(f"no reply from {self.where} within {self.io_timeout} s")
        if isinstance(exc, ProtocolError):
            return TransportConnectionError(f"bad frame from {self.where}: {exc}")
        return TransportConnectionError(f"connection to {self.where} failed: {exc}")

    def close(self) -> None:
        """Say BYE (a clean disconnect for the server) and close the socket; idempotent."""
        if self._sock is None:
            return
        if not self._broken:
            try:
                self._sock.settimeout(1.0)
                self._seq += 1
                self._io.send(OP_BYE, worker_id=self.worker_id, seq=self._seq)
            except (OSError, TransportError):
                pass
        self._broken = True
        try:
            self._sock.close()
        finally:
            self._sock = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close()
