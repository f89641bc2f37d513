"""Resuming after the driver died: a real driver process SIGKILLed mid-training and the same
command run again (ADAG: θ̃, the update count, the epochs and the history come back from the
checkpoint); keras.callbacks.BackupAndRestore in-process; the checkpoint store on a Hadoop
filesystem URI and its refusals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import distkeras as dk
from distkeras.driver.checkpoint import Checkpoint
from tests.data import blobs, blobs_df, mlp

ROOT = Path(__file__).resolve().parent.parent


def driver(checkpoint, out, *extra) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), SPARK_LOCAL_IP="127.0.0.1",
               PYSPARK_PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen([sys.executable, "-m", "tests.resume_driver", str(checkpoint),
                             str(out), *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_driver_killed_mid_training_resumes_from_its_last_epoch(tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "result.json"
    first = driver(ckpt, out)
    deadline = time.monotonic() + 300
    while not any(p.name in ("epoch-2", "epoch-3") for p in ckpt.glob("epoch-*")):
        assert first.poll() is None, first.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint of epoch 2 within 300 s"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)        # the driver dies: no cleanup, no goodbye
    first.communicate(timeout=60)
    assert not out.exists()
    done = sorted(int(p.name.split("-")[1]) for p in ckpt.glob("epoch-*") if "." not in p.name)
    assert done and 2 <= done[-1] < 6, done

    again = driver(ckpt, out, "baseline")
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-4000:]
    result = json.loads(out.read_text())
    # what the kill left: the last complete epoch, and the one before it where the kill landed
    # between the rename of the new epoch and the removal of the old (the store reads the last)
    assert result["found"] == [f"epoch-{k}" for k in done] and len(done) <= 2, result["found"]
    assert f"resuming from the checkpoint in {ckpt}: {done[-1]} of 6 epochs done" in stderr
    assert result["epochs"] == list(range(6)) and len(result["loss"]) == 6
    assert np.isfinite(result["loss"]).all() and result["updates"] > 0
    assert result["left"] == []                              # cleared once complete
    assert result["accuracy"] > 0.8, result
    assert abs(result["accuracy"] - result["baseline_accuracy"]) <= 0.05, result


class StopAfter(keras.callbacks.Callback):
    """Interrupts the driver after ``epoch`` (0-based), as a crash or Ctrl-C would."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("the driver stops here")


def test_backup_and_restore_resumes_the_remaining_epochs(spark, tmp_path):
    train = blobs_df(spark, 2000, seed=0).cache()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))

    def trainer(*callbacks):
        return dk.trainers.DOWNPOUR(mlp(), loss="categorical_crossentropy", num_workers=2,
                                    batch_size=32, epochs=4, learning_rate=0.01,
                                    verbose=False, callbacks=[backup, *callbacks])

    with pytest.raises(KeyboardInterrupt):
        trainer(StopAfter(1)).fit(train)
    assert (tmp_path / "backup" / "epoch-2").is_dir()
    fitted = trainer().fit(train)
    history = fitted.history
    assert history.epoch == [0, 1, 2, 3] and len(history["loss"]) == 4
    assert history["loss"][3] < history["loss"][0]
    assert not list((tmp_path / "backup").glob("epoch-*"))   # cleared once complete
    x, y = blobs(1000, seed=1)
    assert float((fitted.predict([x]).argmax(1) == y).mean()) > 0.8


def test_checkpoint_store_on_a_hadoop_uri_and_its_refusals(spark, tmp_path):
    uri = (tmp_path / "ckpt").as_uri()                       # file://... through Hadoop
    store = Checkpoint(spark, uri, "fp-1")
    assert store.load() is None
    centre = np.arange(10, dtype=np.float32)
    store.save(1, 7, {"loss": [0.5]}, centre, {"momentum": np.ones(3)})
    store.save(2, 9, {"loss": [0.5, 0.4]}, centre + 1, {"momentum": np.full(3, 2.0)})
    state = store.load()
    assert state["epochs"] == 2 and state["updates"] == 9 and state["history"]["loss"] == [0.5, 0.4]
    np.testing.assert_array_equal(state["centre"], centre + 1)
    np.testing.assert_array_equal(state["server_state"]["momentum"], np.full(3, 2.0))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch-2"]  # older removed
    with pytest.raises(ValueError, match="written by a different run"):
        Checkpoint(spark, uri, "fp-2").load()
    (tmp_path / "ckpt" / "epoch-2" / "arrays.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot be read .* delete it"):
        store.load()
    store.clear()
    assert store.load() is None
