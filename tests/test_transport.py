"""Transport layer tests: real sockets on 127.0.0.1, no mocks.

Attackers speak raw bytes on their own sockets while a well-behaved client keeps committing on
another connection; the server-side centre vector must only ever see the good client's commits.
"""
from __future__ import annotations

import ast
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from distkeras.transport import (HEADER_SIZE, OP_FIRST_APP, OP_PING, Client, FrameIO, FrameServer,
                                 PSAuthError, PSBindError, PSBusyError, PSConnectionError,
                                 PSRemoteError, Reply, TransportTimeoutError)
from distkeras.transport.protocol import (DT_BYTES, DT_F32, DT_JSON, DT_NONE, HEADER, MAGIC,
                                          NONCE_SIZE, OP_AUTH, OP_AUTH_OK, OP_CHALLENGE, VERSION,
                                          FrameMAC, auth_mac, session_key,
                                          server_mac)

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "distkeras" / "transport"
SECRET = b"s" * 32
OP_ADD, OP_GET, OP_RAISE, OP_ECHO = OP_FIRST_APP, OP_FIRST_APP + 1, OP_FIRST_APP + 2, 40
N = 1000
GOOD = 7  # worker id of the well-behaved client


# ---------------------------------------------------------------------------- helpers
def wait_for(cond, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_frame(sock):
    magic, ver, op, flags, dtype, wid, seq, aux, length = HEADER.unpack(recv_exact(sock, HEADER.size))
    assert magic == MAGIC and ver == VERSION
    return op, wid, seq, aux, recv_exact(sock, length)


def header(op, dtype=DT_NONE, length=0, wid=0, seq=0, aux=0, magic=MAGIC, version=VERSION):
    return HEADER.pack(magic, version, op, 0, dtype, wid, seq, aux, length)


def raw_authenticated(addr, secret=SECRET, wid=99, with_mac=False):
    """A raw socket that completed the real handshake: the next bytes are post-auth frames.
    ``with_mac``: also return the session's sending :class:`FrameMAC` (to sign frames)."""
    s = socket.create_connection(addr, timeout=5)
    op, _, _, _, nonce = read_frame(s)
    assert op == OP_CHALLENGE and len(nonce) == 32
    cn = os.urandom(32)
    s.sendall(header(OP_AUTH, DT_BYTES, 64, wid) + auth_mac(secret, nonce, wid, cn) + cn)
    op, _, _, _, proof = read_frame(s)
    assert op == OP_AUTH_OK and proof == server_mac(secret, cn)
    if with_mac:
        return s, FrameMAC(session_key(secret, nonce, cn, wid), b"c2s")
    return s


def assert_closed_by_server(sock, timeout=5.0):
    """The server must close the connection: reading hits EOF (or a reset)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


class CentreApp:
    """Test handler: a float32 centre that ADD commits add to; records who called it."""

    def __init__(self, n=N):
        self.centre = np.zeros(n, np.float32)
        self.lock = threading.Lock()
        self.calls = []
        self.disconnects = []

    def __call__(self, conn, frame):
        self.calls.append(conn.worker_id)
        if frame.op == OP_ADD:
            buf = conn.state.setdefault("reply", np.empty_like(self.centre))
            with self.lock:
                self.centre += frame.payload
                buf[:] = self.centre
            return Reply(OP_ADD, aux=frame.aux + 1, payload=buf)
        if frame.op == OP_GET:
            with self.lock:
                return Reply(OP_GET, payload=self.centre.copy())
        if frame.op == OP_RAISE:
            raise ValueError(f"boom {frame.aux}")
        if frame.op == OP_ECHO:
            return Reply(OP_ECHO, aux=frame.aux, flags=frame.flags, payload=frame.payload)
        if frame.op == OP_ECHO + 1:
            return Reply(OP_ECHO, payload=np.zeros(3))  # float64: not sendable
        return None

    def on_disconnect(self, conn, clean):
        self.disconnects.append((conn.worker_id, clean))


@pytest.fixture
def app():
    return CentreApp()


@pytest.fixture
def server(app):
    with FrameServer(app, SECRET, handshake_timeout=0.5, max_payload=64 << 20,
                     on_disconnect=app.on_disconnect) as srv:
        yield srv


def check_good_client(server, app, commits_before):
    """The good client still works and the centre holds exactly its commits."""
    with Client(*server.address, SECRET, worker_id=GOOD, connect_timeout=5) as c:
        reply = c.request(OP_ADD, np.ones(N, np.float32))
        assert np.array_equal(reply.payload, np.full(N, commits_before + 1, np.float32))
    assert set(app.calls) == {GOOD}
    return commits_before + 1


# ---------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("size", [0, 1, 257, 1 << 16, 12_500_000])
def test_float32_round_trip_bit_exact(server, size):
    rng = np.random.default_rng(size)
    bits = rng.integers(0, 2 ** 32, size, dtype=np.uint64).astype(np.uint32)
    if size >= 4:
        bits[:4] = [0x7FC00001, 0x80000000, 0x00000001, 0x7F800000]  # NaN payload, -0, denormal, inf
    x = bits.view(np.float32)
    with Client(*server.address, SECRET, worker_id=1) as c:
        for _ in range(2):  # second time reuses the receive buffers
            f = c.request(OP_ECHO, x, aux=-5, flags=3)
            assert f.op == OP_ECHO and f.aux == -5 and f.flags == 3 and f.worker_id == 1
            assert f.payload.dtype == np.float32 and f.payload.shape == (size,)
            assert np.array_equal(f.payload.view(np.uint32), bits)
        out = np.empty(size, np.float32)
        assert c.request(OP_ECHO, x, out=out).payload is out
        assert np.array_equal(out.view(np.uint32), bits)


def test_out_mismatch_and_noncontiguous_payload(server):
    with Client(*server.address, SECRET, worker_id=1) as c:
        with pytest.raises(ValueError, match="out="):
            c.request(OP_ECHO, np.ones(10, np.float32), out=np.empty(9, np.float32))
        m = np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2]  # strided view
        assert np.array_equal(c.request(OP_ECHO, m).payload, m.ravel())  # stream still in sync
        with pytest.raises(TypeError, match="float32"):
            c.request(OP_ECHO, np.ones(3))
        assert c.request(OP_ECHO, None).payload is None
        with pytest.raises(ValueError, match="out of range"):
            c.request(256)
        assert c.request(OP_ECHO, b"ok", aux=2 ** 63 - 1).aux == 2 ** 63 - 1


def test_json_and_bytes_payloads(server, app):
    meta = {"hello": "wörld", "epoch": 3, "lr": 1e-3, "shape": [801, 19], "none": None}
    blob = bytes(range(256)) * 40
    with Client(*server.address, SECRET, worker_id=2) as c:
        assert c.request(OP_ECHO, meta, aux=2 ** 62).payload == meta
        assert c.request(OP_ECHO, meta, aux=-(2 ** 63)).aux == -(2 ** 63)
        assert c.request(OP_ECHO, blob).payload == blob
        assert c.request(OP_ECHO, b"").payload == b""
        assert c.request(OP_FIRST_APP + 9).op == OP_FIRST_APP + 9  # handler returned None: ack
    assert app.calls == [2] * 5


def test_auth_ok_and_stats(server, app):
    with Client(*server.address, SECRET, worker_id=4) as c:
        c.request(OP_ADD, np.ones(N, np.float32))
        c.request(OP_ADD, np.ones(N, np.float32))
    wait_for(lambda: app.disconnects == [(4, True)], what="clean disconnect")
    st = server.stats
    w = st["workers"][4]
    assert st["connections"] == 1 and st["active"] == 0 and st["auth_failures"] == 0
    assert w["frames"] == 2 and w["bytes_in"] == 2 * (36 + 4 * N + 16) == w["bytes_out"]   # + tags
    assert w["handler_seconds"] > 0 and st["dropped"] == {}


def test_unclean_disconnect_reported(server, app):
    c = Client(*server.address, SECRET, worker_id=5)
    c.request(OP_ADD, np.ones(N, np.float32))
    c._sock.close()  # vanish without BYE
    wait_for(lambda: app.disconnects == [(5, False)], what="unclean disconnect")


def test_wrong_secret_refused(server, app):
    with pytest.raises(PSAuthError, match="wrong secret"):
        Client(*server.address, b"x" * 32, worker_id=3, connect_timeout=5)
    wait_for(lambda: server.stats["auth_failures"] == 1, what="auth failure count")
    assert server.stats["dropped"] == {"bad_hmac": 1}
    assert app.calls == [] and not app.centre.any()
    check_good_client(server, app, 0)


def test_client_verifies_server(app):
    """A server that does not know the secret is detected by the client (mutual auth)."""
    with FrameServer(app, b"o" * 32) as impostor:
        with pytest.raises(PSAuthError, match="wrong secret|prove"):
            Client(*impostor.address, SECRET, worker_id=1, connect_timeout=5)
    assert app.calls == []


# ---------------------------------------------------------------------------- garbage
F32_ONES = np.ones(N, np.float32).tobytes()
ATTACKS = {  # test id: (reason counted in stats["dropped"], attack)
    "bad_magic": ("bad_magic",
                  lambda a: _pre(a, header(OP_AUTH, DT_BYTES, 64, magic=b"HTTP") + b"x" * 64)),
    "bad_version": ("bad_version",
                    lambda a: _pre(a, header(OP_AUTH, DT_BYTES, 64, version=VERSION + 1) + b"x" * 64)),
    "bad_dtype": ("bad_dtype",
                  lambda a: _post(a, HEADER.pack(MAGIC, VERSION, OP_ADD, 0, 9, 99, 1, 0, 4) + b"abcd")),
    "before_auth": ("before_auth", lambda a: _pre(a, header(OP_ADD, DT_F32, 4 * N) + F32_ONES)),
    "oversized_auth": ("oversized", lambda a: _pre(a, header(OP_AUTH, DT_BYTES, 1 << 30))),
    "oversized": ("oversized", lambda a: _post(a, header(OP_ADD, DT_F32, 1 << 40, wid=99))),
    "truncated": ("truncated",
                  lambda a: _post(a, header(OP_ADD, DT_F32, 4 * N, wid=99) + b"\0" * 100, close=True)),
    "truncated_auth": ("truncated",
                       lambda a: _pre(a, header(OP_AUTH, DT_BYTES, 64) + b"\0" * 10, close=True)),
    "bad_length": ("bad_length",
                   lambda a: _post(a, header(OP_ADD, DT_F32, 4 * N + 1, wid=99) + b"\0" * (4 * N + 1))),
    "worker_id_mismatch": ("worker_id_mismatch",
                           lambda a: _post(a, header(OP_ADD, DT_F32, 4 * N, wid=GOOD) + F32_ONES)),
    "bad_json": ("bad_json", lambda a: _post(a, header(OP_ADD, DT_JSON, 5, wid=99) + b"{'a':")),
    "bad_op": ("bad_op", lambda a: _post(a, header(OP_AUTH_OK, wid=99))),
    "bad_mac": ("bad_mac", lambda a: _post(a, header(OP_ADD, DT_F32, 4 * N, wid=99) + F32_ONES
                                           + b"\0" * 16, tag=False)),
}


def _pre(addr, data, close=False):
    s = socket.create_connection(addr, timeout=5)
    read_frame(s)  # the challenge
    s.sendall(data)
    if close:
        s.shutdown(socket.SHUT_WR)
    return s


def _post(addr, data, close=False, tag=True):
    """``data`` after a real handshake, signed as one frame (a valid tag) unless ``tag=False``:
    the attack then reaches the check it is aimed at, not the integrity check."""
    s, mac = raw_authenticated(addr, with_mac=True)
    s.sendall(data + (mac.tag(data[:HEADER_SIZE], data[HEADER_SIZE:]) if tag else b""))
    if close:
        s.shutdown(socket.SHUT_WR)
    return s


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_malformed_frame_dropped(server, app, attack):
    commits = check_good_client(server, app, 0)
    reason, send = ATTACKS[attack]
    s = send(server.address)
    with s:
        assert_closed_by_server(s)
    wait_for(lambda: server.stats["dropped"].get(reason) == 1, what=f"dropped[{reason}]")
    assert sum(server.stats["dropped"].values()) == 1, server.stats["dropped"]
    check_good_client(server, app, commits)  # other connections unaffected, centre untouched


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("authenticated", [False, True])
def test_random_garbage_dropped(server, app, seed, authenticated):
    rng = np.random.default_rng(seed)
    garbage = rng.bytes(int(rng.integers(1, 8192))) + os.urandom(64)
    s = (_post if authenticated else _pre)(server.address, garbage)
    with s:
        assert_closed_by_server(s)
    wait_for(lambda: sum(server.stats["dropped"].values()) == 1, what="one drop")
    assert app.calls == [] and not app.centre.any()
    check_good_client(server, app, 0)


def test_silent_and_slow_connections_hit_handshake_deadline(server, app):
    t0 = time.monotonic()
    silent = socket.create_connection(server.address, timeout=5)
    drip = socket.create_connection(server.address, timeout=5)
    check_good_client(server, app, 0)  # served while the two others hang

    def dribble():  # one valid header byte every 0.1 s: must not extend the deadline
        try:
            for b in header(OP_AUTH, DT_BYTES, 64):
                drip.send(bytes([b]))
                time.sleep(0.1)
        except OSError:
            pass

    t = threading.Thread(target=dribble, daemon=True)
    t.start()
    for s in (silent, drip):
        with s:
            assert_closed_by_server(s)
    assert time.monotonic() - t0 < 3.0
    wait_for(lambda: server.stats["dropped"] == {"handshake_timeout": 2}, what="2 timeouts")
    assert set(app.calls) == {GOOD}


# ---------------------------------------------------------------------------- concurrency, errors
def test_32_concurrent_clients_exact_sum(app):
    k, errors = 40, []
    with FrameServer(app, SECRET) as srv:
        def worker(wid):
            try:
                with Client(*srv.address, SECRET, worker_id=wid, connect_timeout=10) as c:
                    v = np.full(N, wid + 1, np.float32)
                    for i in range(k):
                        assert c.request(OP_ADD, v, aux=i).aux == i + 1
            except Exception as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert np.array_equal(app.centre, np.full(N, k * sum(range(1, 33)), np.float32))
        wait_for(lambda: srv.stats["active"] == 0, what="all disconnected")
        st = srv.stats
        assert st["connections"] == 32 and all(st["workers"][w]["frames"] == k for w in range(32))


def test_handler_error_propagates_and_connection_survives(server, app):
    with Client(*server.address, SECRET, worker_id=1) as c:
        with pytest.raises(PSRemoteError, match="ValueError: boom 42"):
            c.request(OP_RAISE, aux=42)
        with pytest.raises(PSRemoteError, match="float32"):
            c.request(OP_ECHO + 1)
        assert c.request(OP_ADD, np.ones(N, np.float32)).payload[0] == 1.0
    assert server.stats["workers"][1]["errors"] == 2


def test_max_connections_is_retried_within_the_connect_timeout(app):
    with FrameServer(app, SECRET, max_connections=1) as srv:
        first = Client(*srv.address, SECRET, worker_id=1)
        t0 = time.monotonic()
        with pytest.raises(PSBusyError, match="server full"):
            Client(*srv.address, SECRET, worker_id=2, connect_timeout=1)
        assert 0.5 < time.monotonic() - t0 < 3
        assert srv.stats["dropped"]["too_many_connections"] >= 3     # it retried
        # the slot frees while a worker retries (a task retried by Spark): it gets in
        threading.Timer(0.5, first.close).start()
        with Client(*srv.address, SECRET, worker_id=2, connect_timeout=5) as c:
            assert c.request(OP_PING).op == OP_PING


def test_peer_closing_mid_reply_raises_promptly():
    """A server dying halfway through a big reply must not hang the client."""
    lst = socket.create_server(("127.0.0.1", 0))

    def fake_server():
        s, _ = lst.accept()
        with s:
            nonce = os.urandom(32)
            s.sendall(header(OP_CHALLENGE, DT_BYTES, 32) + nonce)
            _, wid, _, _, body = read_frame(s)
            s.sendall(header(OP_AUTH_OK, DT_BYTES, 32, wid) + server_mac(SECRET, body[32:]))
            _, wid, seq, _, _ = read_frame(s)
            recv_exact(s, 16)                           # its tag
            s.sendall(header(OP_ADD, DT_F32, 4_000_000, wid, seq) + b"\0" * 1000)

    t = threading.Thread(target=fake_server, daemon=True)
    t.start()
    with lst, Client(*lst.getsockname(), SECRET, worker_id=3) as c:
        t0 = time.monotonic()
        with pytest.raises(PSConnectionError, match="closed"):
            c.request(OP_ADD, np.ones(10, np.float32))
        assert time.monotonic() - t0 < 2.0
        with pytest.raises(PSConnectionError):
            c.request(OP_ADD, np.ones(10, np.float32))  # broken connections stay broken


# ---------------------------------------------------------------------------- ports
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast_with_actionable_message():
    port = _free_port()
    t0 = time.monotonic()
    with pytest.raises(PSConnectionError) as ei:
        Client("127.0.0.1", port, SECRET, worker_id=0, connect_timeout=1.0)
    assert 0.9 < time.monotonic() - t0 < 3.0
    msg = str(ei.value)
    assert f"127.0.0.1:{port}" in msg and "spark.driver.host" in msg and f"port {port}" in msg
    assert socket.gethostname() in msg


def test_port_in_use(app):
    with FrameServer(app, SECRET) as a:
        port = a.address[1]
        with pytest.raises(PSBindError) as ei:
            FrameServer(app, SECRET, port=port).start()
        assert isinstance(ei.value, OSError)
        assert f"127.0.0.1:{port}" in str(ei.value) and "port=0" in str(ei.value)


def test_port_released_after_close_and_after_exception(app):
    threads_before = threading.active_count()
    srv = FrameServer(app, SECRET).start()
    port = srv.address[1]
    c = Client(*srv.address, SECRET, worker_id=1)
    c.request(OP_ADD, np.ones(N, np.float32))
    srv.close()  # client still connected
    with pytest.raises(PSConnectionError):
        c.request(OP_ADD, np.ones(N, np.float32))
    c.close()
    with pytest.raises(RuntimeError, match="interrupted"):
        with FrameServer(app, SECRET, port=port) as again:  # re-bind right after close
            assert again.address[1] == port
            with Client(*again.address, SECRET, worker_id=1):
                raise RuntimeError("interrupted")
    with FrameServer(app, SECRET, port=port) as third:
        assert third.address[1] == port
    wait_for(lambda: threading.active_count() <= threads_before, what="threads joined")


# ---------------------------------------------------------------------------- TLS
def _self_signed(tmp: Path):
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    try:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        import ipaddress
    except ImportError:
        assert shutil.which("openssl"), "TLS test needs the cryptography package or openssl"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                        "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        return cert, key
    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now)
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.SubjectAlternativeName(
             [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
         .sign(k, hashes.SHA256()))
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return cert, key


def test_tls_round_trip(app, tmp_path):
    cert, key = _self_signed(tmp_path)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    cctx = ssl.create_default_context(cafile=str(cert))
    x = np.random.default_rng(0).standard_normal(300_000).astype(np.float32)
    with FrameServer(app, SECRET, ssl_context=sctx, handshake_timeout=1.0) as srv:
        with Client(*srv.address, SECRET, worker_id=1, ssl_context=cctx) as c:
            assert isinstance(c._sock, ssl.SSLSocket)
            assert np.array_equal(c.request(OP_ECHO, x).payload, x)
            assert c.request(OP_ECHO, {"a": 1}).payload == {"a": 1}
            assert c.request(OP_ECHO, np.ones(3, np.float32)).payload.tolist() == [1, 1, 1]
        with pytest.raises(PSAuthError):  # plain client against a TLS server
            Client(*srv.address, SECRET, worker_id=2, handshake_timeout=0.5)
        wait_for(lambda: sum(srv.stats["dropped"].values()) == 1, what="plain client dropped")
        assert set(srv.stats["dropped"]) <= {"handshake_timeout", "tls"}, srv.stats
        with socket.create_connection(srv.address) as silent:  # TLS deadline is total
            t0 = time.monotonic()
            silent.sendall(b"\x16\x03\x01")  # start of a ClientHello, then nothing
            assert_closed_by_server(silent)
            assert time.monotonic() - t0 < 2.5
        wait_for(lambda: sum(srv.stats["dropped"].values()) == 2, what="silent TLS dropped")
    assert app.calls == [1, 1, 1]


def test_close_returns_promptly_while_a_handler_blocks(app):
    """A synchronous round waiting for workers that never come must not hang close()."""
    release, entered, outcome = threading.Event(), threading.Event(), []

    def blocking(conn, frame):
        entered.set()
        release.wait(30)
        return None

    srv = FrameServer(blocking, SECRET).start()
    c = Client(*srv.address, SECRET, worker_id=1)
    quiet = Client(*srv.address, SECRET, worker_id=2)  # idle, blocked in recv on the server

    def call():
        try:
            c.request(OP_ADD)
        except PSConnectionError as exc:
            outcome.append(exc)

    t = threading.Thread(target=call)
    t.start()
    assert entered.wait(5)
    t0 = time.monotonic()
    srv.close(timeout=1.0)
    assert time.monotonic() - t0 < 2.0
    t.join(5)
    assert len(outcome) == 1  # the waiting client learns promptly that the server is gone
    with pytest.raises(PSConnectionError):
        quiet.request(OP_ADD)
    release.set()
    c.close()
    quiet.close()


# ---------------------------------------------------------------------------- no pickle
FORBIDDEN = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}


def test_source_has_no_code_execution_paths():
    files = sorted(PKG.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "protocol.py", "server.py", "client.py"}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]} | {a.name for a in node.names}
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec", "compile", "__import__"}, f
                continue
            elif isinstance(node, ast.Attribute):
                assert node.attr not in {"load", "loads", "allow_pickle"} or \
                    ast.unparse(node) == "json.loads", f"{f}: {ast.unparse(node)}"
                continue
            else:
                continue
            assert not names & FORBIDDEN, f"{f} imports {names & FORBIDDEN}"


def test_pickle_never_imported_at_runtime():
    """Fresh interpreter: numpy's own pickle import is removed, then any import of a pickle-like
    module while loading *and using* the transport is refused and recorded."""
    script = textwrap.dedent(f"""
        import sys, types, importlib.abc
        import numpy as np
        FORBIDDEN = {sorted(FORBIDDEN - {'marshal'})!r}
        for m in FORBIDDEN:
            sys.modules.pop(m, None)
        seen = []
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in FORBIDDEN:
                    seen.append(name)
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        pkg = types.ModuleType("distkeras"); pkg.__path__ = [{str(REPO / "distkeras")!r}]
        sys.modules["distkeras"] = pkg  # the transport alone, not the rest of distkeras
        from distkeras.transport import Client, FrameServer, Reply, PSRemoteError
        def handler(conn, frame):
            if frame.aux:
                raise ValueError("x")
            return Reply(frame.op, payload=frame.payload)
        with FrameServer(handler, b"k" * 32) as srv:
            with Client(*srv.address, b"k" * 32, worker_id=1) as c:
                for p in (np.ones(5, np.float32), {{"a": 1}}, b"abc", None):
                    c.request(16, p)
                try:
                    c.request(16, aux=1)
                except PSRemoteError:
                    pass
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
        print("SEEN", seen, "LOADED", loaded)
        assert not seen and not loaded
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                       cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SEEN [] LOADED []" in r.stdout


# --- serving workers first: floods, slowloris, duplicates, oversized and slow frames ----------

def test_a_worker_is_served_through_500_idle_connections_and_a_slowloris(app):
    """Idle pre-auth connections and ones trickling a header byte by byte only ever take the
    pending budget (the oldest evicted first): a worker authenticates and is served at once."""
    with FrameServer(app, SECRET, max_pending=64, max_pending_per_host=32) as srv:
        idle = [socket.create_connection(srv.address, timeout=5) for _ in range(500)]
        slow = [socket.create_connection(srv.address, timeout=5) for _ in range(20)]
        stop = threading.Event()

        def trickle():
            while not stop.is_set():
                for s in slow:
                    try:
                        s.send(b"D")
                    except OSError:
                        pass
                stop.wait(0.2)

        threading.Thread(target=trickle, daemon=True).start()
        more: list[socket.socket] = []
        try:
            t0 = time.monotonic()
            with Client(*srv.address, SECRET, worker_id=1, connect_timeout=20) as c:
                assert c.request(OP_ADD, np.ones(N, np.float32)).payload[0] == 1.0
                served = time.monotonic() - t0
                more += [socket.create_connection(srv.address, timeout=5) for _ in range(200)]
                time.sleep(0.2)              # a flood after authentication changes nothing
                assert c.request(OP_ADD, np.ones(N, np.float32)).payload[0] == 2.0
            assert served < 5, served
            assert srv.stats["pending"] <= 64
            assert srv.stats["dropped"].get("evicted", 0) > 0
        finally:
            stop.set()
            for s in idle + slow + more:
                s.close()


def test_a_newer_connection_for_a_worker_id_replaces_the_older(app):
    """Rejoin by the newest proof: a second authenticated connection for worker 1 is served at
    once and the first is shut down (the host it came from may be gone without a word)."""
    with FrameServer(app, SECRET, unique_workers=True) as srv:
        first = Client(*srv.address, SECRET, worker_id=1)
        t0 = time.monotonic()
        with Client(*srv.address, SECRET, worker_id=1, connect_timeout=3) as again:
            assert time.monotonic() - t0 < 1.0
            assert again.request(OP_PING).op == OP_PING
            with pytest.raises(PSConnectionError):
                first.request(OP_PING)              # replaced: closed by the server
            assert srv.stats["dropped"]["superseded"] == 1
        first.close()
        gone = Client(*srv.address, SECRET, worker_id=2)
        gone._sock.close()             # vanished without BYE: also replaced
        with Client(*srv.address, SECRET, worker_id=2, connect_timeout=3) as c:
            assert c.request(OP_PING).op == OP_PING


def test_oversized_and_stalled_frames_are_dropped(app):
    with FrameServer(app, SECRET, max_payload=4 * N + 1024, frame_timeout=0.5) as srv:
        sock = raw_authenticated(srv.address, wid=1)
        sock.sendall(HEADER.pack(MAGIC, VERSION, OP_ADD, 0, DT_F32, 1, 1, 0, 40 << 20))
        assert sock.recv(1) == b""                     # closed: 40 MB for a 4 KB model
        sock.close()
        sock = raw_authenticated(srv.address, wid=1)
        sock.sendall(HEADER.pack(MAGIC, VERSION, OP_ADD, 0, DT_F32, 1, 1, 0, 4 * N) + b"x" * 10)
        t0 = time.monotonic()
        assert sock.recv(1) == b"" and time.monotonic() - t0 < 3   # the rest never came
        sock.close()
        dropped = srv.stats["dropped"]
        assert dropped["oversized"] == 1 and dropped["slow_frame"] == 1, dropped


def test_a_worker_that_stops_reading_is_dropped_and_the_others_are_served(app):
    """The server's sends are bounded too: a reply the worker never reads (more than every
    socket buffer holds) ends its connection after the frame timeout, not its thread's life."""
    with FrameServer(app, SECRET, max_payload=64 << 20, frame_timeout=0.5) as srv:
        sock, mac = raw_authenticated(srv.address, wid=1, with_mac=True)
        payload = np.ones(16 << 20, np.float32)            # 64 MB echoed, never read
        head = header(OP_ECHO, DT_F32, payload.nbytes, wid=1, seq=1)
        sock.sendall(head + memoryview(payload).cast("B") + mac.tag(head, memoryview(payload)
                                                                     .cast("B")))
        with Client(*srv.address, SECRET, worker_id=GOOD) as good:
            assert good.request(OP_ADD, np.ones(N, np.float32)).payload[0] == 1.0
        t0 = time.monotonic()
        wait_for(lambda: srv.stats["dropped"].get("slow_reader") == 1, timeout=15,
                 what="the stalled reply to be dropped")
        assert time.monotonic() - t0 < 10
        sock.close()


def test_a_client_waits_for_a_reply_no_longer_than_its_io_timeout():
    """``io_timeout`` bounds the wait for a reply in total (the client's waits are in the
    kernel, in slices): a handler that takes longer ends the request with a timeout error,
    while one that keeps within it is answered, however long the client was idle before."""
    def slow(conn, frame):
        time.sleep(frame.aux / 1000)
        return Reply(frame.op, aux=frame.aux)

    with FrameServer(slow, SECRET) as srv:
        with Client(*srv.address, SECRET, worker_id=1, io_timeout=0.6) as c:
            assert c.request(OP_ADD, aux=100).aux == 100
            time.sleep(1.2)                                  # idle: no deadline runs
            assert c.request(OP_ADD, aux=300).aux == 300
            t0 = time.monotonic()
            with pytest.raises(TransportTimeoutError, match="within 0.6 s"):
                c.request(OP_ADD, aux=3000)
            assert 0.5 < time.monotonic() - t0 < 2.0
            assert not c.connected


def test_receive_buffers_shrink_after_a_large_frame():
    a, b = socket.socketpair()
    with a, b:
        out, into = FrameIO(a), FrameIO(b)
        threading.Thread(target=lambda: out.send(OP_ADD, payload=np.ones(5 << 20, np.float32)),
                         daemon=True).start()
        assert into.recv()[0].payload.size == 5 << 20
        assert into._buf.nbytes >= 20 << 20
        out.send(OP_ADD, payload=np.ones(10, np.float32))
        assert into.recv()[0].payload.size == 10 and into._buf.nbytes == 40


def test_dropped_connection_warnings_are_rate_limited(app, caplog):
    with FrameServer(app, SECRET) as srv:
        with caplog.at_level("WARNING", logger="distkeras.transport.server"):
            for _ in range(50):
                with socket.create_connection(srv.address, timeout=5) as s:
                    s.sendall(b"G" * HEADER_SIZE)
            time.sleep(0.5)
        assert srv.stats["dropped"]["bad_magic"] == 50
        warnings = [r for r in caplog.records if "bad_magic" in r.getMessage()]
        assert 1 <= len(warnings) <= 2, [r.getMessage() for r in warnings]


# ---------------------------------------------------------------------------- frame tags
# sizes on either side of every path of the tag: read with the payload, one AEAD call, chunks,
# hashed and sent a chunk at a time
TAG_SIZES = [0, 4, (1 << 18) - 16, (1 << 18) + 4, 1 << 20, (1 << 20) + 4, (5 << 20) + 12]


@pytest.mark.parametrize("nbytes", TAG_SIZES)
def test_a_frame_tag_is_refused_for_any_change_replay_or_reflection(nbytes):
    key, hdr = os.urandom(32), os.urandom(HEADER_SIZE)
    payload = bytearray(os.urandom(nbytes))
    tag = FrameMAC(key, b"c2s").tag(hdr, memoryview(payload))

    def check(direction=b"c2s", frames_before=0, header=hdr, body=payload, chunk=1 << 22):
        mac = FrameMAC(key, direction)
        for _ in range(frames_before):
            mac.tag(hdr, b"")
        h = mac.start(header, len(body))
        for i in range(0, len(body), chunk):     # as a receiver hashes it: chunk by chunk
            h.update(memoryview(body)[i:i + chunk])
        return h.finish() == tag

    assert check() and check(chunk=1 << 20)
    assert not check(direction=b"s2c")                       # reflected
    assert not check(frames_before=1)                        # replayed or reordered
    assert not check(header=hdr[:-1] + bytes([hdr[-1] ^ 1]))
    if nbytes:
        for at in {0, nbytes // 2, nbytes - 1}:
            changed = bytearray(payload)
            changed[at] ^= 0x80
            assert not check(body=changed), at


@pytest.mark.parametrize("nbytes", [4 << 10, 3 << 20])
def test_a_frame_changed_on_the_way_is_dropped_before_its_handler(nbytes):
    n = nbytes // 4
    app = CentreApp(n)
    with FrameServer(app, SECRET) as srv:
        s, mac = raw_authenticated(srv.address, wid=1, with_mac=True)
        body = np.ones(n, np.float32).tobytes()
        head = header(OP_ADD, DT_F32, nbytes, wid=1)
        tag = mac.tag(head, body)
        changed = bytearray(body)
        changed[nbytes // 3] ^= 1
        with s:
            s.sendall(head + bytes(changed) + tag)
            assert_closed_by_server(s)
        wait_for(lambda: srv.stats["dropped"].get("bad_mac") == 1, what="dropped[bad_mac]")
        with Client(*srv.address, SECRET, worker_id=2) as c:    # the real thing goes through
            reply = c.request(OP_ADD, np.ones(n, np.float32))
        assert app.calls == [2] and np.array_equal(reply.payload, np.ones(n, np.float32))


def test_a_peer_on_another_protocol_version_is_told_to_match_releases():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(header(OP_FIRST_APP, version=VERSION - 1))
        with pytest.raises(Exception, match=f"protocol v{VERSION - 1}, this side v{VERSION}.*"
                                            "same distkeras release"):
            FrameIO(b).recv(deadline=time.monotonic() + 5)
