"""A worker's Python process killed for real (SIGKILL by pid) in the middle of training.

Asynchronous algorithms: Spark retries the task (local[2,2] allows one retry), the new attempt
rejoins from the current centre variable at the epoch it had reached, and training converges.
Synchronous algorithms: the run fails quickly with an error that says why, instead of hanging.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import distkeras as dk
from distkeras.driver.job import TrainingError
from tests.data import blobs, blobs_df, mlp


def kill_worker_when_training(trainer, worker=1, min_commits=5, timeout=120):
    """Background thread: SIGKILL worker ``worker``'s Python process once it has committed."""
    killed = {}

    def run():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ps = trainer.coordinator
            if ps is not None:
                stats = ps.stats()["workers"][worker]
                if stats["pid"] and stats["commits"] >= min_commits:
                    os.kill(stats["pid"], signal.SIGKILL)
                    killed.update(pid=stats["pid"], commits=stats["commits"])
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
                                   batch_size=16, num_epoch=12, learning_rate=0.005,
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
                                batch_size=16, num_epoch=50, communication_window=4,
                                verbose=False)
    killed = kill_worker_when_training(trainer, min_commits=20)
    t0 = time.monotonic()
    with pytest.raises(TrainingError, match="lost during training; easgd is synchronous"):
        trainer.fit(train)
    assert killed and time.monotonic() - t0 < 180
