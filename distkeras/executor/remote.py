"""The code that runs inside Spark executors: one task = one worker = one model replica.

``train_task(spec)`` returns the function given to ``DataFrame.mapInArrow``. The task reads its
partition once (Arrow batches → numpy), rebuilds the model from its ``.keras`` archive
(``distkeras.portable``), registers with the driver's coordinator, and runs the training loop
shared by every algorithm: a window of local steps in one compiled call
(``algorithm.local_steps``), then the algorithm's exchange
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
from distkeras.executor.replica_cache import REPLICAS, replica_key
from distkeras.feed import FeedError, FeedSpec

log = logging.getLogger(__name__)

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
        try:
            source = _source(spec, batches, worker)
        except Exception as exc:
            where = _Where()
            where.stage = "reading its partition"
            _report_failure(spec, worker, None, exc, where)
            raise
        stats = _train_worker(spec, source, worker, attempt, ctx)
        stats["read_seconds"] = time.perf_counter() - t0 - stats["seconds"]
        yield pa.RecordBatch.from_pylist([stats], schema=messages.STATUS_SCHEMA)

    return run


def warm_up_task(threads: int | None, backend: str | None = None
                 ) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function that imports Keras and its ``backend`` in a Python worker
    with the training tasks' thread count, before they run (``pipeline.warm_up_workers``); it
    returns the worker's pid."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from distkeras import backends

        for _ in batches:
            pass
        cpus, gpus = _task_resources(_task_context())
        backends.prepare(backend or backends.configured(), threads or cpus, gpus)
        _first_trace()
        yield pa.RecordBatch.from_pylist([{"pid": os.getpid()}])

    return run


_TRACED: list = []


def _first_trace() -> None:
    """Once per Python worker: one window of a two-weight model, run as a fit's first window
    runs (``jit_compile="auto"``, a short plan), so that the fit's first window finds the
    parts of Keras and its backend that load on first use loaded (the HLF classifier's first
    window: 0.43 -> 0.29 s on one thread)."""
    if _TRACED:
        return
    import keras

    from distkeras.executor.replica import Replica
    from distkeras.feed import Window

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    replica = Replica(model, jit_compile="auto")
    replica.plan(1)
    replica.train(Window([np.zeros((2, 2), np.float32)], [np.eye(2, dtype=np.float32)]).steps(1))
    _TRACED.append(os.getpid())


def _source(spec: dict, batches: Iterator[pa.RecordBatch], worker: int):
    """The worker's data: its partition in memory, or its staged Parquet files streamed."""
    from distkeras.executor.sources import MemorySource, StreamSource
    from distkeras.vectors import all_finite

    feed = FeedSpec.from_dict(spec["feed"])
    stream = spec.get("stream")
    if stream:
        for _ in batches:   # one placeholder row per worker
            pass
        prefix = f"part-{worker:05d}"
        files = [f for f in stream["files"] if f.rsplit("/", 1)[-1].startswith(prefix)]
        return StreamSource(files, feed, int(spec["seed"]), worker, stream["reader"])
    rows = feed.read(batches, spec.get("largest_partition"))
    if rows is None:
        raise ValueError(f"worker {worker}: empty partition (more workers than rows?)")
    named = ([(spec.columns, x) for spec, x in zip(feed.inputs, rows.xs)]
             + [([t.column], y) for t, y in zip(feed.targets, rows.ys)])
    for columns, x in named:     # the driver's data checks leave array values to us
        if all_finite(x):
            continue
        bad = x.size - int(np.count_nonzero(np.isfinite(x)))
        if bad:
            raise FeedError(f"training data: columns {columns} have {bad} NaN/inf "
                            f"value{'s' if bad > 1 else ''} "
                            f"(worker {worker}'s partition); clean or impute them (e.g. "
                            "F.nanvl / df.fillna) before training")
    return MemorySource(rows, int(spec["seed"]), worker)


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


def _worker_context(spec: dict, worker: int, ctx, control, params: int):
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
        overlap=bool(spec.get("overlap")), params=params, compression=spec.get("compression"),
        # with services in a task of the job (distkeras.driver.hosted) the barrier stage holds
        # one more task than workers: peers meet through the coordinator then
        barrier=ctx if isinstance(ctx, BarrierTaskContext) and not spec.get("hosted") else None,
        control=control)


def _control_client(spec: dict, worker: int, connect_timeout: float | None = None):
    from distkeras.transport import Client, pinned_tls

    run = spec["run"]
    return Client(*run["coordinator"], run["secret"], worker,
                  connect_timeout=run["connect_timeout"] if connect_timeout is None
                  else connect_timeout, ssl_context=pinned_tls(run.get("tls_cert")),
                  role="the driver's coordinator", hint=COORDINATOR_HINT)


def _build_replica(spec: dict, worker: int, ctx):
    """The driver's Keras backend set up for the task's cores and GPUs, the user's model
    rebuilt, and the replica around it: the compiled one this Python worker kept from an
    earlier fit of the same model, restarted with this fit's values, or a new one (returns
    the backend, the replica, its cache key and whether it was reused)."""
    from distkeras import backends
    from distkeras.state import StateLayout

    cpus, gpus = _task_resources(ctx)
    backend = backends.prepare(spec.get("backend") or backends.configured(),
                               spec.get("threads") or cpus, gpus)   # threads: a local share
    import keras

    keras.utils.set_random_seed(int(spec["seed"]) + worker)
    portable, layout = spec["model"], StateLayout.from_dict(spec["layout"])
    model = portable.build()
    key = replica_key(spec, model)
    replica = REPLICAS.take(key)
    if replica is not None:
        try:
            replica.restart(model)
            return backend, replica, key, True
        except ValueError as exc:
            log.warning("a compiled replica of this model could not be reused (%s); building "
                        "a new one", exc)
    return backend, compiled_replica(spec, model, backend, layout), key, False


def compiled_replica(spec: dict, model, backend, layout):
    """A new replica of ``model`` (just built from the spec's archive), compiled with the run's
    loss, optimizer and metrics, its BatchNorm statistics paced for the workers."""
    from distkeras.executor.replica import Replica
    from distkeras.state import pace_statistics

    spec["model"].compile(model, **spec["compile"])
    if not spec["algorithm"].exchange_type.run_model.ensemble:   # members: models on their own
        pace_statistics(model, int(spec["num_workers"]))
    return Replica(model, backend, spec.get("jit_compile", "auto"), layout)


class _Where:
    """Where a worker is, for the report of an exception it raised."""

    def __init__(self) -> None:
        self.stage, self.epoch, self.step = "building the model replica", None, None

    def __str__(self) -> str:
        if self.epoch is None:
            return self.stage
        return f"{self.stage}, epoch {self.epoch}, step {self.step}"


def _train_worker(spec: dict, source, worker: int, attempt: int, ctx) -> dict:
    started, started_at = time.perf_counter(), time.time()
    where = _Where()
    control = None
    try:
        backend, replica, key, reused = _build_replica(spec, worker, ctx)
        setup_seconds = time.perf_counter() - started
        where.stage = "meeting the driver and the peers"
        with _control_client(spec, worker) as control:
            with spec["algorithm"].exchange(_worker_context(
                    spec, worker, ctx, control, replica.weights.params)) as exchange:
                loop = _Loop(spec, replica, exchange, control, worker, attempt, where)
                loop.run(source)
                control.request(messages.DONE)
        replica.release()
        REPLICAS.keep(key, replica)       # the next fit of this model reuses it
    except Exception as exc:
        _report_failure(spec, worker, control, exc, where)
        raise
    return {"worker": worker, "attempt": attempt, "epochs": loop.epochs_run,
            "samples": loop.samples, "seconds": time.perf_counter() - started,
            "compute_seconds": loop.compute_seconds, "learning_rate": replica.learning_rate,
            "threads": backend.threads(), "backend": backend.name,
            "setup_seconds": setup_seconds, "first_window_seconds": loop.first_window_seconds,
            "reused_replica": int(reused),
            **exchange.stats.as_row(), "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": started_at, "training_from": loop.training_from,
            "finished_at": time.time()}


class _Loop:
    """The training loop shared by every algorithm: windows of local steps, the exchange after
    each, progress reports, epoch ends."""

    def __init__(self, spec, replica, exchange, control, worker, attempt, where: _Where):
        self.spec, self.replica, self.exchange, self.control = spec, replica, exchange, control
        self.worker, self.where = worker, where
        self.algorithm = spec["algorithm"]
        self.rng = np.random.default_rng([int(spec["seed"]), worker, 1])
        self.batch, self.steps = int(spec["batch_size"]), int(spec["steps_per_epoch"])
        self.samples = self.epochs_run = self.pending = self.lr_version = 0
        self.compute_seconds, self.first_window_seconds = 0.0, None
        self.stop = False
        hello = control.request(messages.HELLO, payload={
            "pid": os.getpid(), "host": socket.gethostname(), "attempt": attempt,
            "endpoint": exchange.endpoint})
        self.start_epoch = int(hello.payload["start_epoch"])

    def run(self, source) -> None:
        exchange, control = self.exchange, self.control
        initial = (None if exchange.needs_parameter_server
                   else control.request(messages.PULL).payload.copy())
        self.start = exchange.start(initial)
        self.training_from = time.time()   # the peers met: the timeline of a run shows overlaps
        self.theta = self.start    # the replica's weights after the last window (or exchange)
        self.replica.plan((int(self.spec["epochs"]) - self.start_epoch) * self.steps)
        self.reported_at = time.perf_counter()
        for epoch in range(self.start_epoch, int(self.spec["epochs"])):
            self.where.stage, self.where.epoch, self.where.step = "training", epoch, 0
            complete = self._epoch(source, epoch)
            if not complete:
                break           # stopped mid-epoch: this epoch is not complete
            if self._epoch_end(epoch):
                break
        self.where.stage = "finishing"
        self.theta = exchange.finish(self.theta)
        if exchange.run_model.final_replicas:
            control.request(messages.FINAL, payload=self.theta)

    def _epoch(self, source, epoch: int) -> bool:
        from distkeras.exchange import check_finite
        from distkeras.transport import RemoteError

        exchange, algorithm, steps = self.exchange, self.algorithm, self.steps
        source.start_epoch(epoch)
        self.replica.reset_metrics()
        self.exchanged_before = exchange.stats.exchange_seconds
        step = since_exchange = 0
        window = algorithm.window_length(self.rng, steps)
        while step < steps and not self.stop:
            k = min(window - since_exchange, steps - step)
            t0, inside = time.perf_counter(), exchange.stats.exchange_seconds
            batches = source.take(k * self.batch).steps(k)
            self.theta = algorithm.local_steps(self.replica, exchange, batches, self.start)
            # exchanges inside the window (AR-SGD's gradients) are not compute
            self.compute_seconds += (time.perf_counter() - t0
                                     - (exchange.stats.exchange_seconds - inside))
            if self.first_window_seconds is None:     # tracing and XLA compilation
                self.first_window_seconds = time.perf_counter() - t0
            step += k
            since_exchange += k
            self.where.step = step
            self.pending += k * self.batch
            self.start = None
            check_finite(self.theta, "weights", f"worker {self.worker}, epoch {epoch}, step {step}")
            if since_exchange == window or step == steps:
                try:
                    start = exchange.after_window(self.theta, since_exchange)
                except RemoteError as exc:     # the server refused what we sent
                    raise RemoteError(f"worker {self.worker}, epoch {epoch}, step {step}: "
                                        f"{exc}") from None
                if start is not None:
                    self.theta = self.start = np.ascontiguousarray(start, dtype=np.float32)
                since_exchange = 0
                window = algorithm.window_length(self.rng, steps)
            if time.perf_counter() - self.reported_at >= PROGRESS_INTERVAL:
                self._progress()
        settled = exchange.settle(self.theta)     # nothing in flight over an epoch end
        if settled is not None:
            self.theta = self.start = np.ascontiguousarray(settled, dtype=np.float32)
        return step >= steps

    def _progress(self) -> None:
        reply = self.control.request(messages.PROGRESS, aux=self.pending, payload={
            "exchanges": self.exchange.stats.exchanges})
        self._take_reply(reply)
        self.reported_at = time.perf_counter()
        self.stop = bool(reply.flags & messages.FLAG_STOP)

    def _take_reply(self, reply) -> None:
        self.lr_version = _take_learning_rate(reply, self.replica, self.algorithm,
                                              self.lr_version)
        self.samples, self.pending = self.samples + self.pending, 0

    def _epoch_end(self, epoch: int) -> bool:
        """Report the epoch; True when training stops here."""
        exchange, control = self.exchange, self.control
        if exchange.run_model.epoch_replicas:
            control.request(messages.REPLICA, payload=self.theta, aux=epoch)
        logs = {**self.replica.metrics(), "learning_rate": self.replica.learning_rate,
                "exchange_seconds": exchange.stats.exchange_seconds - self.exchanged_before}
        reply = control.request(messages.EPOCH_END, aux=self.pending,
                                payload={"epoch": epoch, "logs": logs})
        self._take_reply(reply)
        self.epochs_run += 1
        return self.stop or bool(reply.flags & messages.FLAG_STOP)


def _report_failure(spec: dict, worker: int, control, exc: BaseException, where: _Where) -> None:
    """Tell the coordinator what this worker raised, and where, before its connections close
    (so that the driver reports the cause, not the loss of the worker it led to). Best effort:
    a connection that is itself the problem is left alone."""
    from distkeras.transport import TransportError

    if isinstance(exc, (TransportError, ConnectionError)):
        return      # the services or a peer failed this worker: they know, and say so
    report = {"error": f"{type(exc).__name__}: {exc}"[:4000], "where": str(where),
              "line": _user_line(exc), "final": not getattr(exc, "retry_helps", True)}
    try:
        if control is not None and control.connected:
            control.request(messages.FAILED, payload=report)
            return
        with _control_client(spec, worker, connect_timeout=5.0) as fresh:
            fresh.request(messages.FAILED, payload=report)
    except Exception as report_error:  # noqa: BLE001 - the original error matters, not this
        log.warning("worker %d could not report its failure to the driver: %s", worker,
                    report_error)


def _user_line(exc: BaseException) -> str | None:
    """``file:line in function`` of the innermost frame of the traceback in user code (not in
    Python, installed packages or distkeras), or None."""
    import traceback

    from distkeras.custom_objects import is_user_file

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if is_user_file(f.filename)]
    if not frames:
        return None
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno} in {frame.name}"
