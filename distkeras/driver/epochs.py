"""What the driver does at every epoch end while the workers train: the progress bar, the
workers' epoch logs averaged, the run's model evaluated on the validation data, the per-epoch
statistics every callback sees, the Keras callbacks (and the learning-rate changes they make,
sent to the workers), the checkpoint; the Keras-style history that collects it all.

Example (what ``distkeras.driver.fit`` does once the workers' job is running)::

    history = monitor(settings, coordinator, job, driver_model, flat, val, callbacks, steps,
                      Resume(store, resumed, algorithm))
"""
from __future__ import annotations

import logging
import time

import numpy as np

from distkeras.driver.job import TrainingError
from distkeras.feed import model_inputs

log = logging.getLogger(__name__)


class TrainingHistory(dict):
    """Keras-style history: ``history["loss"][epoch]``; plus ``ps_stats`` and ``workers``."""

    def __init__(self):
        super().__init__()
        self.epoch: list[int] = []
        self.ps_stats: dict = {}
        self.workers: list[dict] = []
        # per processed epoch, parameter-server runs: {"updates": u, "commits": {worker: n}}
        # (who did the work: a straggler's share shows here)
        self.epoch_stats: list[dict] = []
        self.mlflow_run_id: str | None = None    # the MLflow run of this fit, when tracked
        # seconds before the first window ended: preflight, task start, import, compile
        self.startup: dict = {}
        # a simulated fit (distkeras.simulation): its network and time model, virtual seconds
        self.simulation: dict | None = None

    def record(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.setdefault(key, []).append(float(value))

    @property
    def history(self) -> dict:
        return dict(self)


class Resume:
    """The run's checkpoint (None without ``checkpoint_dir``) and what it resumed from."""

    def __init__(self, store=None, state=None, algorithm=None):
        self.store, self.state, self.algorithm = store, state, algorithm
        self.start = state["epochs"] if state else 0

    def history(self) -> "TrainingHistory":
        history = TrainingHistory()
        past = (self.state or {}).get("history", {})
        for epoch in range(self.start):
            history.record(epoch, {k: v[epoch] for k, v in past.items() if len(v) > epoch})
        return history

    def save(self, epochs: int, history: "TrainingHistory", coordinator, centre) -> None:
        if self.store is None:
            return
        ps = coordinator.data_service
        self.store.save(epochs, ps.updates if ps is not None else 0, dict(history), centre,
                        self.algorithm.server_state())


def monitor(settings, coordinator, job, driver_model, flat, val, callbacks, steps,
            resume: Resume):
    """Driver loop while the workers train: progress, epoch ends, validation, callbacks, the
    checkpoint."""
    ends = _EpochEnds(settings, coordinator, driver_model, flat, val, callbacks, steps, resume)
    job.add_done_callback(coordinator.wake)
    try:
        while True:     # woken at once by an epoch's end (its workers may wait for it)
            coordinator.wait(lambda: ends.ready() or job.finished or coordinator.unrecoverable,
                             timeout=0.2)
            alive = not job.finished
            ends.show_progress()
            while ends.ready():
                ends.process()
            if coordinator.unrecoverable:   # the caller cancels the job: no retry can help
                raise TrainingError(coordinator.unrecoverable)
            if not alive:
                break
    finally:
        ends.bar.close()
    _raise_job_error(job, coordinator)
    flat.set(coordinator.model())
    ends.callbacks.on_train_end()   # EarlyStopping(restore_best_weights=True) may reset weights
    return ends.history


class _EpochEnds:
    """What the driver does once every worker finished an epoch: the logs (the workers' mean,
    validation of the run's model, the statistics), the history, the checkpoint, the
    callbacks and the learning-rate changes they make; and the progress bar meanwhile."""

    def __init__(self, settings, coordinator, driver_model, flat, val, callbacks, steps,
                 resume: Resume):
        import keras
        from tqdm.auto import tqdm

        self.settings, self.coordinator, self.model = settings, coordinator, driver_model
        self.flat, self.val, self.resume = flat, val, resume
        self.history = resume.history()
        self.callbacks = keras.callbacks.CallbackList(callbacks, model=driver_model,
                                                      epochs=settings.epochs, steps=steps,
                                                      verbose=0)
        driver_model.stop_training = False
        per_epoch = steps * settings.batch_size * settings.num_workers
        self.total = (settings.epochs - resume.start) * per_epoch
        self.bar = tqdm(total=self.total, unit="samples", disable=not settings.verbose,
                        mininterval=1.0, desc=f"{settings.name} x{settings.num_workers}")
        self.callbacks.on_train_begin()
        self.epoch, self.epoch_start = resume.start, time.perf_counter()
        self.rate = _LearningRate(driver_model, coordinator)
        self.statistics = _EpochStatistics(coordinator, per_epoch)
        self._begin()

    def _begin(self) -> None:
        if not self.model.stop_training and self.epoch < self.settings.epochs:
            self.callbacks.on_epoch_begin(self.epoch)
            self.rate.follow()

    def show_progress(self) -> None:
        self.bar.update(min(self.coordinator.samples_seen, self.total) - self.bar.n)

    def ready(self) -> bool:
        """Every worker finished the next epoch to process, and training goes on."""
        return (self.epoch < self.settings.epochs and not self.model.stop_training
                and self.coordinator.completed_epochs() > self.epoch)

    def process(self) -> None:
        epoch, coordinator = self.epoch, self.coordinator
        centre = coordinator.model(epoch=epoch)
        self.flat.set(centre)
        ended = coordinator.epoch_finished_at.get(epoch, time.perf_counter())
        logs = self._logs(epoch, ended - self.epoch_start)
        self.history.record(epoch, logs)
        self.resume.save(epoch + 1, self.history, coordinator, centre)
        self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()
                              if k not in _EpochStatistics.KEYS})
        self.callbacks.on_epoch_end(epoch, logs)
        self.rate.follow()
        if self.model.stop_training:
            log.info("a callback stopped training after epoch %d", epoch)
            coordinator.request_stop()
        coordinator.epoch_processed(epoch)
        self.epoch, self.epoch_start = epoch + 1, ended
        self._begin()

    def _logs(self, epoch: int, seconds: float) -> dict:
        """The epoch's logs: the workers' mean metrics, Γ, val_*, time and statistics."""
        logs = _epoch_logs(self.coordinator.epoch_logs[epoch])
        if epoch in self.coordinator.consensus_distance:
            logs["consensus_distance"] = self.coordinator.consensus_distance[epoch]
        if self.val is not None:
            scores = self.model.evaluate(model_inputs(self.val[0]), self.val[1], verbose=0,
                                         return_dict=True,
                                         batch_size=max(256, self.settings.batch_size))
            logs.update({f"val_{k}": float(v) for k, v in scores.items()})
        logs["epoch_seconds"] = seconds
        logs.update(self.statistics.epoch(epoch, seconds, self.history))
        logs.setdefault("learning_rate", self.rate.value)    # else: the workers' mean
        return logs


def _raise_job_error(job, coordinator) -> None:
    """The Spark job's error, said as the driver knows it better than the JVM stack: what a
    worker raised (first), or that a synchronous worker was lost."""
    try:
        job.result()
    except TrainingError as exc:
        failure = coordinator.worker_error() or coordinator.settled_failure() or (
            coordinator.data_service.failure if coordinator.data_service is not None else None)
        raise TrainingError(f"{failure} (Spark: {exc})" if failure else str(exc)) from exc


class _LearningRate:
    """The driver model's learning rate, which callbacks (``ReduceLROnPlateau``,
    ``LearningRateScheduler``) change; every change goes to the workers' optimizers."""

    def __init__(self, model, coordinator):
        self.model, self.coordinator = model, coordinator
        self.value = self._read()

    def _read(self) -> float:
        return float(np.asarray(self.model.optimizer.learning_rate))

    def follow(self) -> None:
        now = self._read()
        if now != self.value:
            log.info("learning rate %.6g -> %.6g (a callback changed it): sent to the workers",
                     self.value, now)
            self.coordinator.set_learning_rate(now)
            self.value = now


class _EpochStatistics:
    """Per-epoch statistics for the logs every callback sees: ``samples_per_second``,
    ``exchange_seconds`` (mean per worker, from the workers' logs) and, with a parameter server,
    ``updates`` (θ̃'s update count so far), ``commits`` (this epoch) and ``mean_staleness``
    (mean τ of this epoch's commits)."""

    KEYS = frozenset({"epoch_seconds", "samples_per_second", "exchange_seconds", "updates",
                      "commits", "mean_staleness", "learning_rate", "consensus_distance"})

    def __init__(self, coordinator, samples_per_epoch: int):
        self.coordinator, self.samples = coordinator, samples_per_epoch
        self.commits, self.staleness = 0, 0.0

    def epoch(self, epoch: int, seconds: float, history: "TrainingHistory") -> dict:
        out = {"samples_per_second": self.samples / seconds if seconds > 0 else 0.0}
        service = self.coordinator.data_service
        if service is None:
            return out
        data = service.stats()
        commits = sum(d["commits"] for d in data["workers"].values())
        staleness = sum(float(tau) * n for d in data["workers"].values()
                        for tau, n in d["staleness_histogram"].items())
        new = commits - self.commits
        out.update(updates=float(data["updates"]), commits=float(new),
                   mean_staleness=(staleness - self.staleness) / new if new else 0.0)
        self.commits, self.staleness = commits, staleness
        history.epoch_stats.append({"epoch": epoch, "updates": data["updates"],
                                    "commits": {w: d["commits"] for w, d
                                                in data["workers"].items()}})
        return out


def _epoch_logs(per_worker: dict[int, dict]) -> dict:
    """Mean of the workers' training metrics for one epoch."""
    keys = set().union(*(d.keys() for d in per_worker.values())) if per_worker else set()
    return {k: float(np.mean([d[k] for d in per_worker.values() if k in d])) for k in sorted(keys)}
