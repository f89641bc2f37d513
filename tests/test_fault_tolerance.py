"""A worker's Python process killed for real (SIGKILL by pid) in the middle of training.

Asynchronous algorithms: Spark retries the task (local[2,2] allows one retry), the new attempt
rejoins (from the current centre variable, or for a decentralised algorithm from the mean of the
replicas at the last epoch end, registering its new peer endpoint) at the epoch it had reached,
and training converges. Synchronous algorithms (parameter server or peers): the run fails quickly
with an error that names the lost worker, instead of hanging.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import distkeras as dk
from distkeras.driver.job import TrainingError
from tests.data import blobs, blobs_df, mlp


def kill_worker_when_training(trainer, worker=1, min_commits=5, timeout=120, count="commits"):
    """Background thread: SIGKILL worker ``worker``'s Python process once it has made
    ``min_commits`` exchanges (``count``: the statistic that counts them)."""
    killed = {}

    def run():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            coordinator = trainer.coordinator
            if coordinator is not None:
                stats = coordinator.stats()["workers"][worker]
                if stats["pid"] and stats.get(count, 0) >= min_commits:
                    os.kill(stats["pid"], signal.SIGKILL)
                    killed.update(pid=stats["pid"], commits=stats[count])
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return killed


@pytest.fixture(scope="module")
def train(spark):
    return blobs_df(spark, 4000, seed=0).cache()


def test_async_worker_killed_mid_training_rejoins_and_converges(train):
    trainer = dk.trainers.DOWNPOUR(mlp(), loss="categorical_crossentropy", num_workers=2,
                                   batch_size=16, epochs=12, learning_rate=0.005,
                                   verbose=False)
    killed = kill_worker_when_training(trainer, min_commits=40)
    fitted = trainer.fit(train)
    assert killed, "the worker was never killed: training ended too early"
    workers = fitted.history.ps_stats["workers"]
    assert workers[1]["connections"] == 2 and workers[1]["lost_connections"] == 1
    assert workers[1]["pid"] != killed["pid"]                # a new Python worker rejoined
    assert len(fitted.history["loss"]) == 12
    x, y = blobs(1500, seed=1)
    assert (fitted.predict([x]).argmax(1) == y).mean() > 0.8


def test_sync_worker_killed_fails_fast_with_a_clear_error(train):
    trainer = dk.trainers.EASGD(mlp(), loss="categorical_crossentropy", num_workers=2,
                                batch_size=16, epochs=50, communication_window=4,
                                verbose=False)
    killed = kill_worker_when_training(trainer, min_commits=20)
    t0 = time.monotonic()
    with pytest.raises(TrainingError, match="lost during training; easgd is synchronous"):
        trainer.fit(train)
    assert killed and time.monotonic() - t0 < 180


def test_decentralised_async_worker_killed_rejoins_and_converges(train):
    trainer = dk.trainers.ADPSGD(mlp(), loss="categorical_crossentropy", num_workers=2,
                                 batch_size=16, epochs=10, learning_rate=0.005,
                                 verbose=False)
    killed = kill_worker_when_training(trainer, min_commits=100, count="exchanges")
    x, y = blobs(500, seed=3)
    # validation puts a barrier at epoch ends: worker 0 waits there for the retried worker 1
    # instead of finishing alone while the new attempt starts
    fitted = trainer.fit(train, validation_data=(x, np.eye(3, dtype=np.float32)[y]))
    assert killed, "the worker was never killed: training ended too early"
    workers = fitted.history.ps_stats["workers"]
    assert workers[1]["connections"] == 2 and workers[1]["lost_connections"] == 1
    assert workers[1]["pid"] != killed["pid"]
    assert len(fitted.history["loss"]) == 10 and fitted.history["val_accuracy"][-1] > 0.8
    retried = [w for w in fitted.history.workers if w["worker"] == 1][0]
    assert retried["attempt"] == 1 and retried["peers"] == "0"   # met its peer again
    x, y = blobs(1500, seed=1)
    assert (fitted.predict([x]).argmax(1) == y).mean() > 0.8


def test_decentralised_sync_worker_killed_fails_fast_naming_it(train):
    trainer = dk.trainers.DPSGD(mlp(), loss="categorical_crossentropy", num_workers=2,
                                batch_size=16, epochs=50, verbose=False)
    killed = kill_worker_when_training(trainer, min_commits=50, count="exchanges")
    t0 = time.monotonic()
    with pytest.raises(TrainingError, match="worker 1 was lost during training; dpsgd is "
                                            "synchronous"):
        trainer.fit(train)
    assert killed and time.monotonic() - t0 < 180


@pytest.mark.parametrize("name", ["DOWNPOUR", "ADPSGD", "ARSGD"])
def test_a_diverged_worker_stops_with_a_clear_error_and_sends_nothing(train, name):
    import keras

    trainer = getattr(dk.trainers, name)(mlp(), loss="categorical_crossentropy", num_workers=2,
                                         batch_size=16, epochs=3, verbose=False,
                                         worker_optimizer=keras.optimizers.SGD(1e12))
    t0 = time.monotonic()
    with pytest.raises(TrainingError, match=r"became non-finite \(NaN/inf\): the loss "
                                            r"diverged, so nothing was sent"):
        trainer.fit(train)
    assert time.monotonic() - t0 < 120


class StragglingADAG(dk.algorithms.ADAG):
    """ADAG whose worker 1 is 5x slower: after each window it sleeps 4x what the window took."""

    def local_steps(self, replica, exchange, window, start):
        t0 = time.perf_counter()
        theta = super().local_steps(replica, exchange, window, start)
        if exchange.worker.worker == 1:
            time.sleep(4 * (time.perf_counter() - t0))
        return theta


def test_a_straggler_does_not_stall_an_asynchronous_run(train):
    """With validation at every epoch end (the driver's work), the fast worker still never
    waits for the slow one: it finishes its epochs in a fraction of the straggler's time, and
    the history shows who made the updates while the straggler lagged."""
    x, y = blobs(500, seed=3)
    fitted = dk.trainers.ADAG(mlp(), loss="categorical_crossentropy", num_workers=2,
                              batch_size=16, epochs=4, learning_rate=0.03, verbose=False,
                              algorithm=StragglingADAG).fit(
        train, validation_data=(x, np.eye(3, dtype=np.float32)[y]))
    rows = {w["worker"]: w for w in fitted.history.workers}
    fast, slow = (rows[w]["finished_at"] - rows[w]["training_from"] for w in (0, 1))
    assert fast < 0.5 * slow, (fast, slow)
    assert len(fitted.history["val_accuracy"]) == 4
    first = fitted.history.epoch_stats[0]        # when the straggler ended its first epoch
    assert first["commits"][0] > 2 * first["commits"][1], fitted.history.epoch_stats
    shares = {w: s["commit_share"] for w, s in fitted.history.ps_stats["workers"].items()}
    assert sum(shares.values()) == pytest.approx(1.0)
    x, y = blobs(1500, seed=1)
    assert (fitted.predict([x]).argmax(1) == y).mean() > 0.8
