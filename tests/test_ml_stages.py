"""Trainers and fitted models as real pyspark.ml stages and real Keras training: Params,
param maps, copies, model selection, persistence (local and file://), output columns read by
pyspark.ml's evaluators, and the driver-side Keras callbacks (ReduceLROnPlateau, TensorBoard,
CSVLogger) with the per-epoch statistics."""
from __future__ import annotations

import csv

import numpy as np
import pytest

import distkeras as dk
from distkeras import algorithms, params
from tests.data import blobs, blobs_df, mlp


@pytest.fixture(scope="module")
def train(spark):
    return blobs_df(spark, 1600, seed=3).cache()


def adag(model=None, **kw):
    kw = {"loss": "categorical_crossentropy", "num_workers": 2, "batch_size": 32, "epochs": 1,
          "learning_rate": 0.03, "verbose": False, **kw}
    return dk.trainers.ADAG(model or mlp(), **kw)


class HalfStep(algorithms.DOWNPOUR):
    """θ̃ ← θ̃ + s·Δ: a rule written in user code, with a parameter of its own."""

    name = "halfstep"

    def __init__(self, communication_window=None, learning_rate=0.01, num_workers=1,
                 step_scale: float = 0.5, **params):
        super().__init__(communication_window, learning_rate, num_workers, **params)
        self.step_scale = float(step_scale)

    def server_commit(self, centre, payload, worker, version):
        centre += payload * np.float32(self.step_scale)
        return centre


# -- Params ------------------------------------------------------------------------------------
def test_every_setting_is_a_param_with_doc_default_and_accessors():
    trainer = dk.trainers.DPSGD(mlp(), topology="ring", epochs=3)
    explained = trainer.explainParams()
    for setting in params.SETTINGS:
        assert f"{setting.name}: {setting.doc}" in explained
    for name in ("topology", "num_workers", "communication_window"):
        suffix = params.accessor_name(name)
        assert callable(getattr(trainer, f"get{suffix}"))
    assert trainer.getTopology() == "ring" and trainer.getEpochs() == 3
    assert trainer.setNumWorkers(4).getNumWorkers() == 4
    assert trainer.hasDefault("batch_size") and trainer.getBatchSize() == 32
    # the rule's own parameters are Params of the trainer that uses it, and only there
    assert trainer.hasParam("topology") and not adag().hasParam("topology")
    slowmo = dk.trainers.SlowMo(mlp(), base="adpsgd", slow_momentum=0.5, topology="ring")
    rule = slowmo.make_algorithm(0.1)
    assert rule.slow_momentum == np.float32(0.5) and rule.base.topology == "ring"


def test_bad_keywords_and_values_fail_at_construction():
    with pytest.raises(TypeError, match="did you mean 'communication_window'"):
        adag(comunication_window=4)
    with pytest.raises(TypeError, match="'num_epoch' is now called 'epochs'"):
        adag(num_epoch=4)
    with pytest.raises(TypeError, match="Invalid param value.*batch_size"):
        adag(batch_size=0)
    with pytest.raises(TypeError, match="data_feed"):
        adag(data_feed="disk")
    with pytest.raises(ValueError, match="DPSGD.*topology"):
        dk.trainers.DPSGD(mlp(), topology="moebius")
    with pytest.raises(TypeError,
                       match=r"Trainer\(\) got .* 'stepscale'; did you mean 'step_scale'"):
        dk.trainers.Trainer(mlp(), algorithm=HalfStep, stepscale=0.3)
    with pytest.raises(ValueError, match="SingleTrainer has num_workers=1"):
        dk.trainers.SingleTrainer(mlp(), num_workers=3)


def test_a_users_optimizer_keeps_its_learning_rate():
    """worker_optimizer= first, then the optimizer the model was compiled with, then the
    trainer's own default (Adam; EAMSGD: SGD with Nesterov momentum)."""
    import keras

    from distkeras.driver.compile import CompileSettings

    def settings(trainer):
        return CompileSettings.of(trainer.settings(), trainer.default_optimizer)

    mine = settings(dk.trainers.AEASGD(mlp(), loss="mse",
                                       worker_optimizer=keras.optimizers.Adam(1e-3)))
    assert mine.optimizer["class_name"] == "Adam" and mine.learning_rate == pytest.approx(1e-3)
    compiled = mlp()
    compiled.compile(optimizer=keras.optimizers.RMSprop(3e-4), loss="mse", metrics=["mae"])
    theirs = settings(dk.trainers.ADAG(compiled))
    assert theirs.optimizer["class_name"] == "RMSprop"
    assert theirs.learning_rate == pytest.approx(3e-4) and theirs.loss == "mse"
    assert theirs.metrics == ["mae"]
    default = settings(dk.trainers.EAMSGD(mlp(), loss="mse"))
    assert default.optimizer["class_name"] == "SGD" and default.learning_rate == pytest.approx(0.05)
    assert default.optimizer["config"]["nesterov"] is True
    assert settings(dk.trainers.ADAG(mlp(), loss="mse")).optimizer["class_name"] == "Adam"


def test_copy_owns_its_model_callbacks_and_rule():
    import keras

    early = keras.callbacks.EarlyStopping(patience=3)
    trainer = dk.trainers.Trainer(mlp(), algorithm=HalfStep(step_scale=0.25), callbacks=[early],
                                  loss="categorical_crossentropy")
    twin = trainer.copy({trainer.learning_rate: 0.5})
    assert twin.getLearningRate() == 0.5 and trainer.getLearningRate() is None
    assert twin.keras_model is not trainer.keras_model
    for a, b in zip(twin.keras_model.get_weights(), trainer.keras_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert twin.getCallbacks()[0] is not early and twin.getCallbacks()[0].patience == 3
    assert twin.getAlgorithm() is not trainer.getAlgorithm()
    assert twin.make_algorithm(0.1).step_scale == 0.25
    twin.keras_model.layers[0].kernel.assign(np.zeros((8, 16), np.float32))
    assert np.abs(trainer.keras_model.layers[0].kernel.numpy()).sum() > 0


def test_an_algorithm_instance_takes_the_trainers_workers_in_what_derives_from_them():
    """AEASGD's α = 0.9/n is derived in __init__: an instance given as algorithm= is made
    again with the trainer's workers and rate, so α follows them."""
    from distkeras.algorithms import AEASGD

    trainer = dk.trainers.Trainer(mlp(), algorithm=AEASGD(), num_workers=4,
                                  loss="categorical_crossentropy")
    assert trainer.make_algorithm(0.1).alpha == pytest.approx(0.9 / 4)
    rho = dk.trainers.Trainer(mlp(), algorithm=AEASGD(rho=2.0), num_workers=4,
                              loss="categorical_crossentropy").make_algorithm(0.05)
    assert rho.alpha == pytest.approx(0.1) and rho.num_workers == 4


def test_a_trainer_subclass_naming_its_rule_the_old_way_trains_that_rule():
    with pytest.warns(DeprecationWarning, match="algorithm_class"):
        class Old(dk.trainers.Trainer):
            rule = algorithms.ADAG
    assert Old.algorithm_class is algorithms.ADAG
    assert Old(mlp(), loss="categorical_crossentropy").make_algorithm(0.1).name == "adag"


def test_a_registered_algorithm_is_a_trainer_a_study_axis_and_a_named_error():
    """One new class with @register is a first-class algorithm: dk.trainers has its trainer,
    the study knows its key; a subclass that forgets its own name is refused."""
    import numpy as np

    from distkeras.algorithms import registry
    from distkeras.algorithms.asynchronous import DOWNPOUR

    saved = dict(registry._CLASSES), dict(registry._TRAINERS)
    try:
        @registry.register
        class HalfCommit(DOWNPOUR):
            """θ̃ ← θ̃ + Δ/2."""
            name = "halfcommit"
            trainers = (registry.TrainerSpec("HalfCommit", "halfcommit", "DOWNPOUR, half"),)

            def server_commit(self, centre, payload, worker, version):
                centre += payload * np.float32(0.5)
                return centre

        trainer = dk.trainers.HalfCommit(mlp(), num_workers=2, loss="categorical_crossentropy")
        assert type(trainer.make_algorithm(0.1)) is HalfCommit
        assert registry.trainer_spec("HALFCOMMIT")[0] is HalfCommit
        assert "halfcommit" in registry.asynchronous_parameter_server()
        with pytest.raises(TypeError, match="inherits the name 'halfcommit'"):
            @registry.register
            class Nameless(HalfCommit):
                pass
    finally:
        registry._CLASSES.clear(), registry._CLASSES.update(saved[0])
        registry._TRAINERS.clear(), registry._TRAINERS.update(saved[1])
        dk.trainers.__dict__.pop("HalfCommit", None)


def test_the_workers_learning_rate_grows_with_their_number_as_each_rule_needs():
    """auto: η where commits add up, η·n where the model is the workers' mean, η·(n+1) where
    the centre variable is pulled along with them; or as the user says."""
    n = 4

    def factor(name, **kw):
        return getattr(dk.trainers, name)(mlp(), num_workers=n, loss="categorical_crossentropy",
                                          **kw).learning_rate_factor()

    assert factor("DOWNPOUR") == factor("Hogwild") == factor("DynSGD") == 1.0
    assert factor("ADAG") == factor("AveragingTrainer") == factor("ARSGD") == factor("DPSGD") == n
    assert factor("EASGD") == factor("AEASGD") == factor("EAMSGD") == n + 1
    assert factor("EASGD", learning_rate_scaling="linear") == n
    assert factor("ADAG", learning_rate_scaling="sqrt") == 2.0
    assert factor("ADAG", learning_rate_scaling="none") == 1.0
    with pytest.raises(TypeError, match="'quadratic' is not one of 'auto', 'none', 'linear'"):
        factor("ADAG", learning_rate_scaling="quadratic")


def test_fit_with_a_param_map_and_with_a_list_of_them(train):
    trainer = adag(epochs=1)
    fitted = trainer.fit(train, {trainer.epochs: 2, trainer.communication_window: 4})
    assert len(fitted.history["loss"]) == 2 and trainer.getEpochs() == 1
    models = trainer.fit(train, [{trainer.epochs: 1}, {trainer.epochs: 3}])
    assert [len(m.history["loss"]) for m in models] == [1, 3]


def test_validation_data_and_callbacks_as_params_inside_a_pipeline(spark, train):
    import keras
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import SQLTransformer

    seen = []
    log = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(dict(logs)))
    trainer = adag(epochs=2, validation_data=train, callbacks=[log])
    Pipeline(stages=[SQLTransformer(statement="SELECT * FROM __THIS__"), trainer]).fit(train)
    assert len(seen) == 2 and "val_accuracy" in seen[0]


# -- output columns and pyspark.ml evaluators --------------------------------------------------
def test_classifier_columns_work_with_pyspark_evaluators(spark, train):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import DoubleType

    fitted = adag(epochs=3).fit(train)
    scored = fitted.transform(train)
    types = {f.name: f.dataType for f in scored.schema.fields}
    assert isinstance(types["prediction"], DoubleType)
    assert isinstance(types["probability"], VectorUDT) and isinstance(types["rawPrediction"],
                                                                     VectorUDT)
    accuracy = MulticlassClassificationEvaluator(labelCol="label").setMetricName(
        "accuracy").evaluate(scored)
    assert accuracy > 0.7
    assert dk.evaluation.accuracy(scored) == pytest.approx(accuracy, abs=1e-12)
    fitted.setProbabilityCol("").setRawPredictionCol("")
    assert fitted.transform(train).columns == ["features", "label", "prediction"]
    with pytest.raises(ValueError, match="already exist"):
        fitted.transform(scored)


def test_binary_sigmoid_model_and_binary_evaluator(spark):
    import keras
    import pandas as pd
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    x, y = blobs(1500, classes=2, seed=8)
    df = spark.createDataFrame(pd.DataFrame({"features": list(x), "label": y}),
                               schema="features array<float>, label bigint")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    fitted = adag(model, loss="binary_crossentropy", metrics=[], epochs=4).fit(df)
    assert fitted.output["kind"] == "classifier"
    scored = fitted.transform(df)
    auc = BinaryClassificationEvaluator(labelCol="label").evaluate(scored)
    assert auc > 0.85
    row = scored.select("probability", "prediction").first()
    p = row["probability"].toArray()
    assert p.shape == (2,) and p.sum() == pytest.approx(1.0) and row["prediction"] == p.argmax()


def test_regression_writes_a_double_and_multi_output_an_array(spark):
    import keras
    import pandas as pd
    from pyspark.sql.types import ArrayType, DoubleType

    x, _ = blobs(600, seed=2)
    target = (x @ np.linspace(-1, 1, 8)).astype(np.float32)
    df = spark.createDataFrame(pd.DataFrame({"features": list(x), "label": target}),
                               schema="features array<float>, label float")
    one = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    fitted = adag(one, loss="mse", metrics=[], epochs=2).fit(df)
    scored = fitted.transform(df)
    assert isinstance(scored.schema["prediction"].dataType, DoubleType)
    assert "probability" not in scored.columns
    got = np.array([r[0] for r in scored.select("prediction").collect()])
    np.testing.assert_allclose(got, fitted.keras_model.predict(x, verbose=0)[:, 0], rtol=1e-5,
                               atol=1e-5)
    two = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    pairs = np.stack([target, -target], axis=1)
    df2 = spark.createDataFrame(pd.DataFrame({"features": list(x), "label": list(pairs)}),
                                schema="features array<float>, label array<float>")
    scored2 = adag(two, loss="mse", metrics=[], epochs=1).fit(df2).transform(df2)
    assert isinstance(scored2.schema["prediction"].dataType, ArrayType)


# -- model selection ---------------------------------------------------------------------------
def test_cross_validator_and_train_validation_split_pick_the_learning_rate(spark, train):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit

    trainer = adag(epochs=2)
    grid = (ParamGridBuilder().addGrid(trainer.learning_rate, [1e-7, 0.03])
            .addGrid(trainer.communication_window, [6]).build())
    evaluator = MulticlassClassificationEvaluator(labelCol="label", metricName="accuracy")
    cv = CrossValidator(estimator=trainer, estimatorParamMaps=grid, evaluator=evaluator,
                        numFolds=2, seed=7).fit(train)
    assert len(cv.avgMetrics) == 2 and cv.avgMetrics[1] > cv.avgMetrics[0] + 0.2
    assert evaluator.evaluate(cv.transform(train)) > 0.7
    tvs = TrainValidationSplit(estimator=trainer, estimatorParamMaps=ParamGridBuilder().addGrid(
        trainer.num_workers, [1, 2]).build(), evaluator=evaluator, trainRatio=0.75).fit(train)
    assert len(tvs.validationMetrics) == 2 and min(tvs.validationMetrics) > 0.6


# -- persistence -------------------------------------------------------------------------------
def test_trainer_save_load_with_a_user_rule_then_train_end_to_end(spark, train, tmp_path):
    trainer = dk.trainers.Trainer(mlp(), algorithm=HalfStep, step_scale=0.75,
                                  loss="categorical_crossentropy", num_workers=2, epochs=3,
                                  learning_rate=0.03, communication_window=4, verbose=False)
    trainer.save(f"file://{tmp_path}/trainer")
    again = dk.trainers.Trainer.load(f"file://{tmp_path}/trainer")
    assert again.uid == trainer.uid and again.getEpochs() == 3
    assert again.getAlgorithm() is HalfStep and again.getAlgorithmParams() == {"step_scale": 0.75}
    rule = again.make_algorithm(0.03)
    assert isinstance(rule, HalfStep) and rule.step_scale == 0.75
    fitted = again.fit(train)
    assert fitted.history.ps_stats["updates"] > 0
    assert dk.evaluation.accuracy(fitted.transform(train)) > 0.7


def test_pipeline_and_pipeline_model_round_trip(spark, tmp_path):
    import keras
    import pandas as pd
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import VectorAssembler

    x, y = blobs(1200, seed=5)
    df = spark.createDataFrame(pd.DataFrame({f"f{i}": x[:, i] for i in range(8)} | {"label": y}))
    assembler = VectorAssembler(inputCols=[f"f{i}" for i in range(8)], outputCol="vec")
    optimizer = keras.optimizers.Adam(learning_rate=0.02)
    pipeline = Pipeline(stages=[assembler, adag(features_col="vec", epochs=4,
                                                worker_optimizer=optimizer,
                                                learning_rate=None)])
    pipeline.save(str(tmp_path / "pipeline"))
    loaded = Pipeline.load(str(tmp_path / "pipeline"))
    stage = loaded.getStages()[1]
    assert isinstance(stage, dk.trainers.ADAG) and stage.getFeaturesCol() == "vec"
    assert stage.getWorkerOptimizer()["config"]["learning_rate"] == pytest.approx(0.02)
    model = loaded.fit(df)
    model.save(f"file://{tmp_path}/model")
    again = PipelineModel.load(f"file://{tmp_path}/model")
    a = model.transform(df).select("probability", "prediction").collect()
    b = again.transform(df).select("probability", "prediction").collect()
    np.testing.assert_allclose([r[0].toArray() for r in a], [r[0].toArray() for r in b],
                               rtol=1e-6)
    assert [r[1] for r in a] == [r[1] for r in b]
    assert (np.array([r[1] for r in b]) == y).mean() > 0.7
    fitted = again.stages[1]
    assert fitted.history["loss"] == model.stages[1].history["loss"]
    reread = dk.load_model(f"{tmp_path}/model/stages/1_{fitted.uid}")
    np.testing.assert_allclose(reread.predict([x[:20]]), fitted.predict([x[:20]]), rtol=1e-6)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fitted.save(f"{tmp_path}/model/stages/1_{fitted.uid}")


# -- Keras callbacks on the driver -------------------------------------------------------------
def test_reduce_lr_on_plateau_changes_the_workers_learning_rate(train):
    import keras

    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0,
                                                min_delta=10.0, min_lr=1e-6)
    trainer = dk.trainers.AveragingTrainer(mlp(), loss="categorical_crossentropy", epochs=3,
                                           communication_window=5, learning_rate=0.02,
                                           verbose=False)
    fitted = trainer.fit(train, callbacks=[plateau])
    # the rate the workers' optimizers trained each epoch with (0.02 scaled linearly for the 2
    # workers of an averaging rule): the first epoch sets the best loss, every later one misses
    # it by min_delta and the driver halves the rate for the next
    assert fitted.history["learning_rate"] == pytest.approx([0.04, 0.04, 0.02])
    # synchronous workers wait for the driver's verdict on their last epoch: they hold the
    # reduction made after it too
    assert [w["learning_rate"] for w in fitted.history.workers] == pytest.approx([0.01] * 2)


def test_tensorboard_and_csv_logger_get_metrics_and_server_statistics(train, tmp_path):
    import keras
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = keras.callbacks.TensorBoard(log_dir=str(tmp_path / "tb"))
    table = keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))
    fitted = adag(epochs=2).fit(train, validation_data=train, callbacks=[board, table])
    for key in ("updates", "commits", "mean_staleness", "exchange_seconds",
                "samples_per_second", "learning_rate"):
        assert len(fitted.history[key]) == 2, key
    assert fitted.history["commits"][0] > 0 and fitted.history["samples_per_second"][0] > 0
    assert fitted.history["exchange_seconds"][0] > 0
    tags = {}
    for split in ("train", "validation"):
        events = EventAccumulator(str(tmp_path / "tb" / split))
        events.Reload()
        tags[split] = set(events.Tags()["scalars"]) | set(events.Tags().get("tensors", []))
    assert {"epoch_loss", "epoch_updates", "epoch_mean_staleness"} <= tags["train"]
    assert "epoch_loss" in tags["validation"] and "epoch_accuracy" in tags["validation"]
    with open(tmp_path / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and float(rows[1]["updates"]) > float(rows[0]["updates"])
    assert {"val_loss", "samples_per_second", "exchange_seconds"} <= set(rows[0])


def test_decentralised_trainer_params_round_trip_and_old_model_format_loads(tmp_path):
    import json
    import shutil

    slowmo = dk.trainers.SlowMo(mlp(), base="adpsgd", slow_momentum=0.5, average=False,
                                topology="ring", num_workers=4, epochs=3)
    slowmo.save(str(tmp_path / "slowmo"))
    again = dk.trainers.SlowMo.load(str(tmp_path / "slowmo"))
    assert (again.getBase(), again.getSlowMomentum(), again.getAverage(), again.getTopology(),
            again.getNumWorkers(), again.getEpochs()) == ("adpsgd", 0.5, False, "ring", 4, 3)
    rule = again.make_algorithm(0.01)
    assert rule.base.topology == "ring" and not rule.average
    with pytest.raises(TypeError, match="is a distkeras.trainers.SlowMo, not a ADAG"):
        dk.trainers.ADAG.load(str(tmp_path / "slowmo"))
    # a model saved before the pyspark.ml metadata (format 1: distkeras.json and .keras only)
    from distkeras.feed import feed_spec_for

    model = mlp()
    fitted = dk.KerasModel(model, feed=feed_spec_for(model, "features", "label",
                                                     "categorical_crossentropy"))
    fitted.save(str(tmp_path / "m"))
    shutil.rmtree(tmp_path / "m" / "metadata")
    info = json.loads((tmp_path / "m" / "distkeras.json").read_text())
    info.update(format=1, prediction_col="scores")
    info.pop("output")
    (tmp_path / "m" / "distkeras.json").write_text(json.dumps(info))
    old = dk.load_model(str(tmp_path / "m"))
    assert old.getPredictionCol() == "scores" and old.output["kind"] == "array"
    x, _ = blobs(10, seed=1)
    np.testing.assert_allclose(old.predict([x]), model.predict(x, verbose=0), rtol=1e-6)


def test_transform_reads_its_model_back_once_per_python_worker(spark, tmp_path):
    """Every partition of a transform, and the next transform of the same model, find the
    model their Python worker read back (a layer counts its constructions); a model whose
    weights changed is read back again, and predicts with them."""
    import os

    import keras

    from distkeras.feed import feed_spec_for
    from distkeras.model import describe_output

    @keras.saving.register_keras_serializable(package="tests_transform")
    class Counted(keras.layers.Dense):
        def __init__(self, units, log=None, **kwargs):
            super().__init__(units, **kwargs)
            self.log = log
            with open(log, "a") as fh:
                fh.write(f"{os.getpid()}\n")

        def get_config(self):
            return {**super().get_config(), "log": self.log}

    log = str(tmp_path / "constructed")
    model = keras.Sequential([keras.Input((8,)), Counted(3, log=log, activation="softmax")])
    df = blobs_df(spark, 600, partitions=6).cache()
    loss = "categorical_crossentropy"
    fitted = dk.KerasModel(model, feed=feed_spec_for(model, "features", "label", loss),
                           output=describe_output(model, loss))

    def reads_in_workers():
        with open(log) as fh:
            pids = [int(line) for line in fh]
        return [p for p in pids if p != os.getpid()]

    first = fitted.transform(df).select("prediction").collect()
    fitted.transform(df).select("prediction").collect()
    workers = reads_in_workers()     # once per Python worker (as many as Spark starts), where
    assert len(workers) == len(set(workers)) < 12, workers    # every task read it: 2 x 6
    model.layers[0].kernel.assign(-model.layers[0].kernel)
    again = fitted.transform(df).select("prediction").collect()
    assert len(reads_in_workers()) > len(workers)                # new weights: read back
    expected = model.predict(np.stack([r.features for r in df.collect()]), verbose=0).argmax(1)
    assert [r.prediction for r in again] == expected.tolist()
    assert [r.prediction for r in first] != [r.prediction for r in again]
    df.unpersist()
