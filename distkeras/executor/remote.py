"""The code that runs inside Spark executors: one task = one worker = one model replica.

``train_task(spec)`` returns the function given to ``DataFrame.mapInArrow``. The task reads its
partition once (Arrow batches → numpy), rebuilds the model from JSON, pulls θ̃ from the driver's
parameter server, and then runs the shared training loop: λ local steps in one graph call, an
exchange shaped by the algorithm's worker rule, an ``EPOCH_END`` report per epoch. The spec is a
plain dict of JSON-able values (+ the per-run secret); no model object is ever pickled.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from distkeras import messages
from distkeras.executor.feed import FeedSpec

log = logging.getLogger(__name__)

STATUS_SCHEMA = pa.schema([("worker", pa.int32()), ("attempt", pa.int32()),
                           ("epochs", pa.int32()), ("samples", pa.int64()),
                           ("seconds", pa.float64()), ("compute_seconds", pa.float64()),
                           ("exchange_seconds", pa.float64()), ("host", pa.string()),
                           ("pid", pa.int64())])
STATUS_DDL = ("worker int, attempt int, epochs int, samples bigint, seconds double, "
              "compute_seconds double, exchange_seconds double, host string, pid bigint")


def _task_context():
    from pyspark import BarrierTaskContext, TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        return None
    try:
        return BarrierTaskContext.get()
    except Exception:  # not a barrier stage
        return ctx


def _task_resources(ctx) -> tuple[int, list[str] | None]:
    cpus = int(ctx.cpus()) if ctx is not None else 1
    gpus = None
    if ctx is not None:
        resources = ctx.resources() or {}
        if "gpu" in resources:
            gpus = list(resources["gpu"].addresses)
    return cpus, gpus


def client_tls(cert_pem: str | None):
    """Client-side TLS pinned to the driver's certificate (no hostname check: the pin is the
    identity, and executors often reach the driver by IP)."""
    if not cert_pem:
        return None
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=cert_pem)
    return context


def train_task(spec: dict) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function that trains one worker on its partition."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ctx = _task_context()
        worker = ctx.partitionId() if ctx else 0
        attempt = ctx.attemptNumber() if ctx else 0
        stats = _train_worker(spec, _source(spec, batches, worker), worker, attempt, ctx)
        yield pa.RecordBatch.from_pylist([stats], schema=STATUS_SCHEMA)

    return run


def _source(spec: dict, batches: Iterator[pa.RecordBatch], worker: int):
    """The worker's data: its partition in memory, or its staged Parquet files streamed."""
    from distkeras.executor.sources import MemorySource, StreamSource

    feed = FeedSpec.from_dict(spec["feed"])
    stream = spec.get("stream")
    if stream:
        for _ in batches:   # one placeholder row per worker
            pass
        prefix = f"part-{worker:05d}"
        files = [f for f in stream["files"] if f.rsplit("/", 1)[-1].startswith(prefix)]
        return StreamSource(files, feed, int(spec["seed"]), worker, stream["reader"])
    batches = list(batches)
    if not batches or sum(b.num_rows for b in batches) == 0:
        raise ValueError(f"worker {worker}: empty partition (more workers than rows?)")
    xs, y = feed.arrays(pa.Table.from_batches(batches))
    return MemorySource(xs, y, int(spec["seed"]), worker)


def _train_worker(spec: dict, source, worker: int, attempt: int, ctx) -> dict:
    from distkeras import algorithms
    from distkeras.executor.replica import Replica, build_model, setup_tensorflow
    from distkeras.transport import Client

    started = time.perf_counter()
    threads, gpus = _task_resources(ctx)
    setup_tensorflow(threads, gpus)
    import keras

    keras.utils.set_random_seed(int(spec["seed"]) + worker)
    model = build_model(spec["model_json"], spec["loss"], spec["optimizer"], spec["metrics"])
    replica = Replica(model, spec.get("jit_compile", "auto"))
    algorithm = algorithms.get(spec["algorithm"], **spec["algorithm_params"])

    batch, steps, epochs = int(spec["batch_size"]), int(spec["steps_per_epoch"]), int(spec["epochs"])
    window = algorithm.communication_window or steps
    ps = spec["ps"]
    samples, epochs_run = 0, 0
    compute_seconds = exchange_seconds = 0.0   # local steps (data + graph call) / commit + reply
    with Client(ps["host"], ps["port"], ps["secret"], worker, connect_timeout=ps["connect_timeout"],
                ssl_context=client_tls(ps.get("tls_cert"))) as client:
        hello = client.request(messages.HELLO, payload={
            "pid": os.getpid(), "host": socket.gethostname(), "attempt": attempt})
        start_epoch = int(hello.payload["start_epoch"])
        anchor = client.request(messages.PULL).payload.copy()
        start = anchor        # weights to load at the next graph call (None: keep the replica's)
        pending = 0          # samples not yet reported to the server
        stop = False
        for epoch in range(start_epoch, epochs):
            source.start_epoch(epoch)
            replica.reset_metrics()
            step = since_exchange = 0
            while step < steps and not stop:
                k = min(window - since_exchange, steps - step)
                exchange = not algorithm.independent and (since_exchange + k == window
                                                          or step + k == steps)
                t0 = time.perf_counter()
                xs, y = source.take(k * batch)
                theta = replica.train([x.reshape((k, batch) + x.shape[1:]) for x in xs],
                                      y.reshape((k, batch) + y.shape[1:]), start=start)
                t1 = time.perf_counter()
                compute_seconds += t1 - t0
                start = None
                step += k
                since_exchange += k
                pending += k * batch
                if not exchange:
                    continue
                reply = client.request(messages.COMMIT, payload=algorithm.worker_send(theta, anchor),
                                       aux=pending)
                anchor = start = np.ascontiguousarray(
                    algorithm.worker_receive(theta, anchor, reply.payload), dtype=np.float32).copy()
                exchange_seconds += time.perf_counter() - t1
                samples += pending
                pending = since_exchange = 0
                stop = bool(reply.flags & messages.FLAG_STOP)
            if step < steps:
                break           # stopped mid-epoch: this epoch is not complete
            reply = client.request(messages.EPOCH_END, aux=pending,
                                   payload={"epoch": epoch, "logs": replica.metrics()})
            samples += pending
            pending = 0
            epochs_run += 1
            if stop or reply.flags & messages.FLAG_STOP:
                break
        if algorithm.independent:
            # start: no local step ran after the pull (a resumed worker that was already done)
            client.request(messages.FINAL, payload=replica.theta if start is None else start)
        client.request(messages.DONE)
    return {"worker": worker, "attempt": attempt, "epochs": epochs_run, "samples": samples,
            "seconds": time.perf_counter() - started, "compute_seconds": compute_seconds,
            "exchange_seconds": exchange_seconds, "host": socket.gethostname(),
            "pid": os.getpid()}
