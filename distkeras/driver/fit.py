"""``Trainer.fit`` on the driver: check the data, start the coordinator (and the parameter server,
for the algorithms that have one), launch one Spark task per worker, and while they train run
the epoch ends (``distkeras.driver.epochs``: progress, epoch logs, validation of the run's
model, callbacks, checkpoint). Always closes the services and cancels the job.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from distkeras import algorithms, tracking
from distkeras.driver import preflight
from distkeras.driver.compile import CompileSettings
from distkeras.driver.coordinator import Coordinator
from distkeras.driver.epochs import Resume, monitor
from distkeras.driver.job import SparkJob, TrainingError
from distkeras.driver.parameter_server import ParameterServer
from distkeras.driver.resources import worker_cores
from distkeras.executor import remote
from distkeras.executor.feed import FeedSpec, feed_spec_for
from distkeras.executor.replica import FlatWeights
from distkeras.model import KerasModel, describe_output
from distkeras.portable import PortableModel, ship_by_value
from distkeras.spark import warn_if_unauthenticated
from distkeras.state import StateLayout

log = logging.getLogger(__name__)
# overlap_communication=None: off. On loopback with every core computing, a round trip is CPU
# work (copies, tags), not latency to hide; the overlap measured slower there (ADAG x2 0.44 vs
# 0.78 of SingleTrainer, HLF-sized model; benchmarks/trainer_overhead.py --overlap both)
OVERLAP_BY_DEFAULT = False
# import TensorFlow in the workers during the data checks: off, it measured slower on 2 cores,
# where the import competes with the checks for the same cores (benchmarks/cold_start.py)
WARM_UP = False
WARM_UP_WAIT = 60.0  # seconds the training job waits for the warm-up at most


def collect_arrays(data, feed: FeedSpec, what: str = "validation data"):
    """Validation data as numpy: a DataFrame is checked and collected through Arrow."""
    if isinstance(data, (tuple, list)):
        x = data[0]
        return (list(x) if isinstance(x, (list, tuple)) else [x]), data[1]
    selected, kinds = preflight.select_feed_columns(data, feed)
    preflight.check_data(selected, feed, kinds, what)
    return feed.arrays(to_arrow(selected))


def to_arrow(df):
    """Collect a DataFrame as a pyarrow Table (pyspark 4 ``toArrow``, 3.5 ``_collect_as_arrow``)."""
    import pyarrow as pa

    if hasattr(df, "toArrow"):
        return df.toArrow()
    batches = df._collect_as_arrow()  # noqa: SLF001 - pyspark 3.5 has no public Arrow collect
    if not batches:
        return pa.Table.from_pandas(df.limit(0).toPandas())
    return pa.Table.from_batches(batches)


def stage_parquet(prepared, trainer) -> tuple[str, list[str]]:
    """Write the prepared partitions as Parquet (file i = worker i) for the streaming feeds."""
    import tempfile
    import uuid

    spark = prepared.sparkSession
    base = trainer.staging_dir
    if base is None:
        if not spark.sparkContext.master.startswith("local"):
            raise ValueError(f"data_feed={trainer.data_feed!r} on a cluster needs staging_dir= "
                             "pointing at storage every executor can read (HDFS, EOS, NFS)")
        base = tempfile.gettempdir()
    if trainer.data_feed == "petastorm":
        from distkeras.executor.sources import _require_petastorm

        _require_petastorm()
    path = f"{base.rstrip('/')}/distkeras-stage-{uuid.uuid4().hex[:12]}"
    (prepared.write.option("parquet.block.size", 8 * 1024 * 1024)
     .option("compression", "snappy").parquet(path))
    files = sorted(spark.read.parquet(path).inputFiles())
    log.info("staged %d Parquet files for streaming under %s", len(files), path)
    return path, files


def remove_path(spark, path: str) -> None:
    """Delete a directory through Hadoop's FileSystem (local, HDFS, ...)."""
    jvm = spark.sparkContext._jvm  # noqa: SLF001 - no Python API for Hadoop filesystems
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(hpath, True)


def server_tls(cert: str | None, key: str | None):
    """Server-side TLS context from PEM files, or None."""
    if not cert:
        return None
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@dataclass
class UserModel:
    """The user's model as a run needs it: what travels to the executors (``portable``), how
    its state is exchanged (``layout``), how the DataFrame feeds it (``feed``), and the
    driver's copy (``driver``, compiled: validated, given to callbacks, returned) with its flat
    view (``flat``)."""

    original: Any
    portable: PortableModel
    layout: StateLayout
    feed: FeedSpec
    driver: Any
    flat: FlatWeights

    @classmethod
    def of(cls, trainer, compiled: CompileSettings) -> "UserModel":
        from distkeras.executor.replica import build_model

        model = trainer.keras_model
        configs = (compiled.loss, compiled.metrics, compiled.optimizer)
        portable = PortableModel.of(model, trainer.custom_objects, extra_configs=configs)
        layout = StateLayout.of(model)
        feed = feed_spec_for(model, trainer.features_col, trainer.label_col, compiled.loss,
                             trainer.input_shapes, trainer.weight_col, trainer.class_weight)
        driver = build_model(portable, compiled.loss, compiled.optimizer, compiled.metrics,
                             compiled.loss_weights)
        return cls(model, portable, layout, feed, driver, FlatWeights(driver, layout))

    def member(self, vector: np.ndarray):
        """A copy of the model (all its state) with ``vector`` as its exchanged state."""
        member = self.portable.build()
        FlatWeights(member, self.layout).set(vector)
        return member


def run_training(estimator, df, validation_data, callbacks):
    """One ``fit`` of ``estimator`` (a :class:`~distkeras.trainers.Trainer`) on ``df``."""
    from distkeras.executor.replica import setup_tensorflow

    began = time.perf_counter()
    setup_tensorflow()
    trainer = estimator.settings()      # every Param's value, read once
    compiled = CompileSettings.of(trainer, estimator.default_optimizer)
    factor = estimator.learning_rate_factor()
    if factor != 1.0:
        log.info("learning rate %.4g x %.3g for %d workers (learning_rate_scaling=%s)",
                 compiled.learning_rate, factor, trainer.num_workers,
                 trainer.learning_rate_scaling)
    compiled = compiled.scaled(factor)
    user = UserModel.of(trainer, compiled)
    barrier = estimator.make_algorithm(compiled.learning_rate).synchronous and \
        trainer.num_workers > 1
    cores = worker_cores(df.sparkSession, trainer.num_workers, trainer.cores_per_worker)
    warming = warm_up(df.sparkSession, cores, trainer.num_workers) if WARM_UP else None
    checked = time.perf_counter()
    data = TrainingData.prepare(df, trainer, user.feed, barrier)
    startup = {"preflight_seconds": time.perf_counter() - checked}
    algorithm = estimator.make_algorithm(compiled.learning_rate, data.steps)
    try:
        val = collect_arrays(validation_data, user.feed) if validation_data is not None else None
        data.stage(trainer)
        _warn_about_windows(algorithm, data.steps)
        run = _Run(estimator, trainer, compiled, algorithm, user, data, cores, val, callbacks)
        history, members = run.train(warming, startup, began)
    finally:
        estimator.coordinator = None
        data.release()
    return KerasModel(user.driver, history=history, feed=user.feed,
                      members=[user.member(v) for v in members],
                      output=describe_output(user.original, compiled.loss),
                      custom_objects=user.portable.custom_objects,
                      prediction_col=trainer.prediction_col,
                      probability_col=trainer.probability_col,
                      raw_prediction_col=trainer.raw_prediction_col)


@dataclass
class TrainingData:
    """The checked training data: ``prepared`` (one partition per worker), ``steps`` per epoch,
    and, for the streaming feeds, the staged Parquet files each worker reads."""

    df: Any
    prepared: Any
    steps: int
    owned: bool                 # the cache is the fit's own: released afterwards
    job_df: Any = None          # what the Spark job maps over
    stream: dict | None = None
    staged: str | None = None

    @classmethod
    def prepare(cls, df, trainer, feed: FeedSpec, barrier: bool) -> "TrainingData":
        in_memory = trainer.data_feed == "memory"     # its workers check the arrays' values
        prepared, rows, owned = preflight.prepare_training_data(
            df, feed, trainer.num_workers, trainer.batch_size, barrier,
            trainer.cores_per_worker, array_values=not in_memory)
        return cls(df, prepared, rows // trainer.batch_size, owned, job_df=prepared)

    def stage(self, trainer) -> None:
        """Write the partitions as Parquet for the streaming feeds ('stream', 'petastorm')."""
        if trainer.data_feed == "memory":
            return
        self.staged, files = stage_parquet(self.prepared, trainer)
        self.stream = {"files": files, "reader": "pyarrow" if trainer.data_feed == "stream"
                       else "petastorm"}
        self.job_df = self.df.sparkSession.range(0, trainer.num_workers, 1, trainer.num_workers)

    def release(self) -> None:
        if self.owned:           # the user's own cache stays
            self.prepared.unpersist()
        if self.staged:
            remove_path(self.df.sparkSession, self.staged)


class _Run:
    """One run's services (coordinator, parameter server), its Spark job and the driver's
    epoch loop, set up in this order and always torn down."""

    def __init__(self, estimator, trainer, compiled, algorithm, user, data, cores, val,
                 callbacks):
        self.estimator, self.trainer, self.compiled = estimator, trainer, compiled
        self.algorithm, self.user, self.data, self.cores = algorithm, user, data, cores
        self.exchange = algorithm.exchange_type
        self.val = None if self.exchange.run_model.ensemble else val
        self.callbacks = callbacks
        self.spark = data.df.sparkSession

    def train(self, warming, startup: dict, began: float):
        trainer, algorithm = self.trainer, self.algorithm
        warn_if_unauthenticated(self.spark)     # the run's secret travels in the task closure
        store, resumed = _open_checkpoint(trainer, self.spark, algorithm, self.exchange,
                                          self.user, self.callbacks)
        trackers = self._trackers()
        host = trainer.ps_host or self.spark.sparkContext.getConf().get("spark.driver.host",
                                                                       "127.0.0.1")
        with contextlib.ExitStack() as services:
            ps, coordinator = self._services(services, host, resumed, store)
            ship_by_value([algorithm] + ([algorithm.base] if hasattr(algorithm, "base") else []))
            spec = _task_spec(self, host, coordinator, ps)
            if warming is not None:     # its workers must be idle, not importing, to be reused
                warming.join(WARM_UP_WAIT)
            startup["submitted_after_seconds"] = time.perf_counter() - began
            submitted = time.time()
            job = SparkJob(self.data.job_df, remote.train_task(spec), remote.STATUS_DDL,
                           barrier=algorithm.synchronous and trainer.num_workers > 1,
                           description=f"distkeras {trainer.name}", cores=self.cores).start()
            history = self._monitor(coordinator, job, trackers, store, resumed)
            history.workers = [r.asDict() for r in job.result()]
            history.startup = startup_summary(startup, submitted, history.workers)
            history.mlflow_run_id = trackers[0].run_id if trackers else None
            if store is not None and not store.keep:
                store.clear()        # completed: a rerun trains afresh (as BackupAndRestore)
            if self.exchange.run_model.epoch_replicas and trainer.num_workers > 1:
                _warn_isolated(history.workers)
            history.ps_stats = coordinator.stats()
            members = ([coordinator.final_models[w] for w in sorted(coordinator.final_models)]
                       if self.exchange.run_model.ensemble else [])
        return history, members

    def _trackers(self) -> list:
        trainer, compiled = self.trainer, self.compiled
        trackers = tracking.loggers(trainer, self.callbacks)
        if trackers:
            example = _input_example(self.user.original, self.val if self.val is not None
                                     else collect_arrays(self.data.prepared.limit(5),
                                                         self.user.feed))
            for tracker in trackers:
                tracker.configure(tracking.run_params(trainer, self.algorithm, compiled.loss,
                                                      compiled.optimizer,
                                                      compiled.single_worker_rate,
                                                      compiled.learning_rate),
                                  example, f"{trainer.name} x{trainer.num_workers}")
        return trackers

    def _services(self, services: contextlib.ExitStack, host: str, resumed, store):
        trainer, algorithm, layout = self.trainer, self.algorithm, self.user.layout
        bind = trainer.ps_bind_host or host
        tls = server_tls(trainer.tls_cert, trainer.tls_key)
        initial = self.user.flat.get()
        ps = None
        if self.exchange.needs_parameter_server:
            ps = services.enter_context(ParameterServer(
                algorithm, initial, trainer.num_workers, host=bind, port=trainer.ps_port,
                ssl_context=tls, round_timeout=trainer.round_timeout,
                updates=resumed["updates"] if resumed else 0, params=layout.params))
        coordinator = services.enter_context(Coordinator(
            trainer.num_workers, initial, synchronous=algorithm.synchronous,
            name=algorithm.name, host=bind, port=0, secret=ps.secret if ps else None,
            ssl_context=tls, round_timeout=trainer.round_timeout, data_service=ps,
            # workers wait at epoch ends while the driver validates the model, runs
            # callbacks and writes the checkpoint: otherwise a fast epoch's val_* are
            # measured on whatever model is current when the driver gets to it
            epoch_barrier=_epoch_barrier(algorithm, self.exchange, bool(self.callbacks)
                                         or self.val is not None or store is not None),
            start_epoch=resumed["epochs"] if resumed else 0, params=layout.params))
        self.estimator.coordinator = coordinator
        return ps, coordinator

    def _monitor(self, coordinator, job, trackers, store, resumed):
        try:
            return monitor(self.trainer, coordinator, job, self.user.driver, self.user.flat,
                           self.val, self.callbacks, self.data.steps,
                           Resume(store, resumed, self.algorithm))
        except BaseException as exc:
            coordinator.request_stop()
            job.cancel()
            for tracker in trackers:
                tracker.on_train_failed(exc)
            error = bad_data(exc, coordinator)
            if error is exc:
                raise
            raise error from exc


EXCHANGES_PER_EPOCH = 4     # fewer per worker and epoch: the workers hardly share progress


def _warn_about_windows(algorithm, steps: int) -> None:
    """Say so, with the fix, when a worker would exchange only a few times per epoch."""
    window = algorithm.communication_window
    if window is None or algorithm.num_workers < 2 or not algorithm.windowed:
        return
    exchanges = -(-steps // window)
    if exchanges < EXCHANGES_PER_EPOCH:
        log.warning("communication_window=%d with %d steps per epoch: each worker exchanges "
                    "only %d time(s) per epoch, so the workers hardly share what they learn; "
                    "use communication_window <= %d (or a smaller batch_size)", window, steps,
                    exchanges, max(1, steps // EXCHANGES_PER_EPOCH))


def bad_data(exc: BaseException, coordinator=None) -> BaseException:
    """A worker that found bad values in its partition (a ``FeedError``) fails the fit with a
    `DataError`, as the driver's own data checks do; other errors stay as they are."""
    if not isinstance(exc, TrainingError):
        return exc
    reported = [r["error"] for _, r in (coordinator.raised if coordinator is not None else [])]
    found = [e for e in reported if e.startswith("FeedError: ")]
    if found:
        message = found[0].split("FeedError: ", 1)[1]
    elif "FeedError: " in str(exc):
        message = str(exc).split("FeedError: ", 1)[1].rstrip(")")
    else:
        return exc
    error = preflight.DataError(message)
    error.__cause__ = exc
    return error


def warm_up(spark, cores, num_workers: int) -> SparkJob | None:
    """Start importing TensorFlow in the Python workers the training tasks will run in (same
    pool, see `distkeras.driver.resources`), so the import overlaps the driver's data checks.
    Skipped when tasks are given GPUs: a worker pins its GPUs when it imports TensorFlow."""
    conf = spark.sparkContext.getConf()
    if float(conf.get("spark.task.resource.gpu.amount", "0") or 0) > 0:
        return None
    job = SparkJob(spark.range(0, num_workers, 1, num_workers), remote.warm_up_task(cores.threads),
                   "pid bigint", description="distkeras: import TensorFlow in the workers",
                   cores=cores)
    return job.start()


def startup_summary(startup: dict, submitted: float, workers: list[dict]) -> dict:
    """Where a fit spent its time before the workers' first window ended (seconds): the data
    checks, the driver's set-up, Spark starting the tasks, the workers' partition read, their
    TensorFlow import and model build, and the first window (tracing, XLA compilation)."""
    summary = dict(startup)
    if workers:
        summary["task_start_seconds"] = max(0.0, min(
            w["started_at"] - (w.get("read_seconds") or 0.0) for w in workers) - submitted)
        for key in ("read_seconds", "setup_seconds", "first_window_seconds"):
            values = [w[key] for w in workers if w.get(key) is not None]
            summary[key] = max(values) if values else None
    return summary


def _input_example(model, arrays):
    """A few rows of the model's input for an MLflow signature: an array, or a dict by input
    name for a model with several inputs."""
    xs = [np.asarray(x[:5]) for x in arrays[0]]
    if len(xs) == 1:
        return xs[0]
    names = [t.name.split(":")[0] for t in getattr(model, "inputs", None) or []]
    if len(names) != len(xs):
        names = [f"input_{i}" for i in range(len(xs))]
    return dict(zip(names, xs))


def _epoch_barrier(algorithm, exchange, driver_work: bool) -> bool | str:
    """How workers wait at epoch ends while the driver validates, runs callbacks and writes
    the checkpoint: not at all without such work; asynchronous parameter-server workers only
    for the driver (never for a straggler); the others until the driver processed the epoch
    (synchronous workers are in step anyway; gossip peers stay within an epoch of each other,
    so that they keep meeting)."""
    if not driver_work:
        return False
    if exchange.needs_parameter_server and not algorithm.synchronous:
        return "driver"
    return True


def _warn_isolated(workers: list[dict]) -> None:
    """Say so when a worker of a decentralised run never exchanged with a peer: it trained
    alone (its peers had finished, or had not started, while it trained)."""
    last = {}
    for row in workers:     # the last attempt of each worker
        if row["worker"] not in last or row["attempt"] >= last[row["worker"]]["attempt"]:
            last[row["worker"]] = row
    alone = sorted(w for w, row in last.items() if row["exchanges"] == 0)
    if alone:
        t0 = min(row["started_at"] for row in last.values())
        spans = ", ".join(
            f"worker {w} {row['training_from'] - t0:.1f}-{row['finished_at'] - t0:.1f} s"
            for w, row in sorted(last.items()))
        log.warning("workers %s made no exchange with a peer: they trained alone, and the model "
                    "is an average of independent replicas. When each trained: %s. Give the job "
                    "as many free task slots as workers.", alone, spans)


def _task_spec(run: "_Run", host: str, coordinator, ps) -> dict:
    """Everything a worker task needs: the portable model, JSON-able settings, the per-run
    secret and the algorithm object (all travel in Spark's task closure)."""
    trainer, compiled, user = run.trainer, run.compiled, run.user
    return {
        "model": user.portable, "layout": user.layout.to_dict(), "loss": compiled.loss,
        "optimizer": compiled.optimizer, "metrics": compiled.metrics,
        "loss_weights": compiled.loss_weights, "feed": user.feed.to_dict(),
        "seed": trainer.seed, "batch_size": trainer.batch_size,
        "steps_per_epoch": run.data.steps, "epochs": trainer.epochs,
        "num_workers": trainer.num_workers, "algorithm": run.algorithm,
        "stream": run.data.stream, "jit_compile": trainer.jit_compile,
        "threads": run.cores.threads, "overlap": overlap_communication(trainer, run.algorithm),
        "run": {"coordinator": [host, coordinator.address[1]],
                "ps": [host, ps.address[1]] if ps is not None else None,
                "secret": coordinator.secret, "connect_timeout": trainer.connect_timeout,
                "round_timeout": trainer.round_timeout,
                "tls_cert": open(trainer.tls_cert).read() if trainer.tls_cert else None,
                "peer_host": trainer.peer_host, "peer_ports": trainer.peer_ports},
    }


def overlap_communication(trainer, algorithm) -> bool:
    """Whether the workers' parameter-server round trips overlap their windows."""
    if trainer.overlap_communication is None:
        return algorithm.can_overlap and OVERLAP_BY_DEFAULT
    if trainer.overlap_communication and not algorithm.can_overlap:
        raise ValueError(f"overlap_communication=True: {algorithm.name} does not commit "
                         "asynchronously to a parameter server (it applies to "
                         f"{', '.join(algorithms.registry.overlapping())})")
    return bool(trainer.overlap_communication)


def _open_checkpoint(trainer, spark, algorithm, exchange, user: UserModel, callbacks):
    """The run's checkpoint store and the state to resume from (None, None without one).
    ``keras.callbacks.BackupAndRestore`` in ``callbacks`` gives its ``backup_dir`` and is
    taken out: the driver does its job for the whole run (θ̃, server state, history)."""
    import keras

    from distkeras.driver.checkpoint import Checkpoint, fingerprint

    path, keep = trainer.checkpoint_dir, False
    for cb in [c for c in callbacks if isinstance(c, keras.callbacks.BackupAndRestore)]:
        path = path or cb.backup_dir
        keep = keep or not cb.delete_checkpoint
        callbacks.remove(cb)
    if not path:
        return None, None
    if exchange.run_model.ensemble:
        raise ValueError(f"{trainer.name} cannot resume from a checkpoint: each "
                         "member's weights live only on its worker; drop checkpoint_dir")
    store = Checkpoint(spark, path, fingerprint(user.original, algorithm.name,
                                                trainer.num_workers, user.layout))
    store.keep = keep       # BackupAndRestore(delete_checkpoint=False): kept after the run
    state = store.load()
    if state is not None:
        user.flat.set(state["centre"])
        algorithm.restore_server_state(state["server_state"])
        log.warning("resuming from the checkpoint in %s: %d of %d epochs done, %d updates",
                    path, state["epochs"], trainer.epochs, state["updates"])
    return store, state
