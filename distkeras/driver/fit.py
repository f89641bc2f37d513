"""``Trainer.fit`` on the driver: check the data, start the coordinator (and the parameter server,
for the algorithms that have one), launch one Spark task per worker, and while they train run
the epoch ends (``distkeras.driver.epochs``: progress, epoch logs, validation of the run's
model, callbacks, checkpoint). Always closes the services and cancels the job.
"""
from __future__ import annotations

import contextlib
import logging
import time

import numpy as np

from distkeras import tracking
from distkeras.driver import preflight
from distkeras.driver.coordinator import Coordinator
from distkeras.driver.epochs import Resume, monitor
from distkeras.driver.job import SparkJob, TrainingError
from distkeras.driver.parameter_server import ParameterServer
from distkeras.driver.resources import worker_cores
from distkeras.executor import remote
from distkeras.executor.feed import FeedSpec, feed_spec_for
from distkeras.spark import warn_if_unauthenticated

log = logging.getLogger(__name__)
# overlap_communication=None: off. On loopback with every core computing, a round trip is CPU
# work (copies, tags), not latency to hide; the overlap measured slower there (ADAG x2 0.44 vs
# 0.78 of SingleTrainer, HLF-sized model; benchmarks/trainer_overhead.py --overlap both)
OVERLAP_BY_DEFAULT = False
# import TensorFlow in the workers during the data checks: off, it measured slower on 2 cores,
# where the import competes with the checks for the same cores (benchmarks/cold_start.py)
WARM_UP = False
WARM_UP_WAIT = 60.0  # seconds the training job waits for the warm-up at most


def _compile_settings(trainer):
    """(loss, optimizer config, learning rate) as JSON-able values for the executors."""
    import keras

    model = trainer.keras_model
    loss = trainer.loss if trainer.loss is not None else getattr(model, "loss", None)
    if loss is None:
        raise ValueError("no loss: pass loss= to the trainer or compile the model first")
    if not isinstance(loss, (str, dict)):
        loss = keras.losses.serialize(loss)
    opt = trainer.worker_optimizer
    if isinstance(opt, dict):
        opt = keras.optimizers.deserialize(opt)
    opt = keras.optimizers.get(opt) if isinstance(opt, str) else opt
    config = keras.optimizers.serialize(opt)
    if trainer.learning_rate is not None:
        config["config"]["learning_rate"] = float(trainer.learning_rate)
    lr = config["config"].get("learning_rate")
    lr = float(lr) if isinstance(lr, (int, float)) else 0.01
    return loss, config, lr


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


def _ship_by_value(algorithm) -> None:
    """A rule defined outside distkeras (a notebook, a test module, a user package the executors
    lack) travels by value in the task closure, not as an import the executors may fail."""
    import sys

    from pyspark import cloudpickle

    seen = {type(algorithm)} | ({type(algorithm.base)} if hasattr(algorithm, "base") else set())
    for cls in seen:
        for klass in cls.__mro__:
            module = sys.modules.get(klass.__module__)
            if module is None or klass.__module__ in ("__main__", "builtins") \
                    or klass.__module__.split(".")[0] == "distkeras":
                continue
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:   # a package already registered, or not a Python module
                pass


def run_training(estimator, df, validation_data, callbacks):
    """One ``fit`` of ``estimator`` (a :class:`~distkeras.trainers.Trainer`) on ``df``."""
    import keras

    from distkeras.executor.replica import FlatWeights, build_model, setup_tensorflow
    from distkeras.model import KerasModel, describe_output

    began = time.perf_counter()
    setup_tensorflow()
    trainer = estimator.settings()      # every Param's value, read once
    loss, optimizer, lr = _compile_settings(trainer)
    algorithm = estimator.make_algorithm(lr)
    exchange = algorithm.exchange_type
    model = trainer.keras_model
    feed = feed_spec_for(model, trainer.features_col, trainer.label_col, loss, trainer.input_shapes)
    barrier = algorithm.synchronous and trainer.num_workers > 1
    cores = worker_cores(df.sparkSession, trainer.num_workers, trainer.cores_per_worker)
    warming = warm_up(df.sparkSession, cores, trainer.num_workers) if WARM_UP else None
    checked = time.perf_counter()
    in_memory = trainer.data_feed == "memory"     # its workers check the arrays' values
    prepared, rows, owned = preflight.prepare_training_data(df, feed, trainer.num_workers,
                                                     trainer.batch_size, barrier,
                                                     trainer.cores_per_worker,
                                                     array_values=not in_memory)
    startup = {"preflight_seconds": time.perf_counter() - checked}
    staged = None
    try:
        val = collect_arrays(validation_data, feed) if validation_data is not None else None
        job_df, stream = prepared, None
        if trainer.data_feed != "memory":
            staged, files = stage_parquet(prepared, trainer)
            stream = {"files": files, "reader": "pyarrow" if trainer.data_feed == "stream"
                      else "petastorm"}
            job_df = df.sparkSession.range(0, trainer.num_workers, 1, trainer.num_workers)
        steps = rows // trainer.batch_size
        if algorithm.communication_window is not None and algorithm.communication_window > steps:
            log.warning("communication window %d > %d steps per epoch: workers exchange once "
                        "per epoch", algorithm.communication_window, steps)
        # the driver's copy: evaluates the run's model and is what callbacks see
        driver_model = build_model(model.to_json(), loss, optimizer, trainer.metrics,
                                   weights=model.get_weights())
        flat = FlatWeights(driver_model)
        spark = df.sparkSession
        warn_if_unauthenticated(spark)     # the run's secret travels in the task closure
        store, resumed = _open_checkpoint(trainer, spark, algorithm, exchange, model, flat,
                                          callbacks)
        trackers = tracking.loggers(trainer, callbacks)
        if trackers:
            example = _input_example(model, val if val is not None
                                     else collect_arrays(prepared.limit(5), feed))
            for tracker in trackers:
                tracker.configure(tracking.run_params(trainer, algorithm, loss, optimizer, lr),
                                  example, f"{trainer.name} x{trainer.num_workers}")
        host = trainer.ps_host or spark.sparkContext.getConf().get("spark.driver.host", "127.0.0.1")
        bind = trainer.ps_bind_host or host
        tls = server_tls(trainer.tls_cert, trainer.tls_key)
        initial = flat.get()
        start_epoch = resumed["epochs"] if resumed else 0
        with contextlib.ExitStack() as services:
            ps = None
            if exchange.needs_parameter_server:
                ps = services.enter_context(ParameterServer(
                    algorithm, initial, trainer.num_workers, host=bind, port=trainer.ps_port,
                    ssl_context=tls, round_timeout=trainer.round_timeout,
                    updates=resumed["updates"] if resumed else 0))
            coordinator = services.enter_context(Coordinator(
                trainer.num_workers, initial, synchronous=algorithm.synchronous,
                name=algorithm.name, host=bind, port=0, secret=ps.secret if ps else None,
                ssl_context=tls, round_timeout=trainer.round_timeout, data_service=ps,
                # workers wait at epoch ends while the driver validates the model, runs
                # callbacks and writes the checkpoint: otherwise a fast epoch's val_* are
                # measured on whatever model is current when the driver gets to it
                epoch_barrier=_epoch_barrier(
                    algorithm, exchange, bool(callbacks) or val is not None or store is not None),
                start_epoch=start_epoch))
            estimator.coordinator = coordinator
            _ship_by_value(algorithm)
            spec = _task_spec(trainer, model, loss, optimizer, feed, steps, algorithm, stream,
                              host, coordinator, ps, cores)
            if warming is not None:     # its workers must be idle, not importing, to be reused
                warming.join(WARM_UP_WAIT)
            startup["submitted_after_seconds"] = time.perf_counter() - began
            submitted = time.time()
            job = SparkJob(job_df, remote.train_task(spec), remote.STATUS_DDL, barrier=barrier,
                           description=f"distkeras {trainer.name}", cores=cores).start()
            try:
                history = monitor(trainer, coordinator, job, driver_model, flat,
                                  None if exchange.model == "members" else val, callbacks, steps,
                                  Resume(store, resumed, algorithm))
            except BaseException as exc:
                coordinator.request_stop()
                job.cancel()
                for tracker in trackers:
                    tracker.on_train_failed(exc)
                error = bad_data(exc)
                if error is exc:
                    raise
                raise error from exc
            history.workers = [r.asDict() for r in job.result()]
            history.startup = startup_summary(startup, submitted, history.workers)
            history.mlflow_run_id = trackers[0].run_id if trackers else None
            if store is not None and not store.keep:
                store.clear()        # completed: a rerun trains afresh (as BackupAndRestore)
            if exchange.model == "mean" and trainer.num_workers > 1:
                _warn_isolated(history.workers)
            history.ps_stats = coordinator.stats()
            members = ([coordinator.final_models[w] for w in sorted(coordinator.final_models)]
                       if exchange.model == "members" else [])
    finally:
        estimator.coordinator = None
        if owned:                # the user's own cache stays
            prepared.unpersist()
        if staged:
            remove_path(df.sparkSession, staged)
    keras_models = []
    for vector in members:
        member = keras.models.clone_model(driver_model)
        FlatWeights(member).set(vector)
        keras_models.append(member)
    return KerasModel(driver_model, history=history, feed=feed, members=keras_models,
                      output=describe_output(model, loss), prediction_col=trainer.prediction_col,
                      probability_col=trainer.probability_col,
                      raw_prediction_col=trainer.raw_prediction_col)


def bad_data(exc: BaseException) -> BaseException:
    """A worker that found bad values in its partition (a ``FeedError``) fails the fit with a
    `DataError`, as the driver's own data checks do; other errors stay as they are."""
    if isinstance(exc, TrainingError) and "FeedError: " in str(exc):
        error = preflight.DataError(str(exc).split("FeedError: ", 1)[1].rstrip(")"))
        error.__cause__ = exc
        return error
    return exc


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
    return {t.name.split(":")[0]: x for t, x in zip(model.inputs, xs)}


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


def _task_spec(trainer, model, loss, optimizer, feed, steps, algorithm, stream, host,
               coordinator, ps, cores) -> dict:
    """Everything a worker task needs: JSON-able values, the per-run secret and the algorithm
    object (all travel in Spark's task closure)."""
    return {
        "model_json": model.to_json(), "loss": loss, "optimizer": optimizer,
        "metrics": trainer.metrics, "feed": feed.to_dict(), "seed": trainer.seed,
        "batch_size": trainer.batch_size, "steps_per_epoch": steps,
        "epochs": trainer.epochs, "num_workers": trainer.num_workers,
        "algorithm": algorithm, "stream": stream, "jit_compile": trainer.jit_compile,
        "threads": cores.threads, "overlap": overlap_communication(trainer, algorithm),
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
                         "asynchronously to a parameter server (it applies to DOWNPOUR, "
                         "Hogwild, AGN, ADAG, DynSGD, AEASGD and EAMSGD)")
    return bool(trainer.overlap_communication)


def _open_checkpoint(trainer, spark, algorithm, exchange, model, flat, callbacks):
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
    if exchange.model == "members":
        raise ValueError(f"{trainer.name} cannot resume from a checkpoint: each "
                         "member's weights live only on its worker; drop checkpoint_dir")
    store = Checkpoint(spark, path, fingerprint(model, algorithm.name, trainer.num_workers))
    store.keep = keep       # BackupAndRestore(delete_checkpoint=False): kept after the run
    state = store.load()
    if state is not None:
        flat.set(state["centre"])
        algorithm.restore_server_state(state["server_state"])
        log.warning("resuming from the checkpoint in %s: %d of %d epochs done, %d updates",
                    path, state["epochs"], trainer.epochs, state["updates"])
    return store, state
