"""Hyperparameter search on a real local Spark: grid coverage, seeded random search, successive
halving, failure isolation, k-fold splits, the best trial, space validation and the tune job.
Trials are tiny (an 8-16 unit MLP, 1-2 epochs, 300 rows)."""
from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from distkeras import tuning
from distkeras.tuning import (Choice, GridSearch, IntUniform, LogUniform, RandomSearch,
                              SpaceError, SuccessiveHalving, Uniform)
from distkeras.tuning.halving import schedule, top
from tests.data import blobs_df

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = dict(features_col="features", label_col="label", loss="categorical_crossentropy",
              epochs=1, batch_size=32, verbose=False)


def build(params):
    """MLP on the 8-d blobs; ``mode`` = "raise" / "nan" makes a failing trial."""
    import keras

    mode = params.get("mode", "ok")
    if mode == "raise":
        raise ValueError("boom from build_fn")
    layers = [keras.Input((8,)), keras.layers.Dense(params.get("units", 8), activation="relu")]
    if mode == "nan":
        layers.append(keras.layers.Lambda(lambda t: t * float("nan")))
    layers.append(keras.layers.Dense(3, activation="softmax"))
    return keras.Sequential(layers)


@pytest.fixture(scope="module")
def df(spark):
    return blobs_df(spark, n=300, seed=3, partitions=2).cache()


# --- spaces (driver only) ---------------------------------------------------------------------

def test_grid_covers_every_combination_exactly_once():
    space = {"units": [4, 8, 16], "learning_rate": [1e-3, 1e-2], "batch_size": Choice([16, 32]),
             "optimizer": "adam", "hidden": [(8,), (8, 4)]}
    trials = tuning.grid(space)
    assert len(trials) == 3 * 2 * 2 * 2
    keys = [(t["units"], t["learning_rate"], t["batch_size"], t["hidden"]) for t in trials]
    assert sorted(keys) == sorted(itertools.product([4, 8, 16], [1e-3, 1e-2], [16, 32],
                                                    [(8,), (8, 4)]))
    assert all(t["optimizer"] == "adam" for t in trials)
    assert GridSearch(build, space, **COMMON).candidates() == trials


def test_random_search_is_reproducible_by_seed():
    space = {"units": IntUniform(4, 64), "learning_rate": LogUniform(1e-4, 1e-1),
             "dropout": Uniform(0.0, 0.5), "batch_size": [16, 32, 64]}
    a = RandomSearch(build, space, n_trials=20, seed=7, **COMMON).candidates()
    b = RandomSearch(build, space, n_trials=20, seed=7, **COMMON).candidates()
    c = RandomSearch(build, space, n_trials=20, seed=8, **COMMON).candidates()
    assert a == b
    assert a != c
    for t in a:
        assert 4 <= t["units"] <= 64 and isinstance(t["units"], int)
        assert 1e-4 <= t["learning_rate"] <= 1e-1
        assert 0.0 <= t["dropout"] <= 0.5
        assert t["batch_size"] in (16, 32, 64)
    assert len({t["units"] for t in a}) > 5        # really sampled, not constant


def test_kfold_splits_are_disjoint_cover_and_balanced():
    n, k = 103, 5
    folds = tuning.kfold(n, k, seed=1)
    vals = [v for _, v in folds]
    assert sorted(np.concatenate(vals).tolist()) == list(range(n))          # cover, disjoint
    assert max(len(v) for v in vals) - min(len(v) for v in vals) <= 1       # balanced
    for train, val in folds:
        assert not set(train) & set(val) and len(train) + len(val) == n
    assert all((a[1] == b[1]).all() for a, b in zip(folds, tuning.kfold(n, k, seed=1)))
    assert not all((a[1] == b[1]).all() for a, b in zip(folds, tuning.kfold(n, k, seed=2)))
    train, val = tuning.holdout(n, 0.2, seed=1)
    assert len(val) == 21 and not set(train) & set(val) and len(train) + len(val) == n


def test_halving_schedule_and_promotion_rule():
    assert schedule(9, 3, 1, None) == [(9, 1), (3, 3), (1, 9)]
    assert schedule(8, 2, 1, 4) == [(8, 1), (4, 2), (2, 4)]
    results = [{"trial": i, "status": "ok", "score": s} for i, s in enumerate([.5, .9, .7, .9])]
    results.append({"trial": 4, "status": "failed", "score": float("nan")})
    assert top(results, 2, "max") == [1, 3]
    assert top(results, 2, "min") == [0, 2]
    assert top(results, 9, "max") == [1, 3, 2, 0]        # failed trials are never promoted


@pytest.mark.parametrize("space, match", [
    ({"units": []}, "empty list"),
    ({"units": {"type": "gaussian", "mu": 1}}, "unknown distribution"),
    ({"units": type("Beta", (), {"rvs": lambda self: 1})()}, "unknown distribution"),
    ({"learning_rate": Uniform(0.1, 0.01)}, "low=0.1 > high=0.01"),
    ({"units": IntUniform(10, 2)}, "low=10 > high=2"),
    ({"learning_rate": LogUniform(0.0, 1.0)}, "low > 0"),
    ({"units": Choice([])}, "no options"),
    ({"batch_size": [32, 0]}, "positive integer"),
    ({"batch_size": -8}, "positive integer"),
    ({"batch_size": [1.5]}, "positive integer"),
    ({"epochs": [0]}, "positive integer"),
    ({"learning_rate": ["fast"]}, "positive number"),
    ({"optimizer": [3]}, "optimizer"),
    ({}, "non-empty dict"),
])
def test_invalid_spaces_are_rejected_before_launch(spark, df, space, match):
    calls = []

    def counting_build(params):
        calls.append(params)
        return build(params)

    from distkeras.driver.keep_warm import KEEP_WARM

    KEEP_WARM.stop()      # the keep-alive of earlier fits' Python workers is not the search's
    jobs_before = len(spark.sparkContext.statusTracker().getActiveJobsIds())
    with pytest.raises(SpaceError, match=match):
        GridSearch(counting_build, space, **COMMON).fit(df)
    assert calls == []     # nothing built, nothing shipped
    assert len(spark.sparkContext.statusTracker().getActiveJobsIds()) == jobs_before


def test_invalid_search_settings_are_rejected(df):
    with pytest.raises(SpaceError, match="a grid needs a list"):
        GridSearch(build, {"units": IntUniform(2, 8)}, **COMMON).fit(df)
    with pytest.raises(SpaceError, match="positive integer"):
        GridSearch(build, {"units": [4]}, **{**COMMON, "batch_size": 0})
    with pytest.raises(SpaceError, match="folds"):
        GridSearch(build, {"units": [4]}, folds=1, **COMMON)
    with pytest.raises(SpaceError, match="remove 'epochs'"):
        SuccessiveHalving(build, {"units": [4], "epochs": [1, 2]}, **COMMON)
    with pytest.raises(SpaceError, match="eta"):
        SuccessiveHalving(build, {"units": [4]}, eta=1, **COMMON)


# --- searches on Spark ------------------------------------------------------------------------

def test_grid_search_runs_every_trial_and_best_is_best(spark, df):
    space = {"units": [4, 16], "learning_rate": [1e-3, 3e-2]}
    result = GridSearch(build, space, **COMMON).fit(df)
    table = result.table
    assert len(table) == 4 and (table["status"] == "ok").all()
    assert sorted(zip(table["units"], table["learning_rate"])) == sorted(
        itertools.product([4, 16], [1e-3, 3e-2]))
    assert list(table["score"]) == sorted(table["score"], reverse=True)
    assert (table["score"] == table["val_accuracy"]).all()
    assert result.best_score == table["val_accuracy"].max()
    best_row = table.loc[table["val_accuracy"].idxmax()]
    assert result.best_params == {"units": best_row["units"],
                                  "learning_rate": best_row["learning_rate"]}
    assert (table["epochs"] == 1).all() and (table["seconds"] > 0).all()
    sdf = result.to_spark(spark)
    assert sdf.count() == 4 and {"units", "val_accuracy", "status", "error"} <= set(sdf.columns)
    assert "| trial |" in result.to_markdown()


def test_random_search_same_seed_same_trials_and_scores(df):
    space = {"units": IntUniform(4, 16), "learning_rate": LogUniform(1e-3, 1e-1)}
    a = RandomSearch(build, space, n_trials=2, seed=11, **COMMON).fit(df)
    b = RandomSearch(build, space, n_trials=2, seed=11, **COMMON).fit(df)
    pa_, pb = (sorted(r.trials, key=lambda t: t["trial"]) for r in (a, b))
    assert [t["params"] for t in pa_] == [t["params"] for t in pb]
    for ta, tb in zip(pa_, pb):
        assert ta["metrics"]["val_loss"] == pytest.approx(tb["metrics"]["val_loss"], rel=1e-5)


def test_failing_trials_are_recorded_and_do_not_stop_the_search(df):
    result = GridSearch(build, {"mode": ["ok", "raise", "nan", "ok"]}, **COMMON).fit(df)
    by_mode = {}
    for t in result.trials:
        by_mode.setdefault(t["params"]["mode"], []).append(t)
    assert all(t["status"] == "ok" and not t["error"] for t in by_mode["ok"])
    (raised,), (nan,) = by_mode["raise"], by_mode["nan"]
    assert raised["status"] == "failed" and "ValueError: boom from build_fn" in raised["error"]
    assert nan["status"] == "failed" and "loss became nan" in nan["error"]
    table = result.table
    assert list(table["status"]) == ["ok", "ok", "failed", "failed"]   # failures sort last
    assert math.isnan(table["score"].iloc[-1])
    assert result.best_trial["params"]["mode"] == "ok"


def test_kfold_search_averages_over_folds(df):
    result = GridSearch(build, {"units": [8]}, folds=3, **COMMON).fit(df)
    (trial,) = result.trials
    assert trial["status"] == "ok", trial["error"]
    assert "val_accuracy_std" in trial["metrics"]
    assert 0.0 <= trial["metrics"]["val_accuracy"] <= 1.0


def test_successive_halving_promotes_the_top_trials(df):
    space = {"units": [2, 4, 16], "learning_rate": [1e-3, 5e-2]}
    sh = SuccessiveHalving(build, space, eta=2, min_epochs=1, max_epochs=2, **COMMON)
    result = sh.fit(df)
    assert [(r["epochs"], len(r["trials"])) for r in result.rungs] == [(1, 6), (2, 3)]
    rung0, rung1 = result.rungs
    scores = rung0["scores"]
    expected = sorted(scores, key=lambda t: (-scores[t], t))[:3]
    assert rung1["trials"] == expected == rung0["promoted"]
    table = result.table
    assert len(table) == 6
    assert sorted(table.loc[table["rung"] == 1, "trial"]) == sorted(expected)
    assert (table.loc[table["rung"] == 1, "epochs"] == 2).all()
    assert (table.loc[table["rung"] == 0, "epochs"] == 1).all()
    assert result.best_trial["trial"] in expected
    assert result.best_score == max(rung1["scores"].values())


def test_refit_best_configuration_with_a_trainer(df):
    result = GridSearch(build, {"units": [4, 12]}, **COMMON).fit(df)
    fitted = result.refit(df, trainer="SingleTrainer", verbose=False)
    dense = fitted.keras_model.layers[0]
    assert dense.units == result.best_params["units"]
    assert len(fitted.history["loss"]) == 1
    assert fitted.predict([np.zeros((2, 8), np.float32)]).shape == (2, 3)


# --- the spark-submit job ---------------------------------------------------------------------

def _env():
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return env


def test_tune_job_help_documents_every_option():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "tune.py"), "--help"],
                         capture_output=True, text=True, env=_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    sys.path.insert(0, os.path.join(ROOT, "jobs"))
    try:
        import tune
    finally:
        sys.path.pop(0)
    for action in tune.parser()._actions:
        for flag in action.option_strings:
            assert flag in out.stdout
        assert action.help and action.help.strip()


def test_tune_job_end_to_end(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    x = (rng.normal(size=(240, 14)) + y[:, None]).astype(np.float32)
    table = pa.table({"hlf": pa.array(list(x), type=pa.list_(pa.float32())),
                      "label": pa.array(y, type=pa.int32())})
    pq.write_table(table, tmp_path / "hlf.parquet")
    out_dir = tmp_path / "out"
    cmd = [sys.executable, os.path.join(ROOT, "jobs", "tune.py"), "--input",
           str(tmp_path / "hlf.parquet"), "--output", str(out_dir), "--master", "local[2]",
           "--hidden", "8", "--hidden", "6,4", "--learning-rate", "0.01", "--batch-size", "32",
           "--epochs", "1", "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    import pandas as pd

    results = pd.read_csv(out_dir / "results.csv")
    assert len(results) == 2 and (results["status"] == "ok").all()
    assert sorted(results["hidden"]) == ["[6, 4]", "[8]"]
    assert results["val_accuracy"].iloc[0] == results["val_accuracy"].max()
    assert (out_dir / "results.md").read_text().count("\n| ") >= 2
    best = json.loads((out_dir / "best.json").read_text())
    assert best["ok"] == 2 and best["best_score"] == results["val_accuracy"].max()
