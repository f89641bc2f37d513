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

from distkeras import algorithms, backends, messages, tracking
from distkeras.compression import compressor
from distkeras.custom_objects import ship_by_value
from distkeras.driver import preflight
from distkeras.driver.compile import CompileSettings
from distkeras.driver.coordinator import Coordinator
from distkeras.driver.data import TrainingData, collect_arrays, collect_arrays_meanwhile
from distkeras.driver.epochs import Resume, monitor
from distkeras.driver.job import SparkJob, TrainingError
from distkeras.driver.keep_warm import KEEP_WARM
from distkeras.driver.parameter_server import ParameterServer
from distkeras.driver.resources import worker_cores
from distkeras.driver.warm_up import warm_up
from distkeras.ensemble import ensemble_model
from distkeras.errors import ModelError
from distkeras.executor import remote
from distkeras.feed import FeedSpec, feed_spec_for
from distkeras.model import KerasModel, describe_output
from distkeras.portable import PortableModel
from distkeras.spark import warn_if_unauthenticated
from distkeras.spark_api import spark_api
from distkeras.state import StateLayout
from distkeras.transport.tls import server_tls

log = logging.getLogger(__name__)
# overlap_communication=None: off. On loopback with every core computing, a round trip is CPU
# work (copies, tags), not latency to hide; the overlap measured slower there (ADAG x2 0.44 vs
# 0.78 of SingleTrainer, HLF-sized model; benchmarks/trainer_overhead.py --overlap both)
OVERLAP_BY_DEFAULT = False
# import TensorFlow in the workers during the data checks: off, it measured slower on 2 cores,
# where the import competes with the checks for the same cores (benchmarks/cold_start.py)
WARM_UP = False
WARM_UP_WAIT = 60.0  # seconds the training job waits for the warm-up at most


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
    flat: backends.FlatWeights

    @classmethod
    def of(cls, settings, compiled: CompileSettings) -> "UserModel":
        from distkeras.executor.replica import build_model

        model = settings.keras_model
        configs = tuple(compiled.arguments().values())
        portable = PortableModel.of(model, settings.custom_objects, extra_configs=configs)
        layout = StateLayout.of(model)
        wide = [model.weights[i].path for i in layout.order if str(model.weights[i].dtype)
                == "float64"]
        if wide:
            log.warning("%d float64 variable(s) (%s...) are exchanged as float32, the currency "
                        "of every exchange: the model returned holds them rounded to float32",
                        len(wide), wide[0])
        feed = feed_spec_for(model, settings.features_col, settings.label_col, compiled.loss,
                             settings.input_shapes, settings.weight_col, settings.class_weight)
        driver = build_model(portable, **compiled.arguments())
        return cls(model, portable, layout, feed, driver,
                   backends.current().flat_weights(driver, layout))

    def member(self, vector: np.ndarray):
        """A copy of the model (all its state) with ``vector`` as its exchanged state."""
        member = self.portable.build()
        backends.current().flat_weights(member, self.layout).set(vector)
        return member

    def ensemble(self, members: list, compiled: CompileSettings):
        """The ensemble of ``members`` as one Keras model (the mean of their outputs), compiled
        as the workers were."""
        model = ensemble_model(members)
        self.portable.compile(model, **compiled.arguments())
        return model


def run_training(estimator, df, validation_data, callbacks):
    """One ``fit`` of ``estimator`` (a :class:`~distkeras.trainers.Trainer`) on ``df``."""
    began = time.perf_counter()
    backends.current().setup()
    settings = estimator.settings()      # every Param's value, read once
    if settings.services == "task":
        from distkeras.driver import hosted

        hosted.check(settings, callbacks, df.sparkSession)
    compiled = CompileSettings.of(settings, estimator.default_optimizer)
    factor = estimator.learning_rate_factor()
    if factor != 1.0 and compiled.scheduled:
        log.warning("learning_rate_scaling=%s asks for the learning rate x %.3g for %d "
                    "workers, but the optimizer's rate is a schedule, which runs as compiled: "
                    "scale its rates yourself (or pass learning_rate= a number)",
                    settings.learning_rate_scaling, factor, settings.num_workers)
        factor = 1.0
    if factor != 1.0:
        log.info("learning rate %.4g x %.3g for %d workers (learning_rate_scaling=%s)",
                 compiled.learning_rate, factor, settings.num_workers,
                 settings.learning_rate_scaling)
    compiled = compiled.scaled(factor)
    if compiled.moving_average:
        log.warning("the optimizer has use_ema=True: each worker's optimizer keeps a moving "
                    "average of its own replica's weights only, and the model returned holds "
                    "the trained weights, not a moving average (Keras' fit swaps its average "
                    "in at the end; distkeras does not). Compile with use_ema=False to say so, "
                    "or average the model's weights yourself in a callback's on_epoch_end")
    user = UserModel.of(settings, compiled)
    rule = estimator.make_algorithm(compiled.learning_rate)
    problem = rule.model_refusal(user.original)
    if problem:
        raise ModelError(f"{type(estimator).__name__}: {problem}")
    barrier = rule.synchronous and settings.num_workers > 1 and not settings.simulate
    cores = worker_cores(df.sparkSession, 1 if settings.simulate else settings.num_workers,
                         settings.cores_per_worker)      # simulated: all in this process
    KEEP_WARM.stop()      # the last fit's workers are this fit's: idle when its tasks start
    warming = (warm_up(df.sparkSession, cores, settings.num_workers)
               if WARM_UP and not settings.simulate else None)
    checked = time.perf_counter()
    validation = collect_arrays_meanwhile(validation_data, user.feed, df.sparkSession)
    data = TrainingData.prepare(df, settings, user.feed, barrier)
    try:
        val = validation()
        startup = {"preflight_seconds": time.perf_counter() - checked}
        algorithm = estimator.make_algorithm(compiled.learning_rate, data.steps)
        data.stage(settings)
        _warn_about_windows(algorithm, data.steps)
        run = _Run(estimator, settings, compiled, algorithm, user, data, cores, val, callbacks)
        history, members = run.train(warming, startup, began)
    finally:
        estimator.coordinator = None
        data.release()
    if not settings.simulate:
        KEEP_WARM.start(df.sparkSession, cores, settings.num_workers)
    members = [user.member(v) for v in members]
    return KerasModel(user.ensemble(members, compiled) if members else user.driver,
                      history=history, feed=user.feed, members=members,
                      output=describe_output(user.original, compiled.loss),
                      custom_objects=user.portable.custom_objects,
                      prediction_col=settings.prediction_col,
                      probability_col=settings.probability_col,
                      raw_prediction_col=settings.raw_prediction_col)


class _Run:
    """One run's services (coordinator, parameter server), its Spark job and the driver's
    epoch loop, set up in this order and always torn down."""

    def __init__(self, estimator, settings, compiled, algorithm, user, data, cores, val,
                 callbacks):
        self.estimator, self.settings, self.compiled = estimator, settings, compiled
        self.algorithm, self.user, self.data, self.cores = algorithm, user, data, cores
        self.exchange = algorithm.exchange_type
        self.val = None if self.exchange.run_model.ensemble else val
        self.callbacks = callbacks
        self.spark = data.df.sparkSession

    def train(self, warming, startup: dict, began: float):
        settings, algorithm = self.settings, self.algorithm
        warn_if_unauthenticated(self.spark)     # the run's secret travels in the task closure
        ship_by_value([algorithm] + ([algorithm.base] if hasattr(algorithm, "base") else []))
        if settings.simulate:
            from distkeras.simulation.run import train_simulated

            return train_simulated(self, startup, began)
        if settings.services == "task":
            from distkeras.driver.hosted import train_in_task

            return train_in_task(self, startup, began)
        store, resumed = _open_checkpoint(settings, self.spark, algorithm, self.exchange,
                                          self.user, self.callbacks)
        trackers = self._trackers()
        host = settings.ps_host or spark_api(self.spark).service_host
        with contextlib.ExitStack() as services:
            ps, coordinator = self._services(services, host, resumed, store)
            spec = task_spec(self, {"coordinator": [host, coordinator.address[1]],
                                    "ps": [host, ps.address[1]] if ps is not None else None,
                                    "secret": coordinator.secret})
            if warming is not None:     # its workers must be idle, not importing, to be reused
                warming.join(WARM_UP_WAIT)
            startup["submitted_after_seconds"] = time.perf_counter() - began
            submitted = time.time()
            job = SparkJob(self.data.job_df, remote.train_task(spec), messages.STATUS_DDL,
                           barrier=algorithm.synchronous and settings.num_workers > 1,
                           description=f"distkeras {settings.name}", cores=self.cores).start()
            history = self._monitor(coordinator, job, trackers, store, resumed)
            history.workers = [r.asDict() for r in job.result()]
            history.startup = startup_summary(startup, submitted, history.workers)
            history.mlflow_run_id = trackers[0].run_id if trackers else None
            if store is not None and not store.keep:
                store.clear()        # completed: a rerun trains afresh (as BackupAndRestore)
            if self.exchange.run_model.epoch_replicas and settings.num_workers > 1:
                _warn_isolated(history.workers)
            history.ps_stats = coordinator.stats()
            members = ([coordinator.final_models[w] for w in sorted(coordinator.final_models)]
                       if self.exchange.run_model.ensemble else [])
        return history, members

    def _trackers(self) -> list:
        settings, compiled = self.settings, self.compiled
        trackers = tracking.loggers(settings, self.callbacks)
        if trackers:
            example = _input_example(self.user.original, self.val if self.val is not None
                                     else collect_arrays(self.data.prepared.limit(5),
                                                         self.user.feed))
            for tracker in trackers:
                tracker.configure(tracking.run_params(settings, self.algorithm, compiled.loss,
                                                      compiled.optimizer,
                                                      compiled.single_worker_rate,
                                                      compiled.learning_rate),
                                  example, f"{settings.name} x{settings.num_workers}")
        return trackers

    def _services(self, services: contextlib.ExitStack, host: str, resumed, store):
        settings = self.settings
        ps, coordinator = start_services(
            services, settings, self.algorithm, self.user.flat.get(), self.user.layout.params,
            settings.ps_bind_host or host, resumed,
            driver_work=bool(self.callbacks) or self.val is not None or store is not None)
        self.estimator.coordinator = coordinator
        return ps, coordinator

    def _monitor(self, coordinator, job, trackers, store, resumed):
        try:
            return monitor(self.settings, coordinator, job, self.user.driver, self.user.flat,
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


def start_services(services: contextlib.ExitStack, settings, algorithm, initial: np.ndarray,
                   params: int, bind: str, resumed=None, driver_work: bool = False,
                   secret: bytes | None = None):
    """The run's parameter server (for the algorithms that have one) and coordinator,
    listening on ``bind``, closed with ``services``. ``driver_work``: the epoch ends validate,
    run callbacks or write a checkpoint (the workers wait for them)."""
    exchange = algorithm.exchange_type
    tls = server_tls(settings.tls_cert, settings.tls_key)
    ps = None
    if exchange.needs_parameter_server:
        ps = services.enter_context(ParameterServer(
            algorithm, initial, settings.num_workers, host=bind, port=settings.ps_port,
            secret=secret, ssl_context=tls, round_timeout=settings.round_timeout,
            updates=resumed["updates"] if resumed else 0, params=params,
            compression=compression_spec(settings, algorithm)))
    return ps, services.enter_context(Coordinator(
        settings.num_workers, initial, synchronous=algorithm.synchronous,
        name=algorithm.name, host=bind, port=0, secret=ps.secret if ps else secret,
        ssl_context=tls, round_timeout=settings.round_timeout, data_service=ps,
        # workers wait at epoch ends while the driver validates the model, runs callbacks and
        # writes the checkpoint: otherwise a fast epoch's val_* are measured on whatever model
        # is current when the driver gets to it
        epoch_barrier=_epoch_barrier(algorithm, exchange, driver_work),
        start_epoch=resumed["epochs"] if resumed else 0, params=params))


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
        summary["reused_replicas"] = sum(w.get("reused_replica") or 0 for w in workers)
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


def task_spec(run: "_Run", services: dict) -> dict:
    """Everything a worker task needs: the portable model, JSON-able settings, where the
    services are and the per-run secret (``services``: ``coordinator`` and ``ps`` as
    ``[host, port]``, ``secret``), and the algorithm object (all travel in Spark's task
    closure)."""
    settings, compiled, user = run.settings, run.compiled, run.user
    return {
        "model": user.portable, "layout": user.layout.to_dict(),
        "compile": compiled.arguments(), "feed": user.feed.to_dict(),
        "seed": settings.seed, "batch_size": settings.batch_size,
        "steps_per_epoch": run.data.steps, "largest_partition": run.data.largest_partition,
        "epochs": settings.epochs,
        "num_workers": settings.num_workers, "algorithm": run.algorithm,
        "stream": run.data.stream, "jit_compile": settings.jit_compile,
        "reuse_compiled": settings.reuse_compiled,
        "threads": run.cores.threads, "backend": run.cores.backend,
        "overlap": overlap_communication(settings, run.algorithm),
        "compression": compression_spec(settings, run.algorithm),
        "run": {**services, "connect_timeout": settings.connect_timeout,
                "round_timeout": settings.round_timeout,
                "tls_cert": open(settings.tls_cert).read() if settings.tls_cert else None,
                "peer_host": settings.peer_host, "peer_ports": settings.peer_ports},
    }


def compression_spec(settings, algorithm) -> str | None:
    """The run's compressor spec (None: float32), refused here, before any task starts, when
    the algorithm's exchange cannot take it."""
    made = compressor(settings.compression)
    problem = algorithm.compression_refusal(made) if made is not None else None
    if problem:
        raise ValueError(f"{algorithm.name}: {problem}")
    return None if made is None else made.spec


def overlap_communication(settings, algorithm) -> bool:
    """Whether the workers' parameter-server round trips overlap their windows."""
    if settings.overlap_communication is None:
        return algorithm.can_overlap and OVERLAP_BY_DEFAULT
    if settings.overlap_communication and not algorithm.can_overlap:
        raise ValueError(f"overlap_communication=True: {algorithm.name} does not commit "
                         "asynchronously to a parameter server (it applies to "
                         f"{', '.join(algorithms.registry.overlapping())})")
    return bool(settings.overlap_communication)


def _open_checkpoint(settings, spark, algorithm, exchange, user: UserModel, callbacks):
    """The run's checkpoint store and the state to resume from (None, None without one).
    ``keras.callbacks.BackupAndRestore`` in ``callbacks`` gives its ``backup_dir`` and is
    taken out: the driver does its job for the whole run (θ̃, server state, history)."""
    import keras

    from distkeras.driver.checkpoint import Checkpoint, fingerprint

    path, keep = settings.checkpoint_dir, False
    for cb in [c for c in callbacks if isinstance(c, keras.callbacks.BackupAndRestore)]:
        path = path or cb.backup_dir
        keep = keep or not cb.delete_checkpoint
        callbacks.remove(cb)
    if not path:
        return None, None
    if exchange.run_model.ensemble:
        raise ValueError(f"{settings.name} cannot resume from a checkpoint: each "
                         "member's weights live only on its worker; drop checkpoint_dir")
    store = Checkpoint(spark, path, fingerprint(user.original, algorithm.name,
                                                settings.num_workers, user.layout))
    store.keep = keep       # BackupAndRestore(delete_checkpoint=False): kept after the run
    state = store.load()
    if state is not None:
        user.flat.set(state["centre"])
        algorithm.restore_server_state(state["server_state"])
        log.warning("resuming from the checkpoint in %s: %d of %d epochs done, %d updates",
                    path, state["epochs"], settings.epochs, state["updates"])
    return store, state
