"""Ring all-reduce bandwidth against a raw loopback ring moving the same bytes.

n worker processes (as executors are) each hold a float32 vector of S MB and compute the mean
with :class:`distkeras.exchange.RingAllReduce` (authenticated frames, chunked reduce-scatter +
all-gather, sums into the vector). The baseline, in the same run and the same processes: a raw
TCP ring where every worker streams the same 2(n−1)/n · S bytes to its next neighbour while
receiving as many from its previous one (``sendall`` / ``recv_into`` a preallocated buffer, no
framing, no arithmetic). MB/s = bytes each worker sends / seconds; the ratio is
all-reduce MB/s / raw MB/s (target ≥ 0.8). Median of ``--rounds`` rounds.

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
from distkeras.transport import Client  # noqa: E402


def _recv_exact(sock, view):
    got = 0
    while got < len(view):
        k = sock.recv_into(view[got:], len(view) - got)
        if not k:
            raise ConnectionError("closed")
        got += k


def _raw_ring(rank, n, nbytes, listener, table, barrier, rounds):
    """Times of ``rounds`` raw rounds: send ``nbytes`` to rank+1 while receiving from rank−1."""
    out = socket.create_connection(table[(rank + 1) % n])
    out.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    inc, _ = listener.accept()
    payload, buf = np.ones(nbytes, np.uint8), np.empty(nbytes, np.uint8)
    times = []
    for _ in range(rounds):
        barrier.wait()
        t0 = time.perf_counter()
        sender = threading.Thread(target=out.sendall, args=(memoryview(payload),))
        sender.start()
        _recv_exact(inc, memoryview(buf))
        sender.join()
        barrier.wait()
        times.append(time.perf_counter() - t0)
    out.close()
    inc.close()
    return times


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
    raw = _raw_ring(rank, n, int(sent), listener, table, barrier, rounds)
    with Client(*coordinator, secret, rank, connect_timeout=10) as control:
        ctx = WorkerContext(worker=rank, num_workers=n, secret=secret, coordinator=coordinator,
                            peer_host="127.0.0.1", control=control, round_timeout=120)
        with RingExchange(None, ctx) as ring:
            control.request(messages.HELLO, payload={"endpoint": ring.endpoint})
            ring.start(vector)
            out = np.empty_like(vector)          # AR-SGD reuses its gradient buffer too
            ring.mean(vector, out)               # connect + warm up
            times = []
            for _ in range(rounds):
                barrier.wait()
                t0 = time.perf_counter()
                mean = ring.mean(vector, out)
                barrier.wait()
                times.append(time.perf_counter() - t0)
            assert np.allclose(mean[:10], (n - 1) / 2), mean[:10]
        control.request(messages.DONE)
    results.put((rank, sent, statistics.median(raw), statistics.median(times)))


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
    raw = max(r[2] for r in rows)          # a round ends when the slowest worker is done
    ring = max(r[3] for r in rows)
    return sent / raw / 1e6, sent / ring / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 10, 100])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"ring all-reduce vs raw loopback ring, median of {args.rounds} rounds, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print(f"{'workers':>7} {'MB':>6} {'raw MB/s':>10} {'ring MB/s':>10} {'ratio':>6}  target >= 0.8")
    for n in args.workers:
        for size in args.sizes:
            raw, ring = measure(n, size, args.rounds)
            print(f"{n:>7} {size:>6g} {raw:>10.0f} {ring:>10.0f} {ring / raw:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
