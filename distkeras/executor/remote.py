"""The code that runs inside Spark executors: one task = one worker = one model replica.

``train_task(spec)`` returns the function given to ``DataFrame.mapInArrow``. The task reads its
partition once (Arrow batches → numpy), rebuilds the model from JSON, registers with the
driver's coordinator, and runs the training loop shared by every algorithm: a window of local
steps in one compiled call (``algorithm.local_steps``), then the algorithm's exchange
(``algorithm.exchange``: the parameter server, a ring all-reduce, gossip with peers, or none),
progress reports to the coordinator a few times a second, an ``EPOCH_END`` per epoch. The spec is
plain JSON-able values, the per-run secret and the algorithm object, all in Spark's task
closure; no model object is ever pickled, and nothing is pickled on distkeras' own sockets.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from distkeras import messages
from distkeras.executor.feed import FeedError, FeedSpec

log = logging.getLogger(__name__)

STATUS_SCHEMA = pa.schema([("worker", pa.int32()), ("attempt", pa.int32()),
                           ("epochs", pa.int32()), ("samples", pa.int64()),
                           ("seconds", pa.float64()), ("compute_seconds", pa.float64()),
                           ("exchange_seconds", pa.float64()), ("wait_seconds", pa.float64()),
                           ("bytes_sent", pa.int64()), ("bytes_received", pa.int64()),
                           ("exchanges", pa.int64()), ("peers", pa.string()),
                           ("host", pa.string()), ("pid", pa.int64()),
                           ("started_at", pa.float64()), ("training_from", pa.float64()),
                           ("finished_at", pa.float64()), ("learning_rate", pa.float64()),
                           ("threads", pa.int32()), ("missed_commits", pa.int64()),
                           ("read_seconds", pa.float64()), ("setup_seconds", pa.float64()),
                           ("first_window_seconds", pa.float64())])
STATUS_DDL = ("worker int, attempt int, epochs int, samples bigint, seconds double, "
              "compute_seconds double, exchange_seconds double, wait_seconds double, "
              "bytes_sent bigint, bytes_received bigint, exchanges bigint, peers string, "
              "host string, pid bigint, started_at double, training_from double, "
              "finished_at double, learning_rate double, threads int, missed_commits bigint, "
              "read_seconds double, setup_seconds double, first_window_seconds double")
PROGRESS_INTERVAL = 0.25   # seconds between progress reports to the coordinator
COORDINATOR_HINT = ("Set spark.driver.host (or the trainer's ps_host=) to an address the "
                    "executors can reach, and let them reach the driver's ephemeral ports (the "
                    "coordinator's, and the parameter server's ps_port=).")


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


def train_task(spec: dict) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function that trains one worker on its partition."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ctx = _task_context()
        worker = ctx.partitionId() if ctx else 0
        attempt = ctx.attemptNumber() if ctx else 0
        t0 = time.perf_counter()
        source = _source(spec, batches, worker)
        stats = _train_worker(spec, source, worker, attempt, ctx)
        stats["read_seconds"] = time.perf_counter() - t0 - stats["seconds"]
        yield pa.RecordBatch.from_pylist([stats], schema=STATUS_SCHEMA)

    return run


def warm_up_task(threads: int | None) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function that imports TensorFlow and Keras in a Python worker with
    the training tasks' thread count, before they run (``pipeline.warm_up_workers``); it
    returns the worker's pid."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from distkeras.executor.replica import setup_tensorflow

        for _ in batches:
            pass
        cpus, gpus = _task_resources(_task_context())
        setup_tensorflow(threads or cpus, gpus)
        import keras  # noqa: F401 - the import is the work

        yield pa.RecordBatch.from_pylist([{"pid": os.getpid()}])

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
    for inputs, x in zip(feed.inputs, xs):     # the driver's data checks leave this to us
        bad = x.size - int(np.count_nonzero(np.isfinite(x)))
        if bad:
            raise FeedError(f"training data: columns {inputs.columns} have {bad} NaN/inf "
                            f"value{'s' if bad > 1 else ''} "
                            f"(worker {worker}'s partition); clean or impute them (e.g. "
                            "F.nanvl / df.fillna) before training")
    return MemorySource(xs, y, int(spec["seed"]), worker)


def _take_learning_rate(reply, replica, algorithm, known: int) -> int:
    """Apply a learning rate the driver sent with ``reply`` (newer than version ``known``) to
    the replica's optimizer and to the rule (SlowMo's γ); return the version now held."""
    body = reply.payload if isinstance(reply.payload, dict) else None
    if not body or not isinstance(body.get("lr_version"), int) or body["lr_version"] <= known:
        return known
    value = body.get("learning_rate")
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"the driver sent learning rate {value!r}; expected a positive number")
    replica.learning_rate = float(value)
    algorithm.learning_rate = float(value)
    return body["lr_version"]


def _worker_context(spec: dict, worker: int, ctx, control):
    """What the algorithm's exchange needs to know of this worker and the run."""
    from pyspark import BarrierTaskContext

    from distkeras.exchange import WorkerContext

    run = spec["run"]
    return WorkerContext(
        worker=worker, num_workers=int(spec["num_workers"]), secret=run["secret"],
        coordinator=tuple(run["coordinator"]),
        parameter_server=tuple(run["ps"]) if run.get("ps") else None,
        connect_timeout=run["connect_timeout"], round_timeout=run["round_timeout"],
        tls_cert=run.get("tls_cert"), seed=int(spec["seed"]), peer_host=run.get("peer_host"),
        peer_ports=tuple(run["peer_ports"]) if run.get("peer_ports") else None,
        overlap=bool(spec.get("overlap")),
        barrier=ctx if isinstance(ctx, BarrierTaskContext) else None, control=control)


def _train_worker(spec: dict, source, worker: int, attempt: int, ctx) -> dict:
    from distkeras.exchange import check_finite
    from distkeras.executor.replica import Replica, build_model, setup_tensorflow
    from distkeras.transport import Client, PSRemoteError, pinned_tls

    started, started_at = time.perf_counter(), time.time()
    cpus, gpus = _task_resources(ctx)
    tf = setup_tensorflow(spec.get("threads") or cpus, gpus)  # threads: a local master's share
    import keras

    keras.utils.set_random_seed(int(spec["seed"]) + worker)
    model = build_model(spec["model_json"], spec["loss"], spec["optimizer"], spec["metrics"])
    replica = Replica(model, spec.get("jit_compile", "auto"))
    setup_seconds, first_window_seconds = time.perf_counter() - started, None
    algorithm = spec["algorithm"]
    rng = np.random.default_rng([int(spec["seed"]), worker, 1])
    batch, steps, epochs = int(spec["batch_size"]), int(spec["steps_per_epoch"]), int(spec["epochs"])
    run = spec["run"]
    samples, epochs_run, compute_seconds = 0, 0, 0.0
    with Client(*run["coordinator"], run["secret"], worker, connect_timeout=run["connect_timeout"],
                ssl_context=pinned_tls(run.get("tls_cert")), role="the driver's coordinator",
                hint=COORDINATOR_HINT) as control:
        with algorithm.exchange(_worker_context(spec, worker, ctx, control)) as exchange:
            hello = control.request(messages.HELLO, payload={
                "pid": os.getpid(), "host": socket.gethostname(), "attempt": attempt,
                "endpoint": exchange.endpoint})
            start_epoch = int(hello.payload["start_epoch"])
            initial = (None if exchange.needs_parameter_server
                       else control.request(messages.PULL).payload.copy())
            start = exchange.start(initial)
            training_from = time.time()   # the peers met: the timeline of a run shows overlaps
            theta = start          # the replica's weights after the last window (or exchange)
            pending = 0            # samples not yet reported to the coordinator
            reported_at = time.perf_counter()
            stop = False
            lr_version = 0         # the driver's learning-rate changes taken so far
            for epoch in range(start_epoch, epochs):
                source.start_epoch(epoch)
                replica.reset_metrics()
                exchanged_before = exchange.stats.exchange_seconds
                step = since_exchange = 0
                window = algorithm.window_length(rng, steps)
                while step < steps and not stop:
                    k = min(window - since_exchange, steps - step)
                    t0, inside = time.perf_counter(), exchange.stats.exchange_seconds
                    xs, y = source.take(k * batch)
                    theta = algorithm.local_steps(
                        replica, exchange, [x.reshape((k, batch) + x.shape[1:]) for x in xs],
                        y.reshape((k, batch) + y.shape[1:]), start)
                    # exchanges inside the window (AR-SGD's gradients) are not compute
                    compute_seconds += (time.perf_counter() - t0
                                        - (exchange.stats.exchange_seconds - inside))
                    if first_window_seconds is None:     # tracing and XLA compilation
                        first_window_seconds = time.perf_counter() - t0
                    step += k
                    since_exchange += k
                    pending += k * batch
                    start = None
                    check_finite(theta, "weights", f"worker {worker}, epoch {epoch}, step {step}")
                    if since_exchange == window or step == steps:
                        try:
                            start = exchange.after_window(theta, since_exchange)
                        except PSRemoteError as exc:     # the server refused what we sent
                            raise PSRemoteError(f"worker {worker}, epoch {epoch}, step {step}: "
                                                f"{exc}") from None
                        if start is not None:
                            theta = start = np.ascontiguousarray(start, dtype=np.float32)
                        since_exchange = 0
                        window = algorithm.window_length(rng, steps)
                    if time.perf_counter() - reported_at >= PROGRESS_INTERVAL:
                        reply = control.request(messages.PROGRESS, aux=pending, payload={
                            "exchanges": exchange.stats.exchanges})
                        lr_version = _take_learning_rate(reply, replica, algorithm, lr_version)
                        samples, pending = samples + pending, 0
                        reported_at = time.perf_counter()
                        stop = bool(reply.flags & messages.FLAG_STOP)
                settled = exchange.settle(theta)     # nothing in flight over an epoch end
                if settled is not None:
                    theta = start = np.ascontiguousarray(settled, dtype=np.float32)
                if step < steps:
                    break           # stopped mid-epoch: this epoch is not complete
                if exchange.model == "mean":
                    control.request(messages.REPLICA, payload=theta, aux=epoch)
                logs = {**replica.metrics(), "learning_rate": replica.learning_rate,
                        "exchange_seconds": exchange.stats.exchange_seconds - exchanged_before}
                reply = control.request(messages.EPOCH_END, aux=pending,
                                        payload={"epoch": epoch, "logs": logs})
                lr_version = _take_learning_rate(reply, replica, algorithm, lr_version)
                samples, pending = samples + pending, 0
                epochs_run += 1
                if stop or reply.flags & messages.FLAG_STOP:
                    break
            theta = exchange.finish(theta)
            if exchange.model in ("mean", "members"):
                control.request(messages.FINAL, payload=theta)
            control.request(messages.DONE)
    return {"worker": worker, "attempt": attempt, "epochs": epochs_run, "samples": samples,
            "seconds": time.perf_counter() - started, "compute_seconds": compute_seconds,
            "learning_rate": replica.learning_rate,
            "threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "setup_seconds": setup_seconds, "first_window_seconds": first_window_seconds,
            **exchange.stats.as_row(), "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": started_at, "training_from": training_from, "finished_at": time.time()}
