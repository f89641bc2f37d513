"""MLflow tracking against a real local tracking store (sqlite in a temp dir), read back through
MlflowClient: params, per-epoch metrics with the parameter-server statistics, the model with its
signature through mlflow.pyfunc, autolog without a second run, an active run, a failed fit."""
from __future__ import annotations

import mlflow
import numpy as np
import pytest

import distkeras as dk
from tests.data import blobs, blobs_df, mlp


@pytest.fixture(scope="module")
def train(spark):
    return blobs_df(spark, 1200, seed=3).cache()


@pytest.fixture()
def store(tmp_path):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = mlflow.MlflowClient()
    # artifacts in the temp dir too (a sqlite store's default is ./mlruns)
    client.experiment = lambda name: mlflow.get_experiment(client.create_experiment(
        name, artifact_location=(tmp_path / "artifacts" / name).as_uri()))
    yield client
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def adag(**kw):
    kw = {"loss": "categorical_crossentropy", "num_workers": 2, "batch_size": 32, "epochs": 2,
          "learning_rate": 0.03, "communication_window": 6, "verbose": False, **kw}
    return dk.trainers.ADAG(mlp(), **kw)


def test_a_fit_is_one_run_with_params_metrics_and_a_loadable_model(store, train):
    store.experiment("distkeras-tests")
    fitted = adag(mlflow="distkeras-tests").fit(train, validation_data=train)
    run = store.get_run(fitted.history.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "ADAG x2"
    params = run.data.params
    assert params["algorithm"] == "adag" and params["num_workers"] == "2"
    assert params["communication_window"] == "6" and params["batch_size"] == "32"
    assert float(params["learning_rate"]) == pytest.approx(0.03) and params["epochs"] == "2"
    for key in ("loss", "val_accuracy", "updates", "mean_staleness", "samples_per_second"):
        steps = [m.step for m in store.get_metric_history(run.info.run_id, key)]
        assert steps == [0, 1], key
    losses = [m.value for m in store.get_metric_history(run.info.run_id, "val_loss")]
    assert losses == pytest.approx(fitted.history["val_loss"])
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert model.metadata.get_input_schema() is not None
    x, _ = blobs(20, seed=4)
    np.testing.assert_allclose(np.asarray(model.predict(x)), fitted.predict([x]), rtol=1e-5)
    experiment = store.get_experiment_by_name("distkeras-tests")
    assert len(store.search_runs([experiment.experiment_id])) == 1


def test_autolog_gives_no_second_run_and_an_active_run_is_used(store, train):
    mlflow.keras.autolog(log_models=False)
    try:
        experiment = mlflow.set_experiment(experiment_id=store.experiment("autolog").experiment_id)
        with mlflow.start_run() as outer:
            fitted = adag(epochs=1).fit(train, callbacks=[
                dk.tracking.MLflowLogger(log_model=False)])
            assert mlflow.active_run().info.run_id == outer.info.run_id
        assert fitted.history.mlflow_run_id == outer.info.run_id
        runs = store.search_runs([experiment.experiment_id])
        assert [r.info.run_id for r in runs] == [outer.info.run_id]
        assert runs[0].data.params["algorithm"] == "adag"
    finally:
        mlflow.keras.autolog(disable=True)


def test_a_failed_fit_ends_its_run_as_failed(store, train):
    import keras

    def explode(epoch, logs):
        raise RuntimeError("callback exploded")

    experiment = mlflow.set_experiment(experiment_id=store.experiment("failing").experiment_id)
    with pytest.raises(RuntimeError, match="callback exploded"):
        adag(mlflow=True).fit(train, callbacks=[
            keras.callbacks.LambdaCallback(on_epoch_end=explode)])
    (run,) = store.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED" and "callback exploded" in run.data.tags["error"]
