"""distkeras from a Spark Connect client, against a real Connect server (``conftest.py``):
the three kinds of trainer, the services in a task, an interrupt, scoring with pyspark's
evaluators, persistence across classic and Connect sessions, a search, ROOT ingestion and a job.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import distkeras as dk
from tests.data import blobs, blobs_df, mlp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMON = dict(loss="categorical_crossentropy", num_workers=2, batch_size=32, verbose=False)


@pytest.fixture(scope="module")
def train(spark):
    return blobs_df(spark, 1600, seed=3, partitions=2).cache()


def accuracy(fitted, df) -> float:
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    scored = fitted.transform(df)
    value = MulticlassClassificationEvaluator(labelCol="label", metricName="accuracy"
                                              ).evaluate(scored)
    assert dk.evaluation.accuracy(scored) == pytest.approx(value, abs=1e-12)
    return value


def test_the_session_is_connect_and_answers_what_distkeras_asks(spark, tmp_path):
    from distkeras.io.filesystem import ArrowFS, filesystem
    from distkeras.spark_api import Unavailable, spark_api

    api = spark_api(spark)
    assert api.is_connect and api.master == "local[3]"
    assert api.default_parallelism == 3 and api.task_slots() == 3
    assert api.service_host == "127.0.0.1"
    with pytest.raises(Exception, match="sparkContext"):
        spark.sparkContext                                    # noqa: B018 - what Connect lacks
    fs = filesystem(spark, f"file://{tmp_path}/store")
    assert isinstance(fs, ArrowFS)
    fs.write(fs.join("a", "b.bin"), b"\x00\x01")
    fs.rename(fs.join("a", "b.bin"), fs.join("a", "c.bin"))
    assert fs.read(fs.join("a", "c.bin")) == b"\x00\x01" and fs.list() == ["a"]
    fs.delete(fs.join("a"))
    assert not fs.exists(fs.join("a"))
    counter = api.counter("these counters", "use the other way")
    counter.add(1)
    assert isinstance(counter, Unavailable)
    with pytest.raises(NotImplementedError, match="use the other way"):
        counter.value                                         # noqa: B018


def test_a_directory_moves_where_the_store_cannot_move_one(tmp_path):
    """S3 and GCS cannot move a directory (a checkpoint's epoch-N.tmp -> epoch-N): its files
    are copied, then the source deleted. A local store refusing directory moves stands in."""
    from distkeras.io.filesystem import ArrowFS

    class NoDirectoryMoves:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def move(self, src, dst):
            raise NotImplementedError("this store cannot move a directory")

    fs = ArrowFS(f"file://{tmp_path}/store")
    fs.write(fs.join("epoch-1.tmp", "state.npz"), b"centre")
    fs.write(fs.join("epoch-1.tmp", "meta", "history.json"), b"{}")
    fs._fs = NoDirectoryMoves(fs._fs)
    fs.rename(fs.join("epoch-1.tmp"), fs.join("epoch-1"))
    assert fs.list() == ["epoch-1"]
    assert fs.read(fs.join("epoch-1", "state.npz")) == b"centre"
    assert fs.read(fs.join("epoch-1", "meta", "history.json")) == b"{}"
    with pytest.raises(NotImplementedError):           # a file still needs the store's move
        fs.rename(fs.join("epoch-1", "state.npz"), fs.join("moved.npz"))


@pytest.mark.parametrize("name, kw", [
    ("ADAG", dict(learning_rate=0.03)),                 # parameter server, asynchronous
    ("ARSGD", dict(learning_rate=0.03)),                # barrier stage, ring all-reduce
    ("ADPSGD", dict(learning_rate=0.03)),               # gossip between peers
])
def test_each_kind_of_trainer_trains_and_scores(spark, train, name, kw):
    fitted = getattr(dk.trainers, name)(mlp(), epochs=4, **COMMON, **kw).fit(train)
    assert len(fitted.history["loss"]) == 4
    assert fitted.history["loss"][-1] < fitted.history["loss"][0]
    assert accuracy(fitted, train) > 0.75
    assert sorted(w["worker"] for w in fitted.history.workers) == [0, 1]


def test_services_in_a_task_train_the_same_model_kinds(spark, train):
    val = blobs_df(spark, 400, seed=9, partitions=1)
    fitted = dk.trainers.ADAG(mlp(), epochs=4, learning_rate=0.03, services="task",
                              validation_data=val, **COMMON).fit(train)
    assert len(fitted.history["val_accuracy"]) == 4 and fitted.history["val_accuracy"][-1] > 0.7
    assert accuracy(fitted, train) > 0.75
    assert fitted.history.ps_stats["updates"] > 0
    assert sorted(fitted.history.ps_stats["workers"]) == [0, 1]
    assert sorted(w["worker"] for w in fitted.history.workers) == [0, 1]
    with pytest.raises(ValueError, match="checkpoint_dir"):
        dk.trainers.ADAG(mlp(), services="task", checkpoint_dir="/tmp/x", **COMMON).fit(train)
    with pytest.raises(ValueError, match="num_workers \\+ 1 = 4 task slots"):
        dk.trainers.ADAG(mlp(), services="task", **{**COMMON, "num_workers": 3}).fit(train)


def test_an_interrupt_cancels_the_jobs_and_frees_the_ports(spark, train):
    import keras

    trainer = dk.trainers.ADAG(mlp(), epochs=50, learning_rate=0.03, **COMMON)
    seen = {}

    class Interrupt(keras.callbacks.Callback):      # Ctrl-C in a notebook, at the first epoch end
        def on_epoch_end(self, epoch, logs=None):
            seen["address"] = trainer.coordinator.address
            raise KeyboardInterrupt

    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(train, callbacks=[Interrupt()])
    with pytest.raises(OSError):
        socket.create_connection(seen["address"], timeout=2).close()
    # every slot is free again: a barrier stage needing all three runs at once
    rows = spark.range(0, 3, 1, 3).mapInArrow(lambda it: it, "id long", barrier=True).collect()
    assert len(rows) == 3 and time.monotonic() - began < 120


CLASSIC_SIDE = """
import sys, numpy as np, pyarrow.parquet as pq
from pyspark.ml import PipelineModel
import distkeras as dk
from distkeras.spark import session
spark = session("local[2]")
src, dst, data, out = sys.argv[1:5]
model = PipelineModel.load(src)
df = spark.read.parquet(data).orderBy("f0")
probs = np.array([r[0].toArray() for r in model.transform(df).select("probability").collect()])
np.save(out, probs)
model.save(dst)
dk.trainers.ADAG.load(src + "-trainer").save(dst + "-trainer")
"""


def test_persistence_round_trips_between_classic_and_connect(spark, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import VectorAssembler
    import pandas as pd

    x, y = blobs(800, seed=5)
    df = spark.createDataFrame(pd.DataFrame({f"f{i}": x[:, i] for i in range(8)} | {"label": y}))
    df.write.parquet(str(tmp_path / "data"))
    assembler = VectorAssembler(inputCols=[f"f{i}" for i in range(8)], outputCol="vec")
    trainer = dk.trainers.ADAG(mlp(), features_col="vec", epochs=3, learning_rate=0.03, **COMMON)
    model = Pipeline(stages=[assembler, trainer]).fit(df)
    model.save(f"file://{tmp_path}/connect")                 # pyarrow's filesystem
    trainer.save(f"file://{tmp_path}/connect-trainer")
    mine = np.array([r[0].toArray() for r in model.transform(df).select("probability").collect()])
    assert (mine.argmax(1) == y).mean() > 0.7        # createDataFrame keeps the rows' order
    script = tmp_path / "classic_side.py"
    script.write_text(CLASSIC_SIDE)
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE",
                                                             "SPARK_CONNECT_MODE_ENABLED")}
    done = subprocess.run([sys.executable, str(script), f"file://{tmp_path}/connect",
                           f"file://{tmp_path}/classic", str(tmp_path / "data"),
                           str(tmp_path / "classic.npy")], cwd=ROOT,
                          env=dict(env, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    classic = np.load(f"{tmp_path}/classic.npy")             # a classic session read Connect's
    data = spark.read.parquet(str(tmp_path / "data")).orderBy("f0")
    ours = np.array([r[0].toArray() for r in model.transform(data).select("probability")
                     .collect()])
    np.testing.assert_allclose(classic, ours, rtol=1e-5, atol=1e-6)
    again = PipelineModel.load(f"file://{tmp_path}/classic")  # Connect reads Hadoop's writing
    reread = np.array([r[0].toArray() for r in again.transform(data).select("probability")
                       .collect()])
    np.testing.assert_allclose(reread, classic, rtol=1e-5, atol=1e-6)
    loaded = dk.trainers.ADAG.load(f"{tmp_path}/classic-trainer")
    assert loaded.getFeaturesCol() == "vec" and loaded.getEpochs() == 3


def build(params):
    import keras

    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(params["units"],
                                                                   activation="relu"),
                             keras.layers.Dense(3, activation="softmax")])


def test_searches_run_their_trials_in_the_executors(spark):
    from distkeras.tuning import ASHA, GridSearch

    df = blobs_df(spark, n=300, seed=3, partitions=2)
    common = dict(features_col="features", label_col="label", loss="categorical_crossentropy",
                  batch_size=32, verbose=False)
    result = GridSearch(build, {"units": [4, 16]}, epochs=1, **common).fit(df)
    assert len(result.table) == 2 and (result.table["status"] == "ok").all()
    assert result.best_params["units"] in (4, 16)
    # ASHA's trials report their epochs to a service in the client, which prunes them
    pruned = ASHA(build, {"units": [2, 4, 8, 16]}, n_trials=None, eta=2, min_epochs=1,
                  max_epochs=2, seed=0, **common).fit(df)
    assert set(pruned.table["status"]) <= {"ok", "pruned"} and len(pruned.table) == 4
    assert sorted(pruned.rungs[0]["trials"]) == [0, 1, 2, 3]    # every report came through
    assert pruned.table["epochs"].max() == 2


def test_root_files_are_read_and_turned_into_features(spark, tmp_path):
    import uproot

    from distkeras.datasets.delphes import generate_delphes
    from distkeras.features import TopologyFeatures
    from distkeras.io.root import register_root_source

    paths = generate_delphes(tmp_path / "sample", 60, seed=3, events_per_file=30,
                             basket_events=15)
    entries = sum(uproot.open(p)["Delphes"].num_entries for p in paths)
    labels = {str(tmp_path / "sample" / p / "*.root"): i
              for i, p in enumerate(("qcd", "ttbar", "wjets"))}
    events = dk.read_root(spark, paths, "Delphes", labels=labels)
    assert events.count() == entries
    assert register_root_source(spark)
    source = (spark.read.format("root").option("tree", "Delphes")
              .option("branches", "Jet.*").load(paths))
    assert source.count() == entries and "Jet_PT" in source.columns
    features = TopologyFeatures(hlfOnly=True)
    hlf = features.transform(events)
    cutflow = features.cutflow(events)
    assert hlf.count() == cutflow["events_selected"] > 0
    with pytest.raises(NotImplementedError, match="cutflow"):
        features.counters.events_in                         # noqa: B018 - no accumulators here


def test_a_job_runs_on_the_connect_server(connect_url, tmp_path):
    out = tmp_path / "events.parquet"
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE",
                                                             "SPARK_CONNECT_MODE_ENABLED")}
    done = subprocess.run([sys.executable, "jobs/ingest.py", "--generate", "40", "-o", str(out),
                           "--remote", connect_url], cwd=ROOT, env=dict(env, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.num_rows == 120 and set(table.column("label").to_pylist()) == {0, 1, 2}
