"""Wire format of the transport: a fixed binary header plus a raw payload.

Why a custom frame and not pickle/HTTP/gRPC: the hot path moves one flat float32 vector (the
model) per commit, so the frame is a 36-byte ``struct`` header followed by the raw bytes of the
array, sent straight from the array's memory (``sendmsg``/``sendall`` of a ``memoryview``) and
received straight into a reusable buffer (``recv_into``). Nothing in this package can execute
code from the network: payloads are float32 arrays, UTF-8 JSON (parsed with :mod:`json`) or
opaque bytes.

Header (network byte order, ``!4sBBBBIQqQ``)::

    magic b"DKPS" | version u8 | op u8 | flags u8 | dtype u8 | worker_id u32 | seq u64 | aux i64 | length u64

Float32 payloads are little-endian on the wire (native on every platform we run on; a
big-endian host would byte-swap with one copy).

After the handshake every frame ends with a 16-byte tag over the header and the payload:
AES-256-GCM used as a MAC (the payload as associated data), one nonce per frame, under a
per-direction key derived from the secret and both nonces (:class:`FrameMAC`; 13 GB/s on one
core with AES-NI, 3x Poly1305 here). A relay that does not know the secret cannot flip, inject,
reorder or replay a frame: the receiver sees a bad tag and closes the connection before the
frame reaches a handler. Under TLS the tag is left out (TLS already authenticates every record).

Example::

    io = FrameIO(sock)
    io.send(OP_FIRST_APP, worker_id=3, seq=1, payload=np.zeros(10, np.float32))
    frame, nbytes = io.recv()      # frame.payload is a view valid until the next io.recv()
"""
from __future__ import annotations

import hmac
import json
import socket
import ssl
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
from .crypto import FrameMAC, auth_mac, server_mac, session_key  # noqa: F401 - the wire's keys
from .errors import ProtocolError, TransportConnectionError
from .sockets import (SOCKET_BUFFER, _set_deadline, shutdown_quietly,  # noqa: F401
                      tls_accept, tune_socket)

MAGIC = b"DKPS"
VERSION = 4          # 2: per-frame session MACs after the handshake; 3: keys from a keystream;
                     # 4: AES-GCM tags
HEADER = struct.Struct("!4sBBBBIQqQ")
HEADER_SIZE = HEADER.size  # 36

# Transport ops (0-15 reserved). Application ops are >= OP_FIRST_APP and opaque to the transport.
OP_CHALLENGE = 1
OP_AUTH = 2
OP_AUTH_OK = 3
OP_ERROR = 4
OP_BYE = 5
OP_PING = 6
OP_FIRST_APP = 16
OP_NAMES = {OP_CHALLENGE: "CHALLENGE", OP_AUTH: "AUTH", OP_AUTH_OK: "AUTH_OK",
            OP_ERROR: "ERROR", OP_BYE: "BYE", OP_PING: "PING"}

# Payload dtypes.
DT_NONE = 0
DT_F32 = 1
DT_JSON = 2
DT_BYTES = 3
_DTYPES = (DT_NONE, DT_F32, DT_JSON, DT_BYTES)

# ``aux`` codes carried by ERROR frames sent by the transport itself.
ERR_HANDLER = 0
ERR_AUTH = 1
ERR_FULL = 2

NONCE_SIZE = 32
MAC_SIZE = 32
TAG_SIZE = 16        # per-frame GCM tag
MAC_CHUNK = 1 << 20  # a large payload is hashed and sent, and received and hashed, in chunks of
                     # this size, each hashed while in cache (L2); a smaller last chunk is a
                     # shorter wait after the last byte. Against the whole payload hashed on a
                     # helper thread while the socket copied it, and 4 MB receive chunks:
                     # commit+pull 0.76-0.80x -> 0.92-1.06x raw at 10/100 MB, the ring the same
                     # or better (benchmarks/ps_bandwidth.py, allreduce.py)
ONE_READ = 1 << 18   # a payload up to this size is read with its tag in one call (a commit of a
                     # small model: one system call fewer per frame)
DEFAULT_MAX_PAYLOAD = 2 * 1024 ** 3
MAX_JSON = 16 * 1024 ** 2

_WIRE_F32 = np.dtype("<f4")
_U64_MAX = 2 ** 64 - 1

Payload = Union[np.ndarray, dict, list, bytes, bytearray, memoryview, None]


class PeerClosed(TransportConnectionError):
    """The peer closed the stream; ``at_boundary`` is True when no frame was half-received."""

    def __init__(self, message: str, at_boundary: bool):
        super().__init__(message)
        self.at_boundary = at_boundary


@dataclass
class Frame:
    """A decoded frame. A float32 ``payload`` is a view into the receiver's reusable buffer."""

    op: int
    flags: int = 0
    worker_id: int = 0
    seq: int = 0
    aux: int = 0
    payload: Any = None


@dataclass
class Reply:
    """What a server handler returns: float32 ndarray (sent zero-copy), dict (JSON), bytes or None."""

    op: int
    aux: int = 0
    flags: int = 0
    payload: Payload = None


def encode_payload(payload: Payload) -> tuple[int, Optional[memoryview | bytes]]:
    """Map a payload to (dtype, buffer) without copying float32 arrays or bytes."""
    if payload is None:
        return DT_NONE, None
    if payload.__class__ is np.ndarray and payload.dtype == _WIRE_F32 \
            and payload.flags.c_contiguous:   # the hot path: a model's vector, as it is
        return DT_F32, memoryview(payload).cast("B")
    if isinstance(payload, np.ndarray):
        if payload.dtype == np.uint8:          # opaque bytes (a compressed vector)
            return DT_BYTES, memoryview(np.ascontiguousarray(payload).reshape(-1))
        if payload.dtype != np.float32:
            raise TypeError(f"array payloads must be float32 or uint8 (bytes), got "
                            f"{payload.dtype} (convert once with arr.astype(np.float32))")
        arr = np.ascontiguousarray(payload)  # no copy when already contiguous
        if sys.byteorder != "little" or arr.dtype.byteorder == ">":
            arr = arr.astype(_WIRE_F32)
        return DT_F32, memoryview(arr.reshape(-1)).cast("B")
    if isinstance(payload, (dict, list)):
        return DT_JSON, json.dumps(payload, separators=(",", ":")).encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return DT_BYTES, memoryview(payload).cast("B")
    raise TypeError(f"unsupported payload type {type(payload).__name__}: "
                    "use a float32 ndarray, a dict (JSON), bytes or None")


def payload_size(payload: Payload) -> int:
    """Bytes a payload takes on the wire (arrays, bytes; JSON and None count 0)."""
    if isinstance(payload, np.ndarray):
        return payload.nbytes
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return memoryview(payload).nbytes
    return 0


def frame_limit(model_bytes: int) -> int:
    """The largest payload a server of one model accepts: the model plus a small margin."""
    return int(model_bytes) + (64 << 10)


SHRINK_ABOVE = 8 << 20   # receive buffers above this shrink when frames get 4x smaller


class FrameIO:
    """Sends and receives frames on one connected socket, reusing one receive buffer.

    The float32 array returned by :meth:`recv` is a view of that buffer and stays valid only
    until the next :meth:`recv` on the same ``FrameIO``; copy it if you keep it. Not thread-safe:
    one thread reads and writes a connection at a time.
    """

    def __init__(self, sock: socket.socket, max_payload: int = DEFAULT_MAX_PAYLOAD):
        self.sock = sock
        self.max_payload = int(max_payload)
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._hdr = bytearray(HEADER_SIZE)
        self._hdr_view = memoryview(self._hdr)
        self._buf = np.empty(0, dtype=np.uint8)
        self._tag = bytearray(TAG_SIZE)
        self._send_mac: Optional[FrameMAC] = None
        self._recv_mac: Optional[FrameMAC] = None
        self._flags = 0 if self._tls else socket.MSG_WAITALL
        self._send_timeout: Optional[float] = None    # set by wait_in_kernel

    def wait_in_kernel(self, timeout: float) -> bool:
        """Bound this connection's waits in the kernel (``SO_RCVTIMEO``/``SO_SNDTIMEO`` of a
        slice up to 1 s) instead of a Python timeout set before every call: the socket stays
        blocking, so a read or a write is one system call, not a mode switch and a ``poll``
        (a server's loop: 10 % more commits/s). Then a read with a deadline raises
        ``socket.timeout`` once the deadline passes, one without waits on, and a send that
        stalls raises it after ``timeout`` seconds plus 1 s per 20 MB. False, and nothing
        changed, under TLS or where the platform has no such options.

        Example::

            io.wait_in_kernel(30.0)               # once, after the handshake
            op, *_, length = io.recv_header()     # between frames: waits for as long as it takes
        """
        if self._tls:
            return False
        piece = max(0.01, min(1.0, float(timeout)))
        tv = struct.pack("ll", int(piece), int((piece % 1) * 1e6))
        try:
            self.sock.settimeout(None)
            for opt in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
                self.sock.setsockopt(socket.SOL_SOCKET, opt, tv)
        except (OSError, AttributeError, struct.error):
            return False
        self._send_timeout = float(timeout)
        return True

    @property
    def waits_in_kernel(self) -> bool:
        """Whether :meth:`wait_in_kernel` bounds this connection's waits."""
        return self._send_timeout is not None

    def start_session(self, key: bytes, server: bool) -> None:
        """From now on, every frame sent carries a tag and every frame received is checked
        (left out under TLS, which authenticates its records itself)."""
        if self._tls:
            return
        out, into = (b"s2c", b"c2s") if server else (b"c2s", b"s2c")
        self._send_mac, self._recv_mac = FrameMAC(key, out), FrameMAC(key, into)

    # ------------------------------------------------------------------ send
    def send(self, op: int, *, worker_id: int = 0, seq: int = 0, aux: int = 0, flags: int = 0,
             payload: Payload = None) -> int:
        """Send one frame; returns the number of bytes written (header + payload)."""
        dtype, body = encode_payload(payload)
        n = 0 if body is None else len(body)
        try:
            header = HEADER.pack(MAGIC, VERSION, op, flags, dtype, worker_id, seq, aux, n)
        except struct.error as exc:
            raise ValueError(f"header field out of range (op/flags u8, worker_id u32, seq u64, "
                             f"aux i64): {exc}") from None
        if self._send_mac is not None:
            if n > MAC_CHUNK:     # hashed a chunk at a time, each sent while still in cache
                h, body = self._send_mac.start(header, n), memoryview(body)
                for at in range(0, n, MAC_CHUNK):
                    piece = body[at:at + MAC_CHUNK]
                    h.update(piece)
                    if at:
                        self._sendmsg_all([piece], len(piece))
                    else:
                        self._sendmsg_all([header, piece], HEADER_SIZE + len(piece))
                self._sendmsg_all([h.finish()], TAG_SIZE)
            else:
                tag = self._send_mac.tag(header, body)
                self._sendmsg_all([header, body, tag] if n else [header, tag],
                                  HEADER_SIZE + n + TAG_SIZE)
            return HEADER_SIZE + n + TAG_SIZE
        if n == 0:
            self.sock.sendall(header)
        elif self._tls:
            if n <= 65536:
                self.sock.sendall(header + bytes(body))
            else:
                self.sock.sendall(header)
                self.sock.sendall(body)
        else:
            self._sendmsg_all([header, body], HEADER_SIZE + n)
        return HEADER_SIZE + n

    def _sendmsg_all(self, bufs: list, total: int) -> None:
        """``sendmsg`` of several buffers (``total`` bytes) in one syscall, resuming after
        partial writes; waiting in the kernel, a stalled peer raises ``socket.timeout``."""
        deadline = None
        while True:
            try:
                sent = self.sock.sendmsg(bufs)
            except BlockingIOError:
                if self._send_timeout is None:
                    raise
                sent = 0                 # a kernel wait slice passed without a byte taken
            if sent == total:
                return
            if self._send_timeout is not None:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self._send_timeout + total / 20e6
                elif now > deadline:
                    raise socket.timeout(f"the peer did not read a frame ({total} bytes left) "
                                         f"within {self._send_timeout:g} s + 1 s per 20 MB")
            total -= sent
            bufs = [memoryview(b).cast("B") for b in bufs]
            while sent and sent >= len(bufs[0]):
                sent -= len(bufs[0])
                bufs.pop(0)
            if sent:
                bufs[0] = bufs[0][sent:]

    # ------------------------------------------------------------------ recv
    def _recv_exact(self, view: memoryview, deadline: Optional[float], started: bool,
                    mac=None) -> None:
        """Fill ``view``; with ``mac``, hash it chunk by chunk as it arrives (still in cache)."""
        got, n = 0, len(view)
        sock, flags, in_kernel = self.sock, self._flags, self._send_timeout is not None
        if mac is None and (in_kernel or deadline is None) and n:
            try:                     # the common case first: it is all there, in one call
                got = sock.recv_into(view, n, flags)
            except BlockingIOError:
                if not in_kernel:
                    raise
            if got == n:
                return
            if not in_kernel and got == 0:
                raise PeerClosed(f"connection closed by peer after 0 of {n} bytes",
                                 at_boundary=not started)
            if deadline is not None and time.monotonic() > deadline:
                raise socket.timeout("deadline passed")
        hashed = 0
        while got < n:
            if not in_kernel:
                _set_deadline(sock, deadline)
            want = n - got if mac is None else min(n - got, MAC_CHUNK - (got - hashed))
            try:
                k = sock.recv_into(view[got:] if got else view, want, flags)
            except BlockingIOError:
                if not in_kernel:
                    raise
                k = None                  # a kernel wait slice passed (wait_in_kernel)
            if in_kernel and deadline is not None and (k is None or 0 < k < n - got) \
                    and time.monotonic() > deadline:
                raise socket.timeout("deadline passed")
            if k is None:
                continue
            if k == 0:
                at_boundary = not started and got == 0
                raise PeerClosed(f"connection closed by peer after {got} of {n} bytes",
                                 at_boundary=at_boundary)
            got += k
            if mac is not None and (got - hashed >= MAC_CHUNK or got == n):
                mac.update(view[hashed:got])      # the next chunk arrives meanwhile (kernel)
                hashed = got

    def _check_tag(self, expected: bytes, deadline: Optional[float]) -> None:
        self._recv_exact(memoryview(self._tag), deadline, started=True)
        self._compare_tag(expected, self._tag)

    @staticmethod
    def _compare_tag(expected: bytes, received) -> None:
        if not hmac.compare_digest(expected, bytes(received)):
            raise ProtocolError("bad_mac", "a frame failed its integrity check (changed, "
                                             "injected, reordered or replayed on the way)")

    def _payload_view(self, n: int) -> memoryview:
        if self._buf.nbytes < n:
            self._buf = np.empty(max(n, min(2 * self._buf.nbytes, self.max_payload)), np.uint8)
        elif self._buf.nbytes > SHRINK_ABOVE and n < self._buf.nbytes // 4:
            self._buf = np.empty(n, np.uint8)     # one large frame does not pin its buffer
        return memoryview(self._buf)[:n]

    def recv_header(self, deadline: Optional[float] = None) -> tuple[int, int, int, int, int, int, int]:
        """Read and validate a header; returns (op, flags, dtype, worker_id, seq, aux, length)."""
        self._recv_exact(self._hdr_view, deadline, started=False)
        magic, version, op, flags, dtype, wid, seq, aux, length = HEADER.unpack(self._hdr)
        if magic != MAGIC:
            raise ProtocolError("bad_magic", f"expected {MAGIC!r}, got {bytes(magic)!r}")
        if version != VERSION:
            raise ProtocolError("bad_version", f"the peer speaks distkeras wire protocol v{version}"
                                f", this side v{VERSION}: run the same distkeras release on the "
                                f"driver and in the executors' environment")
        if dtype not in _DTYPES:
            raise ProtocolError("bad_dtype", f"unknown payload dtype {dtype}")
        if length > self.max_payload:
            raise ProtocolError("oversized", f"declared payload {length} bytes > max_payload "
                                               f"{self.max_payload}")
        if dtype == DT_F32 and length % 4:
            raise ProtocolError("bad_length", f"float32 payload of {length} bytes")
        if dtype == DT_JSON and length > MAX_JSON:
            raise ProtocolError("oversized", f"JSON payload of {length} bytes > {MAX_JSON}")
        if dtype == DT_NONE and length:
            raise ProtocolError("bad_length", f"dtype none with {length} payload bytes")
        return op, flags, dtype, wid, seq, aux, length

    def recv_payload(self, dtype: int, length: int, deadline: Optional[float] = None,
                     out: Optional[np.ndarray] = None) -> Any:
        """Read a payload whose header was just read (and its tag, in a session: nothing is
        decoded before it checks); decode it (float32 as a buffer view)."""
        mac = self._recv_mac
        if dtype == DT_NONE:
            if mac is not None:
                self._check_tag(mac.tag(self._hdr), deadline)
            return None
        into_out = dtype == DT_F32 and out is not None and _fits(out, length)
        if mac is not None and length <= ONE_READ:     # payload and tag in one read, one call
            view = self._payload_view(length + TAG_SIZE)
            self._recv_exact(view, deadline, started=True)
            self._compare_tag(mac.tag(self._hdr, view[:length]), view[length:])
            view = view[:length]
        else:             # hashed chunk by chunk as it arrives, into out= where it fits
            h = mac.start(self._hdr, length) if mac is not None else None
            view = memoryview(out.reshape(-1)).cast("B") if into_out else \
                self._payload_view(length)
            self._recv_exact(view, deadline, started=True, mac=h)
            if h is not None:
                self._check_tag(h.finish(), deadline)
            if into_out:
                return out
        if dtype == DT_F32:
            if into_out:
                np.copyto(out.reshape(-1), self._buf[:length].view(_WIRE_F32))
                return out
            if out is not None:
                raise ValueError(f"out= has {out.size} float32 values ({out.dtype}), the reply "
                                 f"carries {length // 4}; the reply was received and dropped")
            return self._buf[:length].view(_WIRE_F32)
        if dtype == DT_BYTES:
            return view.tobytes()
        try:
            return json.loads(str(view, "utf-8"))
        except (ValueError, RecursionError) as exc:
            raise ProtocolError("bad_json", str(exc)[:200]) from None

    def recv(self, deadline: Optional[float] = None, out: Optional[np.ndarray] = None
             ) -> tuple[Frame, int]:
        """Receive one frame; returns it and its size on the wire in bytes."""
        op, flags, dtype, wid, seq, aux, length = self.recv_header(deadline)
        payload = self.recv_payload(dtype, length, deadline, out)
        return Frame(op, flags, wid, seq, aux, payload), HEADER_SIZE + length + self.tag_size

    @property
    def tag_size(self) -> int:
        """Bytes of tag after each frame received (0 outside a session, or under TLS)."""
        return TAG_SIZE if self._recv_mac is not None else 0


def _fits(out: np.ndarray, length: int) -> bool:
    return (isinstance(out, np.ndarray) and out.dtype == _WIRE_F32 and out.nbytes == length
            and out.flags.c_contiguous and out.flags.writeable)


def op_name(op: int) -> str:
    """Human-readable op for logs."""
    return OP_NAMES.get(op, f"op{op}")
