"""What a Keras/Spark user does with a trainer: validation + callbacks, save/load, transform,
Pipelines with vector columns, multi-input models, and the clear errors before launch."""
from __future__ import annotations

import gc
import socket
import time

import numpy as np
import pytest

import distkeras as dk
from distkeras.driver.job import TrainingError
from distkeras.driver.preflight import DataError
from distkeras.spark import arrays_to_dataframe
from tests.data import blobs, blobs_df, mlp


@pytest.fixture(scope="module")
def train(spark):
    return blobs_df(spark, 2000, seed=3).cache()


def adag(model=None, **kw):
    kw = {"loss": "categorical_crossentropy", "num_workers": 2, "batch_size": 32, "epochs": 1,
          "learning_rate": 0.03, "verbose": False, **kw}
    return dk.trainers.ADAG(model or mlp(), **kw)


@pytest.fixture(scope="module")
def fitted(train):
    return adag(epochs=3).fit(train, validation_data=train)


def test_history_has_training_validation_and_server_statistics(fitted):
    h = fitted.history
    assert set(h) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(h["val_accuracy"]) == 3 and h["val_accuracy"][-1] > 0.5   # chance: 0.33
    assert h.ps_stats["updates"] > 0 and len(h.workers) == 2
    assert all(w["bytes_in"] > 0 for w in h.ps_stats["workers"].values())


def test_transform_equals_keras_predict(fitted, spark):
    x, y = blobs(300, seed=9)
    import pandas as pd

    df = spark.createDataFrame(pd.DataFrame({"features": list(x), "label": y}),
                               schema="features array<float>, label bigint")
    scored = fitted.transform(df).toPandas()
    assert list(scored.columns) == ["features", "label", "rawPrediction", "probability",
                                    "prediction"]
    expected = fitted.keras_model.predict(np.stack(scored["features"]), verbose=0)
    probability = np.stack([v.toArray() for v in scored["probability"]])
    np.testing.assert_allclose(probability, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scored["prediction"].to_numpy(), expected.argmax(1))


def test_transform_of_a_frame_read_from_parquet_feeds_the_evaluators(fitted, spark, tmp_path):
    """After a Parquet scan Spark evaluates a Python UDF columnar; the scores must survive it
    (a Spark ML vector inside the UDF's result did not: UNSUPPORTED_DATATYPE UDT)."""
    import pandas as pd

    from distkeras.evaluation import evaluate

    x, y = blobs(300, seed=9)
    spark.createDataFrame(pd.DataFrame({"features": list(x), "label": y}),
                          schema="features array<float>, label bigint").write.parquet(
        str(tmp_path / "test.parquet"))
    scored = fitted.transform(spark.read.parquet(str(tmp_path / "test.parquet")))
    expected = fitted.keras_model.predict(x, verbose=0).argmax(1)
    assert evaluate(scored, label_col="label")["accuracy"] == pytest.approx((expected == y).mean())


def test_a_predict_call_takes_more_rows_only_where_they_fit_the_budget():
    """A small model predicts a whole Arrow batch per call (the call's overhead, not its rows,
    is its cost); a wide one as many rows as fit the budget, never fewer than batch_size; a
    model that does not say its layers' shapes, batch_size."""
    import keras

    from distkeras.model import PREDICT_BUDGET, rows_per_call

    assert rows_per_call(mlp(), 1024) >= 10_000
    width = PREDICT_BUDGET // 4 // 512
    wide = keras.Sequential([keras.Input((8,)), keras.layers.Dense(width), keras.layers.Dense(3)])
    assert rows_per_call(wide, 16) == PREDICT_BUDGET // (4 * (8 + width + 3)) < 512
    assert rows_per_call(wide, 1024) == 1024

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(np.zeros((2, 8), np.float32))
    assert rows_per_call(model, 64) == 64


def test_save_load_round_trip(fitted, tmp_path, spark):
    fitted.save(str(tmp_path / "m"))
    again = dk.load_model(str(tmp_path / "m"))
    x, _ = blobs(50, seed=4)
    np.testing.assert_allclose(again.predict([x]), fitted.predict([x]), rtol=1e-6)
    assert again.history["val_accuracy"] == fitted.history["val_accuracy"]
    with pytest.raises(FileNotFoundError, match="not a saved distkeras model"):
        dk.load_model(str(tmp_path))


def test_pipeline_with_vector_assembler_and_scalar_columns(spark):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler
    import pandas as pd

    x, y = blobs(1200, seed=5)
    pdf = pd.DataFrame({f"f{i}": x[:, i] for i in range(8)} | {"label": y})
    df = spark.createDataFrame(pdf)
    assembler = VectorAssembler(inputCols=[f"f{i}" for i in range(8)], outputCol="vec")
    model = Pipeline(stages=[assembler, adag(features_col="vec", epochs=5)]).fit(df)
    scored = model.transform(df)
    assert "vec" in scored.columns and "prediction" in scored.columns
    pred = scored.select("label", "prediction").toPandas()
    acc = (pred["prediction"] == pred["label"]).mean()
    assert acc > 0.7


def test_multi_input_model_with_reshape(spark):
    import keras
    import pandas as pd

    x, y = blobs(1500, seed=6)
    df = spark.createDataFrame(pd.DataFrame({"a": list(x[:, :6]), "b": list(x[:, 6:]),
                                             "label": y}),
                               schema="a array<float>, b array<float>, label bigint")
    ia, ib = keras.Input((3, 2), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Flatten()(ia), ib])
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(16, activation="relu")(h))
    fitted = adag(keras.Model([ia, ib], out), features_col=["a", "b"], epochs=5).fit(df)
    scored = fitted.transform(df).toPandas()
    acc = (scored["prediction"] == scored["label"]).mean()
    assert acc > 0.7


def test_early_stopping_and_checkpoint_run_on_the_driver(train, tmp_path):
    import keras

    path = tmp_path / "best.keras"
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=10.0, patience=0),
                 keras.callbacks.ModelCheckpoint(str(path), monitor="val_loss")]
    fitted = adag(epochs=30).fit(train, validation_data=train, callbacks=callbacks)
    assert 2 <= len(fitted.history["loss"]) < 30
    assert path.exists() and keras.models.load_model(str(path)).count_params() == 195


def test_second_fit_in_the_same_session_works(train):
    one, two = adag().fit(train), adag().fit(train)
    assert len(one.history["loss"]) == len(two.history["loss"]) == 1


def test_arrays_to_dataframe_keeps_every_value_and_names_bad_input(spark):
    rng = np.random.default_rng(0)
    images, labels = rng.random((50, 4, 3), dtype=np.float32), np.arange(50) % 3
    df = arrays_to_dataframe(spark, {"image": images, "label": labels, "w": labels * 0.5,
                                     "keep": labels > 0}, partitions=3)
    assert df.schema.simpleString() == ("struct<image:array<float>,label:bigint,w:double,"
                                        "keep:boolean>")
    assert df.rdd.getNumPartitions() == 3
    rows = sorted(df.collect(), key=lambda r: r.label * 100 + r.image[0])
    got = np.array([r.image for r in rows], np.float32)
    want = images.reshape(50, 12)[np.lexsort((images[:, 0, 0], labels))]
    np.testing.assert_array_equal(got, want)
    assert [r.w for r in rows] == sorted(labels * 0.5) and sum(r.keep for r in rows) == 33
    with pytest.raises(ValueError, match="same number of rows"):
        arrays_to_dataframe(spark, {"features": images, "label": labels[:10]})
    with pytest.raises(TypeError, match="column 'name': dtype <U1 is not numeric"):
        arrays_to_dataframe(spark, {"name": np.array(["a"] * 50)})


def test_a_cached_input_split_for_the_workers_is_trained_as_it_is(spark):
    """A DataFrame cached in one balanced partition per worker is read by the workers as it is
    (no shuffle, no second cache) and stays cached after the fit; any other input gets a
    repartitioned cache of the fit's own, released after training."""
    from distkeras.driver.preflight import prepare_training_data
    from distkeras.feed import feed_spec_for

    persistent = lambda: spark.sparkContext._jsc.getPersistentRDDs().size()  # noqa: E731
    feed = feed_spec_for(mlp(), "features", "label", "categorical_crossentropy")
    x, y = blobs(1000, seed=4)
    ready = arrays_to_dataframe(spark, {"features": x, "label": y}, partitions=2).cache()
    other = blobs_df(spark, 1000, seed=4, partitions=3).cache()
    assert ready.count() == other.count() == 1000     # both caches filled
    cached = persistent()
    data, smallest, owned = prepare_training_data(ready, feed, 2, 32, barrier=False)
    assert not owned and smallest == 500 and persistent() == cached
    assert data.rdd.getNumPartitions() == 2
    data, smallest, owned = prepare_training_data(other, feed, 2, 32, barrier=False)
    assert owned and smallest == 500 and persistent() == cached + 1   # 3 partitions: 667 / 333
    data.unpersist()
    four = blobs_df(spark, 1000, seed=4, partitions=4).cache()
    assert four.count() == 1000
    cached = persistent()
    data, smallest, owned = prepare_training_data(four, feed, 2, 32, barrier=False)
    assert not owned and smallest >= 490 and persistent() == cached   # merged, not copied
    assert data.rdd.getNumPartitions() == 2 and data.count() == 1000
    for df, trainer in ((ready, dk.trainers.ARSGD), (other, dk.trainers.DPSGD),
                        (four, dk.trainers.ADAG)):   # barrier or not; merged (no barrier)
        fitted = trainer(mlp(), loss="categorical_crossentropy", num_workers=2, batch_size=32,
                         epochs=2, learning_rate=0.03, verbose=False).fit(df)
        assert len(fitted.history["loss"]) == 2 and persistent() == cached
        assert df.storageLevel.useMemory       # the user's cache is left alone
    for df in (ready, other, four):
        df.unpersist()


# -- clear errors before launch --------------------------------------------------------------------

def bad_frame(spark, features, labels, schema="features array<float>, label bigint"):
    import pandas as pd

    return spark.createDataFrame(pd.DataFrame({"features": features, "label": labels}),
                                 schema=schema)


def test_missing_column(train):
    with pytest.raises(DataError, match="column 'feats' not found"):
        adag(features_col="feats").fit(train)


def test_wrong_feature_length(spark):
    df = bad_frame(spark, [np.ones(5, np.float32)] * 64, [0] * 64)
    with pytest.raises(DataError, match=r"hold 5 values per row but the model input has shape \(8,\)"):
        adag().fit(df)


def test_nan_features_are_counted(spark):
    rows = [np.ones(8, np.float32) for _ in range(64)]
    rows[3][2] = np.nan
    rows[7][0] = np.inf
    # each worker counts its own partition's (the two bad rows may fall in one or in both)
    with pytest.raises(DataError, match=r"columns \['features'\] have [12] NaN/inf values? "
                                        r"\(worker [01]'s partition\); clean or impute"):
        adag().fit(bad_frame(spark, rows, [0] * 64))
    # the streaming feeds' data checks count them all on the driver
    with pytest.raises(DataError, match="2 NaN/inf values"):
        adag(data_feed="stream").fit(bad_frame(spark, rows, [0] * 64))


def test_labels_outside_the_classes(spark):
    df = bad_frame(spark, [np.ones(8, np.float32)] * 64, [0] * 63 + [7])
    with pytest.raises(DataError, match=r"range over \[0, 7\] but the model has 3 classes"):
        adag().fit(df)


def test_empty_dataframe(train):
    with pytest.raises(DataError, match="empty"):
        adag().fit(train.limit(0))


def test_more_workers_than_rows(spark):
    df = bad_frame(spark, [np.ones(8, np.float32)] * 3, [0, 1, 2])
    with pytest.raises(DataError, match="num_workers=4 but the data has only 3 rows"):
        adag(num_workers=4).fit(df)


def test_synchronous_workers_need_free_slots(train):
    with pytest.raises(DataError, match="need as many free task slots, Spark has 2"):
        dk.trainers.EASGD(mlp(), loss="categorical_crossentropy", num_workers=3,
                          verbose=False).fit(train)


def test_model_not_built_or_without_loss(train):
    import keras

    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="has no weights yet: give it an Input"):
        adag(unbuilt).fit(train)
    with pytest.raises(ValueError, match="no loss"):
        dk.trainers.ADAG(mlp(), verbose=False).fit(train)


def test_unreachable_driver_fails_fast_naming_host_and_setting(train):
    t0 = time.monotonic()
    # the server listens on 127.0.0.1, executors are told 127.0.0.2: nothing answers there
    with pytest.raises(TrainingError, match=r"127\.0\.0\.2:\d+.*spark\.driver\.host"):
        adag(ps_host="127.0.0.2", ps_bind_host="127.0.0.1", connect_timeout=2).fit(train)
    assert time.monotonic() - t0 < 90


def test_port_in_use(train):
    from distkeras.transport import PSBindError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(PSBindError, match=str(taken.getsockname()[1])):
            adag(ps_port=taken.getsockname()[1]).fit(train)


def test_the_documented_table_of_bad_inputs_names_real_tests():
    """At least 20 rows, each naming a test that exists (conftest bounds their time)."""
    import importlib

    from tests.conftest import bad_input_tests

    rows = bad_input_tests()
    assert len(rows) >= 20 and len(set(rows)) == len(rows), rows
    for row in rows:
        path, name = row.split("::")
        module = importlib.import_module(path[:-3].replace("/", "."))
        assert callable(getattr(module, name, None)), (f"docs/bad-input.md names {row}, which "
                                                       "does not exist")


def test_a_cached_frame_is_checked_once_and_bad_data_is_still_refused(spark, monkeypatch):
    """Fitting a cached DataFrame again skips the data checks it passed (only its rows are
    counted where the fit repartitions it); another frame, an unpersisted one, or other
    columns are checked again, so bad rows are still refused. A frame merged into the
    workers' partitions is checked as merged where its cache is filled: one job, no second one
    to count its rows; one whose cache the checks fill is checked as it is, then counted as
    merged (``coalesce`` groups the partitions by where they are cached)."""
    from distkeras.driver import preflight
    from distkeras.feed import feed_spec_for

    checked, counted = [], []
    real, count = preflight.check_data, preflight.partition_rows
    monkeypatch.setattr(preflight, "check_data", lambda df, *a, **k: checked.append(df)
                        or real(df, *a, **k))
    monkeypatch.setattr(preflight, "partition_rows", lambda df: counted.append(df) or count(df))
    feed = feed_spec_for(mlp(), "features", "label", "categorical_crossentropy")
    x, y = blobs(400, seed=5)
    ready = arrays_to_dataframe(spark, {"features": x, "label": y}, partitions=2).cache()
    other = blobs_df(spark, 400, seed=5, partitions=3).cache()
    four = blobs_df(spark, 400, seed=5, partitions=4).cache()
    assert four.count() == 400                                   # its cache filled
    lazy = blobs_df(spark, 400, seed=6, partitions=4).cache()    # filled by the checks
    adaptive = spark.conf.get("spark.sql.adaptive.enabled")
    spark.conf.set("spark.sql.adaptive.enabled", "false")    # (its plans would fill the cache
    try:                                                     # as soon as they are asked for)
        prepared = {}
        for df in (ready, other, four, lazy):
            runs = prepared[id(df)] = []
            for _ in range(2):
                before, jobs = len(checked), len(counted)
                data, smallest, owned = preflight.prepare_training_data(df, feed, 2, 32, False)
                runs.append((len(checked) - before, smallest, len(counted) - jobs,
                             checked[-1].rdd.getNumPartitions()))
                if owned:
                    data.unpersist()
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", adaptive)
    for df in (ready, other, four, lazy):
        runs = prepared[id(df)]
        assert runs[0][0] == 1 and runs[1][0] == 0, runs        # checked once
        assert runs[0][1] == runs[1][1] >= 190, runs             # the same shares
        if df is four:                                           # merged, not copied: checked
            assert runs[0][3] == 2 and runs[0][2] == 0, runs     # as merged, in one job
            assert runs[1][2] == 1, runs
        if df is lazy:                                           # checked as it is, then the
            assert runs[0][3] == 4 and runs[0][2] == 1, runs     # merged groups counted
            assert runs[1][2] == 1, runs
    x[7, 1] = np.nan
    bad = arrays_to_dataframe(spark, {"features": x, "label": y}, partitions=2).cache()
    with pytest.raises(DataError, match="NaN"):
        preflight.prepare_training_data(bad, feed, 2, 32, False)
    ready.unpersist()
    before = len(checked)
    preflight.prepare_training_data(ready, feed, 2, 32, False)[0].unpersist()
    assert len(checked) == before + 1                         # no longer cached: checked again
    for df in (bad, other, four, lazy):
        df.unpersist()


def test_warming_up_the_data_checks_leaves_nothing_behind(spark):
    """The JVM's warm-up of the data checks (``warm_up_workers`` runs it beside the import)
    prepares a tiny frame as a fit would, then releases every cache it made, and remembers
    no frame as checked."""
    from distkeras.driver import preflight, warm_up

    persistent = lambda: spark.sparkContext._jsc.getPersistentRDDs().size()  # noqa: E731
    before, frames = persistent(), len(preflight.CHECKED._frames)
    warm_up.warm_up_checks(spark)
    assert persistent() == before
    gc.collect()
    assert len(preflight.CHECKED._frames) <= frames


def test_a_fit_keeps_its_python_workers_for_the_next_one(train, monkeypatch):
    """After a fit, keep-alive jobs run in the fit's own pool of Python workers (Spark stops
    one idle for a minute, and with it Keras' import and the compiled replica), and the next
    fit stops them and runs (its tasks take the workers Spark hands out first, so which one
    is not asserted)."""
    from distkeras.driver import keep_warm

    monkeypatch.setattr(keep_warm, "INTERVAL", 0.2)
    single = lambda: dk.trainers.SingleTrainer(mlp(), loss="categorical_crossentropy",  # noqa: E731
                                               batch_size=32, epochs=1, verbose=False)
    first = single().fit(train)
    keep_warm.KEEP_WARM.kept = []
    wait_until = time.monotonic() + 60
    while not keep_warm.KEEP_WARM.kept and time.monotonic() < wait_until:
        time.sleep(0.1)
    assert first.history.workers[0]["pid"] in keep_warm.KEEP_WARM.kept
    t0 = time.monotonic()
    second = single().fit(train)        # stops the keep-alive first
    assert len(second.history["loss"]) == 1 and time.monotonic() - t0 < 60


def test_workers_warmed_up_before_the_first_fit_are_the_ones_it_trains_in(train):
    """``warm_up_workers(wait=False)`` returns at once and imports Keras in the pool the fit
    will use (its own here: 3 threads, which no other test uses); a fit started while that
    import is in flight waits for it rather than cancelling it, and trains in that worker."""
    from distkeras.driver import keep_warm

    t0 = time.monotonic()
    waited = dk.warm_up_workers(train.sparkSession, 1, cores_per_worker=3, wait=False)
    assert waited < 5 and time.monotonic() - t0 < 10
    fitted = dk.trainers.SingleTrainer(mlp(), loss="categorical_crossentropy", batch_size=32,
                                       epochs=1, cores_per_worker=3, verbose=False).fit(train)
    assert fitted.history.workers[0]["pid"] in keep_warm.KEEP_WARM.kept
    assert fitted.history.workers[0]["threads"] == 3


def test_validation_data_is_checked_as_collected_with_the_training_checks_messages(spark):
    """Validation data is collected in one Spark job and checked on its Arrow table: every bad
    input gets the error (and the counts) the training data's Spark aggregation gives."""
    from pyspark.sql import functions as F

    from distkeras.driver import preflight
    from distkeras.driver.data import collect_arrays
    from distkeras.feed import feed_spec_for
    from distkeras.spark import to_arrow

    feed = feed_spec_for(mlp(), "features", "label", "categorical_crossentropy")
    x, y = blobs(60, seed=5)
    x[3, 2], x[9, 0], x[9, 5] = np.nan, np.inf, -np.inf
    good = arrays_to_dataframe(spark, {"features": blobs(60, seed=5)[0], "label": y})
    bad_cases = {
        "NaN/inf": arrays_to_dataframe(spark, {"features": x, "label": y}),
        "null rows": good.withColumn("features", F.when(F.col("label") == 1, None)
                                     .otherwise(F.col("features"))),
        "arrays of length": good.withColumn("features", F.when(
            F.col("label") == 2, F.slice("features", 1, 7)).otherwise(F.col("features"))),
        "classes": good.withColumn("label", F.col("label") + 1),
        "empty": good.limit(0),
    }
    for needle, df in bad_cases.items():
        selected, kinds = preflight.select_feed_columns(df, feed)
        with pytest.raises(DataError) as spark_side:
            preflight.check_data(selected, feed, kinds, "validation data")
        with pytest.raises(DataError) as arrow_side:
            preflight.check_table(to_arrow(selected), feed, kinds, "validation data")
        assert str(arrow_side.value) == str(spark_side.value) and needle in str(arrow_side.value)
        with pytest.raises(DataError, match=needle):
            collect_arrays(df, feed)
    xs, ys = collect_arrays(good, feed)
    assert xs[0].shape == (60, 8) and len(ys) == 60
