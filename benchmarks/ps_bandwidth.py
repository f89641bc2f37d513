"""Parameter-server transport bandwidth vs a raw loopback socket, and commit rate under load.

1. Commit+pull MB/s for 1, 10 and 100 MB float32 models: a client sends the vector, the handler
   does ``centre += payload``, copies the centre into a per-connection reply buffer under a lock
   and replies with it (sent outside the lock). Baselines in the same run, on raw loopback
   sockets (``sendall``/``recv_into``): the raw commit (the peer adds the N bytes into the
   centre and sends the centre back: the same arithmetic, no frames, no tags) and the raw echo
   (the peer sends the N bytes back: the bytes alone). In every case the sending side is a separate process (as an executor is) and the serving
   side a thread of this process. MB/s counts both directions (2 x model bytes per round
   trip), 1 MB = 1e6 bytes.
2. Commits/s with 2 and 32 concurrent clients (separate processes, like executors) on a
   10k-float model, against the same round trips on plain sockets (a thread per connection
   adding into the centre), with the CPU microseconds one commit costs the server and the
   clients: ``cores / (server + client)`` is the most commits/s this machine allows at those
   costs, ``1 / server`` the most one server process allows while its Python holds the GIL.
3. What the per-frame integrity tags cost: AES-GCM (``FrameMAC``) MB/s over the same
   vectors, and the share of a commit+pull round trip its four passes (the worker signs Δ, the
   server checks it, signs the reply, the worker checks it) take at the measured bandwidth.

Usage::

    python benchmarks/ps_bandwidth.py [--rounds 9] [--seconds 2] [--sizes 1 10 100]
                                      [--clients 2 32]
"""
from __future__ import annotations

import argparse
import os
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distkeras.transport import OP_FIRST_APP, Client, FrameServer, Reply  # noqa: E402
from distkeras.transport.protocol import HEADER_SIZE, FrameMAC  # noqa: E402

OP_COMMIT = OP_FIRST_APP
SIZES_MB = (1, 10, 100)


class AddHandler:
    """centre += payload; reply with a copy of the centre made under the lock."""

    def __init__(self, n: int):
        self.centre = np.zeros(n, np.float32)
        self.lock = threading.Lock()

    def __call__(self, conn, frame):
        buf = conn.state.get("reply")
        if buf is None or buf.size != self.centre.size:
            buf = conn.state["reply"] = np.empty_like(self.centre)
        self.commit(frame.payload, buf)
        return Reply(frame.op, payload=buf)

    def commit(self, payload: np.ndarray, reply: np.ndarray) -> None:
        """centre += payload; ``reply`` gets the centre, copied under the lock."""
        with self.lock:
            np.add(self.centre, payload, out=self.centre)
            np.copyto(reply, self.centre)


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    got, n = 0, len(view)
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("peer closed")
        got += k


def raw_echo_server(nbytes: int) -> tuple[socket.socket, threading.Thread]:
    """Plain loopback peer: receive nbytes, echo them back, until the client hangs up."""
    lst = socket.create_server(("127.0.0.1", 0))

    def echo():
        s, _ = lst.accept()
        buf = memoryview(bytearray(nbytes))
        with s:
            try:
                while True:
                    _recv_exact(s, buf)
                    s.sendall(buf)
            except ConnectionError:
                pass

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    return lst, t


def bandwidth_child(argv: list[str]) -> None:
    """Child process (an 'executor'): time ``iters`` round trips, print the seconds."""
    kind, host, port, secret_hex, nbytes, iters = argv
    nbytes, iters = int(nbytes), int(iters)
    x = np.random.default_rng(1).standard_normal(nbytes // 4).astype(np.float32)
    if kind == "raw":
        with socket.create_connection((host, int(port))) as c:
            back = memoryview(bytearray(nbytes))
            for i in range(iters + 1):  # the first one warms up
                if i == 1:
                    t0 = time.perf_counter()
                c.sendall(x)
                _recv_exact(c, back)
    else:
        with Client(host, int(port), bytes.fromhex(secret_hex), worker_id=0) as c:
            for i in range(iters + 1):
                if i == 1:
                    t0 = time.perf_counter()
                c.request(OP_COMMIT, x)
    print(time.perf_counter() - t0, flush=True)


def _run_child(*args: object) -> float:
    out = subprocess.run([sys.executable, __file__, "--bandwidth-child", *map(str, args)],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    return float(out.strip())


def echo_handler(conn, frame):
    """Transport-only reference: reply with the received vector itself (no arithmetic)."""
    return Reply(frame.op, payload=frame.payload)


def bandwidth(rounds: int, sizes_mb: tuple[int, ...] = SIZES_MB) -> list[dict]:
    """Per model size: MB/s of raw echo, raw commit (the add on plain sockets), PS (add
    handler) and PS (echo handler) over
    ``rounds`` interleaved bursts (order rotated each round so no variant always runs first),
    and the add handler's ms/commit."""
    rows = []
    secret = secrets.token_bytes(32)
    for mb in sizes_mb:
        nbytes = mb * 1_000_000
        iters = max(3, 100 // mb)
        runs: dict[str, list[float]] = {"raw": [], "rawadd": [], "add": [], "echo": []}
        with FrameServer(AddHandler(nbytes // 4), secret) as add_srv, \
                FrameServer(echo_handler, secret) as echo_srv, \
                RawCommitServer(nbytes // 4) as raw_add:
            for r in range(rounds):
                for kind in np.roll(list(runs), r):
                    if kind == "raw":
                        lst, t = raw_echo_server(nbytes)
                        with lst:
                            secs = _run_child("raw", *lst.getsockname()[:2], "-", nbytes, iters)
                        t.join(5)
                    elif kind == "rawadd":
                        secs = _run_child("raw", *raw_add.address, "-", nbytes, iters)
                    else:
                        srv = add_srv if kind == "add" else echo_srv
                        secs = _run_child("ps", *srv.address, secret.hex(), nbytes, iters)
                    runs[str(kind)].append(2 * nbytes * iters / secs / 1e6)
            w = add_srv.stats["workers"][0]
        row = {k: (statistics.median(v), max(v)) for k, v in runs.items()}
        row["mb"], row["handler_ms"] = mb, 1e3 * w["handler_seconds"] / w["frames"]
        rows.append(row)
    return rows


def client_main(argv: list[str]) -> None:
    """Child process: connect, say ready, wait for the start time, commit for ``seconds``;
    print the commits made and the CPU seconds this process spent making them. ``raw``: the
    same round trips (send the vector, read the reply of the same size) on a plain socket."""
    kind, host, port, secret_hex, wid, seconds, n = argv
    x = np.ones(int(n), np.float32)
    count = 0
    if kind == "raw":
        conn = socket.create_connection((host, int(port)))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = memoryview(bytearray(x.nbytes))

        def commit():
            conn.sendall(x)
            _recv_exact(conn, back)
    else:
        conn = Client(host, int(port), bytes.fromhex(secret_hex), worker_id=int(wid))

        def commit():
            conn.request(OP_COMMIT, x)
    with conn:
        commit()
        print("ready", flush=True)
        start_at = float(sys.stdin.readline())
        time.sleep(max(0.0, start_at - time.time()))
        end, cpu = start_at + float(seconds), time.process_time()
        while time.time() < end:
            commit()
            count += 1
        cpu = time.process_time() - cpu
    print(count, cpu, flush=True)


class RawCommitServer:
    """The commit's baseline: a thread per connection reads an ``n``-float vector, adds it to
    the centre and sends the centre back, on plain sockets (no frames, no tags)."""

    def __init__(self, n: int):
        self.handler, self.n = AddHandler(n), n
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.address = self.listener.getsockname()[:2]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s: socket.socket):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        vec = np.empty(self.n, np.float32)
        with s:
            try:
                while True:
                    _recv_exact(s, memoryview(vec).cast("B"))
                    self.handler.commit(vec, vec)
                    s.sendall(vec)
            except (ConnectionError, OSError):
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.listener.close()


def commit_rate(clients: int, seconds: float, n: int = 10_000, kind: str = "ps") -> dict:
    """``clients`` processes committing concurrently (started together): commits/s, and the
    CPU microseconds one commit costs the server process and the clients (the profile that
    bounds the rate: ``cores / (server + client)`` commits/s at most, ``1 / server`` for a
    server whose Python holds the GIL)."""
    secret = secrets.token_bytes(32)
    with (FrameServer(AddHandler(n), secret) if kind == "ps" else RawCommitServer(n)) as srv:
        procs = [subprocess.Popen([sys.executable, __file__, "--client", kind, srv.address[0],
                                   str(srv.address[1]), secret.hex(), str(w), str(seconds),
                                   str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True) for w in range(clients)]
        for p in procs:  # barrier: everyone connected and warmed up
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a client failed to start")
        start_at = time.time() + 0.2
        time.sleep(0.1)
        server_cpu = resource.getrusage(resource.RUSAGE_SELF)
        for p in procs:
            p.stdin.write(f"{start_at}\n")
            p.stdin.flush()
        total, client_cpu = 0, 0.0
        for p in procs:
            out, _ = p.communicate(timeout=120)
            if p.returncode != 0:
                raise RuntimeError(f"client exited with {p.returncode}")
            count, cpu = out.split()
            total, client_cpu = total + int(count), client_cpu + float(cpu)
        after = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu = (after.ru_utime + after.ru_stime
                      - server_cpu.ru_utime - server_cpu.ru_stime)
    per = 1e6 / max(total, 1)
    return {"rate": total / seconds, "server_us": server_cpu * per, "client_us": client_cpu * per}


def tag_rate(mb: int, rounds: int = 5) -> float:
    """MB/s of signing one ``mb`` MB float32 vector with a frame tag (one pass)."""
    vector = np.ones(mb * 250_000, np.float32)
    mac, header = FrameMAC(secrets.token_bytes(32), b"c2s"), bytes(HEADER_SIZE)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        mac.tag(header, memoryview(vector).cast("B"))
        best = min(best, time.perf_counter() - t0)
    return mb / best


def software_cost(n: int = 10_000, commits: int = 20_000) -> dict:
    """Microseconds of one commit+pull round trip run in one thread on a socketpair (the bytes
    wait in the kernel, so no one waits for a peer): the transport's own work, both sides
    together (the client's frame and tag, the server's check, the add, its reply and the
    client's check), against the same round trip as raw ``sendmsg``/``recv_into``."""
    from distkeras.transport.protocol import FrameIO

    a, b = socket.socketpair()
    for sock in (a, b):
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, 1 << 20)
    client, server, key = FrameIO(a), FrameIO(b), secrets.token_bytes(32)
    client.start_session(key, server=False)
    server.start_session(key, server=True)
    x, handler = np.ones(n, np.float32), AddHandler(n)
    reply = np.empty(n, np.float32)
    raw_in, raw_back = (memoryview(np.empty(n, np.float32)).cast("B") for _ in range(2))

    def framed():
        client.send(OP_COMMIT, worker_id=1, seq=1, payload=x)
        frame, _ = server.recv()
        handler.commit(frame.payload, reply)
        server.send(OP_COMMIT, worker_id=1, seq=1, payload=reply)
        client.recv()          # a view of its buffer, as the parameter-server exchange reads it

    def raw():
        a.sendmsg([x])
        b.recv_into(raw_in, x.nbytes, socket.MSG_WAITALL)
        handler.commit(np.frombuffer(raw_in, np.float32), reply)
        b.sendmsg([reply])
        a.recv_into(raw_back, x.nbytes, socket.MSG_WAITALL)

    out = {}
    with a, b:
        for name, trip in (("framed", framed), ("raw", raw)):
            for _ in range(commits // 10):
                trip()
            t0 = time.perf_counter()
            for _ in range(commits):
                trip()
            out[name] = (time.perf_counter() - t0) / commits * 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9, help="interleaved bursts per variant and size")
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each commit-rate run")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES_MB), help="model MB")
    ap.add_argument("--clients", type=int, nargs="*", default=[2, 32],
                    help="concurrent clients for the commit-rate table (none to skip)")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cpus, "
          f"load average {os.getloadavg()[0]:.1f} (noisy if well above 0)")
    print(f"\ncommit+pull bandwidth, MB/s counting both directions; median (best) of "
          f"{args.rounds} interleaved bursts")
    print("  raw echo: a plain socket echoes the bytes; raw commit: the same add and copy on plain "
          "sockets;\n  distkeras: the same add and copy behind authenticated frames (echo: no add)")
    print(f"{'model':>6} | {'raw echo':>13} | {'raw commit':>13} | {'distkeras':>13} | "
          f"{'/raw commit':>11} | {'/raw echo':>9} | {'echo/raw echo':>13} | {'add handler':>11}")
    print(f"{'':>6} | {'':>13} | {'':>13} | {'':>13} | {'med (best)':>11} | {'med':>9} | "
          f"{'med':>13} | {'ms/commit':>11}")
    rows = bandwidth(args.rounds, tuple(args.sizes))
    for row in rows:
        (raw, raw_b), (rawadd, rawadd_b) = row["raw"], row["rawadd"]
        (ps, ps_b), (echo, _) = row["add"], row["echo"]
        print(f"{row['mb']:>3} MB | {raw:>5.0f} ({raw_b:>5.0f}) | {rawadd:>5.0f} ({rawadd_b:>5.0f}) | "
              f"{ps:>5.0f} ({ps_b:>5.0f}) | {ps / rawadd:>4.2f} ({ps_b / rawadd_b:>4.2f}) | "
              f"{ps / raw:>9.2f} | {echo / raw:>13.2f} | {row['handler_ms']:>11.2f}")
    print("\nper-frame integrity tags (AES-256-GCM as a MAC, a nonce per frame), in the figures above")
    print(f"{'model':>6} | {'tag MB/s':>9} | {'4 passes, ms':>12} | {'share of a round trip':>21}")
    for row in rows:
        rate = tag_rate(row["mb"])
        passes_ms = 4 * row["mb"] / rate * 1e3
        trip_ms = 2 * row["mb"] / row["add"][0] * 1e3
        print(f"{row['mb']:>3} MB | {rate:>9.0f} | {passes_ms:>12.1f} | {passes_ms / trip_ms:>21.2f}")
    print("\ncommits/s of a 10k-float model, clients in separate processes; the CPU one commit"
          " costs each side\n(process CPU time / commits) and the rate those costs allow on "
          f"{os.cpu_count()} cores")
    print(f"{'clients':>8} | {'wire':>9} | {'commits/s':>10} | {'server us':>9} | "
          f"{'client us':>9} | {'cores allow':>11} | {'one GIL allows':>14}")
    cores = os.cpu_count() or 1
    for k in args.clients:
        for kind in ("raw", "ps"):
            r = commit_rate(k, args.seconds, kind=kind)
            allow = cores * 1e6 / (r["server_us"] + r["client_us"])
            print(f"{k:>8} | {'raw' if kind == 'raw' else 'distkeras':>9} | {r['rate']:>10.0f} | "
                  f"{r['server_us']:>9.0f} | {r['client_us']:>9.0f} | {allow:>11.0f} | "
                  f"{1e6 / r['server_us']:>14.0f}")
    if args.clients:
        cost = software_cost()
        print(f"\none commit+pull in one thread on a socketpair (no waits: the work alone, both "
              f"sides): distkeras {cost['framed']:.1f} us, raw {cost['raw']:.1f} us; the frames, "
              f"tags and Python add {cost['framed'] - cost['raw']:.1f} us per commit, most of it "
              "on the server's GIL")
    print("\ntargets: commit+pull / raw >= 0.8 at 10 MB and 100 MB; >= 15,000 commits/s from 2 "
          "clients and >= 10,000 from 32")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--bandwidth-child":
        bandwidth_child(sys.argv[2:])
    else:
        main()
