"""Ring all-reduce bandwidth against the same all-reduce, and the same bytes, on raw sockets.

n worker processes (as executors are) each hold a float32 vector of S MB and compute the mean
with :class:`distkeras.exchange.RingAllReduce` (authenticated frames, chunked reduce-scatter +
all-gather, sums into the vector). Two baselines, in the same run and the same processes, on a
raw TCP ring (``sendall`` / ``recv_into`` preallocated buffers): the same ring all-reduce with
no frames, tags or acknowledgements (``raw allred``: the wire's like-for-like reference), and
every worker streaming the same 2(n−1)/n · S bytes to its next neighbour while receiving as
many from its previous one (``raw stream``: the bytes alone, no arithmetic). MB/s = bytes
each worker sends / seconds; the ratios are distkeras MB/s / each baseline's (target ≥ 0.8).
Also printed: the CPU milliseconds one worker's process spends per round in each (with every
worker on one machine, the cores are the limit). Median of ``--rounds`` rounds.

Usage::

    python benchmarks/allreduce.py [--sizes 1 10 100] [--workers 2 4] [--rounds 7]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distkeras import messages  # noqa: E402
from distkeras.driver.coordinator import Coordinator  # noqa: E402
from distkeras.exchange import RingExchange, WorkerContext  # noqa: E402
from distkeras.exchange.ring import SEGMENT, recv_chunk, send_chunk  # noqa: E402
from distkeras.transport import Client  # noqa: E402


def _recv_exact(sock, view):
    got = 0
    while got < len(view):
        k = sock.recv_into(view[got:], len(view) - got)
        if not k:
            raise ConnectionError("closed")
        got += k


def _raw_allreduce(rank, n, vector, out, nxt, prev, segment):
    """The same ring all-reduce (mean) on plain sockets: reduce-scatter then all-gather over n
    chunks, each received segment by segment and added as it lands, the owner scaling its
    complete chunk; no frames, tags or acknowledgements. The wire's reference: what is left
    between this and :class:`RingAllReduce` is the price of the transport."""
    bounds = np.linspace(0, vector.size, n + 1).astype(np.int64)
    part = lambda c, x: x[bounds[c]:bounds[c + 1]]  # noqa: E731
    scratch = np.empty(min(segment, int(np.diff(bounds).max())), np.float32)
    for step in range(2 * (n - 1)):
        send_c, recv_c = send_chunk(rank, n, step), recv_chunk(rank, n, step)
        if step == n - 1:
            part(send_c, out)[:] *= np.float32(1.0 / n)
        src = part(send_c, vector if step == 0 else out)
        sender = threading.Thread(target=nxt.sendall, args=(memoryview(src).cast("B"),))
        sender.start()
        dst, mine = part(recv_c, out), part(recv_c, vector)
        for a in range(0, dst.size, segment):
            if step < n - 1:
                got = scratch[:min(segment, dst.size - a)]
                _recv_exact(prev, memoryview(got).cast("B"))
                np.add(mine[a:a + got.size], got, out=dst[a:a + got.size])
            else:
                _recv_exact(prev, memoryview(dst[a:a + segment]).cast("B"))
        sender.join()
    return out


def _raw_rings(rank, n, vector, listener, table, barrier, rounds):
    """Times of ``rounds`` raw rounds of each baseline: ``stream`` sends the all-reduce's bytes
    to rank+1 in one piece while receiving as many from rank−1; ``allreduce`` is
    :func:`_raw_allreduce` on the same sockets."""
    nxt = socket.create_connection(table[(rank + 1) % n])
    nxt.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    prev, _ = listener.accept()
    nbytes = int(2 * (n - 1) / n * vector.nbytes)
    payload, buf = np.ones(nbytes, np.uint8), np.empty(nbytes, np.uint8)
    out = np.empty_like(vector)

    def stream():
        sender = threading.Thread(target=nxt.sendall, args=(memoryview(payload),))
        sender.start()
        _recv_exact(prev, memoryview(buf))
        sender.join()

    times: dict = {"stream": [], "allreduce": []}
    cpu = dict.fromkeys(times, 0.0)
    for _ in range(rounds):
        for kind, run in (("stream", stream), ("allreduce", lambda: _raw_allreduce(
                rank, n, vector, out, nxt, prev, SEGMENT))):
            barrier.wait()
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            cpu[kind] += time.process_time() - c0
            barrier.wait()
            times[kind].append(time.perf_counter() - t0)
    assert np.allclose(out[:10], (n - 1) / 2), out[:10]
    nxt.close()
    prev.close()
    return {k: (statistics.median(v), cpu[k] / rounds) for k, v in times.items()}


def worker(rank, n, size_mb, rounds, coordinator, secret, raw_ports, barrier, results):
    size = int(size_mb * 1e6) // 4
    vector = np.full(size, float(rank), np.float32)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    raw_ports.put((rank, listener.getsockname()[1]))
    barrier.wait()
    table = {}
    while len(table) < n:            # everyone's raw port (re-queued for the others)
        r, p = raw_ports.get()
        table[r] = ("127.0.0.1", p)
        raw_ports.put((r, p))
    barrier.wait()
    sent = 2 * (n - 1) / n * size * 4
    raw = _raw_rings(rank, n, vector, listener, table, barrier, rounds)
    with Client(*coordinator, secret, rank, connect_timeout=10) as control:
        ctx = WorkerContext(worker=rank, num_workers=n, secret=secret, coordinator=coordinator,
                            peer_host="127.0.0.1", control=control, round_timeout=120)
        with RingExchange(None, ctx) as ring:
            control.request(messages.HELLO, payload={"endpoint": ring.endpoint})
            ring.start(vector)
            out = np.empty_like(vector)          # AR-SGD reuses its gradient buffer too
            ring.mean(vector, out)               # connect + warm up
            times, cpu = [], 0.0
            for _ in range(rounds):
                barrier.wait()
                t0, c0 = time.perf_counter(), time.process_time()
                mean = ring.mean(vector, out)
                cpu += time.process_time() - c0
                barrier.wait()
                times.append(time.perf_counter() - t0)
            assert np.allclose(mean[:10], (n - 1) / 2), mean[:10]
        control.request(messages.DONE)
    results.put((rank, sent, raw["stream"], raw["allreduce"],
                 (statistics.median(times), cpu / rounds)))


def measure(n, size_mb, rounds):
    ctx = mp.get_context("spawn")
    with Coordinator(n, np.zeros(1, np.float32)) as coord:
        queue, results, barrier = ctx.Queue(), ctx.Queue(), ctx.Barrier(n)
        procs = [ctx.Process(target=worker, args=(r, n, size_mb, rounds, coord.address,
                                                  coord.secret, queue, barrier, results))
                 for r in range(n)]
        for p in procs:
            p.start()
        rows = [results.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(30)
    sent = rows[0][1]
    # MB/s: a round ends when the slowest worker is done; CPU: ms a worker's process spends
    return [(sent / max(r[k][0] for r in rows) / 1e6, 1e3 * statistics.mean(r[k][1] for r in rows))
            for k in (2, 3, 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 10, 100])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"ring all-reduce vs raw loopback ring, median of {args.rounds} rounds, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print("MB/s each worker sends; raw stream: the bytes alone; raw all-reduce: the same algorithm "
          "on plain sockets")
    print("and the CPU ms one worker's process spends per round (all threads, kernel included): "
          "with every worker on this machine the cores are the limit")
    print(f"{'workers':>7} {'MB':>6} {'raw stream':>10} {'raw allred':>10} {'distkeras':>10} "
          f"{'/stream':>8} {'/raw allred':>11} | {'CPU ms: stream':>14} {'allred':>7} "
          f"{'distkeras':>9}")
    for n in args.workers:
        for size in args.sizes:
            (stream, c_s), (raw, c_r), (ring, c_d) = measure(n, size, args.rounds)
            print(f"{n:>7} {size:>6g} {stream:>10.0f} {raw:>10.0f} {ring:>10.0f} "
                  f"{ring / stream:>8.2f} {ring / raw:>11.2f} | {c_s:>14.1f} {c_r:>7.1f} "
                  f"{c_d:>9.1f}", flush=True)
    print("target: distkeras / raw >= 0.8")


if __name__ == "__main__":
    main()
