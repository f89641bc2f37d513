"""Searches that learn and prune, on a real local Spark: ASHA / Hyperband rungs (the rule alone,
then trials really stopped mid-training), OptunaSearch with a pruner, a failed trial, a seeded
TPE sampler, and a study resumed from a real sqlite storage. Trials are tiny (an 8-unit MLP,
300 rows); a learning rate of 1e-7 is a configuration that cannot learn."""
from __future__ import annotations

import math

import optuna
import pytest

from distkeras import tuning
from distkeras.tuning import ASHA, Hyperband, LogUniform, OptunaSearch, SpaceError
from distkeras.tuning.asha import promotable, rung_levels
from tests.data import blobs_df
from tests.test_tuning import build

COMMON = dict(features_col="features", label_col="label", loss="categorical_crossentropy",
              batch_size=32, verbose=False)
HOPELESS, GOOD = 1e-7, 0.05     # learning rates: stays at chance, learns in one epoch


@pytest.fixture(scope="module")
def df(spark):
    return blobs_df(spark, n=300, seed=3, partitions=2).cache()


# --- the rules, on the driver -----------------------------------------------------------------

def test_rung_levels_and_the_promotion_rule():
    assert rung_levels(1, 3, 9) == [1, 3, 9]
    assert rung_levels(1, 2, 5) == [1, 2, 4, 5]
    assert rung_levels(2, 3, 2) == [2]
    # the first score at a rung goes on; later ones only within the best 1/eta so far
    assert promotable(0.5, [0.5], 3, "max")
    assert not promotable(0.4, [0.5, 0.4], 3, "max")
    assert promotable(0.9, [0.5, 0.4, 0.9], 3, "max")
    assert not promotable(0.5, [0.5, 0.4, 0.9], 3, "max")
    assert promotable(0.2, [0.5, 0.2, 0.3], 3, "min")
    assert not promotable(math.nan, [math.nan], 3, "max")


def test_asha_decides_only_at_its_brackets_rungs():
    hb = Hyperband(build, {"learning_rate": [1e-3]}, n_trials=4, eta=3, min_epochs=1,
                   max_epochs=9, metric="val_accuracy", **COMMON)
    assert hb.brackets == 3 and hb.levels == [1, 3, 9]
    logs = lambda v: {"val_accuracy": v}  # noqa: E731
    assert hb.decide(0, 0, logs(0.9)) is False            # bracket 0, rung at 1 epoch: first
    assert hb.decide(3, 0, logs(0.1)) is True             # bracket 0, worse than trial 0
    assert hb.decide(1, 0, logs(0.0)) is False            # bracket 1: no rung at 1 epoch
    assert hb.decide(1, 2, logs(0.5)) is False            # ... its first rung is at 3
    assert hb.decide(2, 2, logs(0.0)) is False            # bracket 2: never stopped
    assert hb.decide(0, 8, logs(0.0)) is False            # the last epoch is the end, not a rung
    with pytest.raises(SpaceError, match="epochs"):
        ASHA(build, {"epochs": [1, 2]}, **COMMON)
    with pytest.raises(SpaceError, match="brackets"):
        Hyperband(build, {"units": [8]}, min_epochs=1, max_epochs=3, brackets=5, **COMMON)


# --- on Spark ---------------------------------------------------------------------------------

def test_asha_stops_hopeless_trials_at_a_rung(df):
    space = {"learning_rate": [GOOD, HOPELESS, HOPELESS, GOOD, HOPELESS, HOPELESS],
             "units": 8}
    asha = ASHA(build, space, n_trials=None, eta=2, min_epochs=1, max_epochs=4, seed=0, **COMMON)
    result = asha.fit(df)
    table = result.table
    assert len(table) == 6 and set(table["status"]) <= {"ok", "pruned"}
    pruned = table[table["status"] == "pruned"]
    # the table shows it: pruned trials trained fewer epochs, stopping at a rung
    assert len(pruned) >= 2, table
    assert all(e in (1, 2) for e in pruned["epochs"]), table
    assert all(table.loc[table["status"] == "ok", "epochs"] == 4), table
    # the first trials at a rung always go on (nothing to compare with yet): the later
    # hopeless ones are stopped at the first rung
    assert (pruned["learning_rate"] == HOPELESS).sum() >= 2, table
    assert result.best_params["learning_rate"] == GOOD
    assert table.loc[0, "status"] == "ok" and table.loc[0, "rung"] == 2
    rung0 = result.rungs[0]
    assert rung0["epochs"] == 1 and sorted(rung0["trials"]) == list(range(6))
    longer = set(table.loc[table["epochs"] > 1, "trial"])
    assert set(rung0["promoted"]) == longer, (rung0, table)


def test_optuna_search_prunes_records_failures_and_keeps_the_study(df):
    space = {"learning_rate": [GOOD, HOPELESS], "mode": ["ok", "ok", "raise"], "units": 8}
    search = OptunaSearch(build, space, n_trials=6, epochs=3, seed=1,
                          sampler=optuna.samplers.RandomSampler(seed=1),
                          pruner=optuna.pruners.ThresholdPruner(lower=0.6), **COMMON)
    result = search.fit(df)
    table = result.table.set_index("trial")
    assert len(table) == 6
    states = {t.number: t.state.name for t in result.study.trials}
    for number, row in table.iterrows():
        if row["mode"] == "raise":      # recorded, and the search went on
            assert row["status"] == "failed" and "boom from build_fn" in row["error"]
            assert states[number] == "FAIL"
        elif row["learning_rate"] == HOPELESS:   # below the threshold after its first epoch
            assert row["status"] == "pruned" and row["epochs"] == 1, table
            assert states[number] == "PRUNED"
            assert list(result.study.trials[number].intermediate_values) == [0]
        else:
            assert row["status"] == "ok" and row["epochs"] == 3, table
            assert states[number] == "COMPLETE"
            assert row["score"] == pytest.approx(result.study.trials[number].value)
    assert "ok" in set(table["status"])
    assert result.best_score == pytest.approx(result.study.best_value)


def test_seeded_tpe_is_reproducible(df):
    space = {"learning_rate": LogUniform(1e-3, 1e-1), "units": tuning.IntUniform(4, 16)}

    def run():
        return OptunaSearch(build, space, n_trials=4, epochs=1, max_concurrent=1, seed=7,
                            sampler=optuna.samplers.TPESampler(seed=7, n_startup_trials=2),
                            pruner=optuna.pruners.NopPruner(), **COMMON).fit(df)

    a, b = run(), run()
    params = lambda r: [t["params"] for t in sorted(r.trials, key=lambda t: t["trial"])]  # noqa: E731
    assert params(a) == params(b)
    assert len({p["learning_rate"] for p in params(a)}) == 4


def test_stored_study_resumes_without_rerunning_finished_trials(df, tmp_path):
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    space = {"learning_rate": LogUniform(1e-3, 1e-1), "hidden": [(8,), (8, 4)]}   # hidden: unused

    def search(n):
        return OptunaSearch(build, space, n_trials=n, epochs=1, storage=storage,
                            study_name="resume", seed=3, **COMMON)

    first = search(3).fit(df)
    done = {t["trial"]: (t["params"], t["score"]) for t in first.trials}
    assert sorted(done) == [0, 1, 2] and all(t["status"] == "ok" for t in first.trials)
    # a driver that died mid-trial leaves a RUNNING trial behind
    study = optuna.load_study(study_name="resume", storage=storage)
    orphan = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-3, 1e-1,
                                                                                 log=True),
                        "hidden": optuna.distributions.CategoricalDistribution([0, 1])})
    second = search(5).fit(df)
    rows = {t["trial"]: t for t in second.trials}
    for number, (params, score) in done.items():     # kept, not rerun
        assert rows[number]["params"] == params and rows[number]["score"] == score
    assert orphan.number not in rows                 # failed as interrupted, queued again
    rerun = [t for t in second.trials if t["params"]["learning_rate"] == orphan.params["learning_rate"]]
    assert len(rerun) == 1 and rerun[0]["status"] == "ok"
    assert len(rows) == 5 and all(t["status"] == "ok" for t in second.trials)
    stored = optuna.load_study(study_name="resume", storage=storage)
    assert stored.trials[orphan.number].state.name == "FAIL"
    assert sum(t.state.name == "COMPLETE" for t in stored.trials) == 5
    # the table's parameters decode stored indices back to the space's options
    assert {t["params"]["hidden"] for t in second.trials} <= {(8,), (8, 4)}


def test_tune_job_runs_optuna_into_a_storage_optuna_reads(tmp_path):
    import json
    import os
    import subprocess
    import sys

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.test_tuning import ROOT, _env

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    x = (rng.normal(size=(240, 14)) + y[:, None]).astype(np.float32)
    pq.write_table(pa.table({"hlf": pa.array(list(x), type=pa.list_(pa.float32())),
                             "label": pa.array(y, type=pa.int32())}), tmp_path / "hlf.parquet")
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "jobs", "tune.py"), "--input",
         str(tmp_path / "hlf.parquet"), "--output", str(tmp_path / "out"), "--master", "local[2]",
         "--search", "optuna", "--trials", "4", "--epochs", "2", "--hidden", "8",
         "--hidden", "6,4", "--lr-range", "1e-3", "3e-2", "--pruner", "hyperband",
         "--storage", storage, "--study-name", "job", "--quiet"],
        capture_output=True, text=True, env=_env(), timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(results) == 4 and set(results["status"]) <= {"ok", "pruned"}
    best = json.loads((tmp_path / "out" / "best.json").read_text())
    study = optuna.load_study(study_name="job", storage=storage)
    assert len(study.trials) == 4
    assert best["best_score"] == pytest.approx(study.best_value)
    assert best["pruned"] == sum(t.state.name == "PRUNED" for t in study.trials)
