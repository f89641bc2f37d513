"""The pipeline jobs end to end on a real local Spark, in subprocesses as a user runs them:
``jobs/pipeline.py`` on a small generated Delphes-like sample (real ROOT files, uproot ingest,
topology features, ADAG + Keras + SingleTrainer, evaluation), then the standalone jobs
``features.py`` → ``train.py`` → ``evaluate.py`` on its events Parquet, and ``--help`` of each.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = ("features", "train", "evaluate", "pipeline", "ingest")
RUNS = ("ADAG x2", "Keras model.fit (driver)", "SingleTrainer x1")
EVENTS = 1000      # per class
EPOCHS = 5         # as the demo
# a third of the demo's events: a third of its communication window (λ = 12 by default) gives
# ADAG as many commits per epoch as the demo makes (at λ = 12 here: under 3 per worker and
# epoch, and the accuracy after 5 epochs straddled the bound, 0.63-0.76)
WINDOW = 4


def run_job(name: str, *args: str, timeout: int = 600, **env_vars) -> subprocess.CompletedProcess:
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
               TF_CPP_MIN_LOG_LEVEL="2", **env_vars)
    res = subprocess.run([sys.executable, os.path.join("jobs", f"{name}.py"), *args], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"jobs/{name}.py failed ({res.returncode}):\n{res.stderr[-6000:]}"
    return res


def table_rows(markdown: str) -> tuple[list[str], list[list[str]]]:
    """Header and body cells of the first markdown table in ``markdown``."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    assert len(cells) >= 3 and all(re.fullmatch(r"-{3,}", c) for c in cells[1]), markdown
    assert all(len(r) == len(cells[0]) for r in cells), f"ragged table:\n{markdown}"
    return cells[0], cells[2:]


def labels_of(path: str) -> np.ndarray:
    return pq.read_table(path, columns=["label"]).column("label").to_numpy()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One small run of the demo command; returns (output dir, stdout, stderr)."""
    out = tmp_path_factory.mktemp("pipeline") / "out"
    res = run_job("pipeline", "--demo", "--out", str(out), "--events", str(EVENTS),
                  "--epochs", str(EPOCHS), "--communication-window", str(WINDOW))
    return str(out), res.stdout, res.stderr


@pytest.mark.parametrize("job", JOBS)
def test_help_documents_every_option(job):
    res = run_job(job, "--help", timeout=120)
    assert res.stdout.startswith("usage:"), res.stdout[:200]
    section = res.stdout.split("options:\n", 1)[1].split("\n\n", 1)[0]
    entries = re.split(r"\n(?=  -)", section)
    names = {o for e in entries for o in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", e.split("  ", 2)[1])}
    assert {"--help", "--master"} <= names, names
    for entry in entries:
        first, *rest = entry.splitlines()
        described = re.search(r"\S\s{2,}\S", first.strip()) or any(ln.strip() for ln in rest)
        assert described, f"{job}: option without help text: {first.strip()}"


def test_demo_writes_every_artefact(demo):
    out, stdout, stderr = demo
    log = stdout + stderr
    for name in ("results.md", "metrics.json", "summary.json", "events.parquet",
                 "features/train.parquet", "features/test.parquet", "features/features.json",
                 "features/preprocessing/metadata", "sample/qcd/qcd_000.root"):
        assert os.path.exists(os.path.join(out, name)), f"{name} missing"
    for run in ("adag-x2", "keras-model-fit-driver", "singletrainer-x1"):
        for name in (f"roc_{run}.png", f"history_{run}.png", f"models/{run}/model.keras",
                     f"models/{run}/history.json", f"models/{run}/training.json"):
            path = os.path.join(out, name)
            assert os.path.exists(path), f"{name} missing"
            if name.endswith(".png"):
                with open(path, "rb") as fh:
                    assert fh.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 10_000
    # progress was shown: every step logged, the trainers' tqdm bars, the table printed last
    for step in range(1, 6):
        assert f"step {step}/5" in log
    assert "ADAG x2:" in log and "samples/s" in log and "SingleTrainer x1:" in log
    assert stdout.rstrip().splitlines()[-1].startswith("total ")


def test_results_table_is_well_formed(demo):
    out, stdout, _ = demo
    with open(os.path.join(out, "results.md")) as fh:
        text = fh.read()
    assert text.startswith("# ")
    header, rows = table_rows(text)
    assert header == ["model", "accuracy", "AUC QCD", "AUC ttbar", "AUC W+jets", "workers",
                      "epochs", "train s", "samples/s"]
    assert [r[0] for r in rows] == list(RUNS)
    with open(os.path.join(out, "metrics.json")) as fh:
        metrics = json.load(fh)
    for row in rows:
        acc, *aucs = (float(v) for v in row[1:5])
        assert 0 <= acc <= 1 and all(0.5 < a <= 1 for a in aucs), row
        assert row[5] == ("2" if row[0].startswith("ADAG") else "1") and row[6] == str(EPOCHS)
        seconds, rate = float(row[7]), float(row[8].replace(",", ""))
        m = metrics[row[0]]
        # the table shows whole samples per second
        assert seconds > 0 and rate == pytest.approx(m["samples"] / m["seconds"], abs=0.5 + 1e-9)
        assert acc == pytest.approx(m["accuracy"], abs=5e-5)
        assert np.asarray(m["confusion_matrix"]).sum() == m["n"]
    assert table_rows(stdout.split("\n# ")[-1])[1] == rows      # and printed at the end


def test_hlf_classifier_beats_the_majority_class(demo):
    """On the test split: accuracy well above always guessing the most frequent class, and the
    reported accuracy equals the saved model's own predictions on the test Parquet."""
    import keras

    out = demo[0]
    test_path = os.path.join(out, "features", "test.parquet")
    y = labels_of(test_path)
    assert len(y) > 200 and set(np.unique(y)) == {0, 1, 2}
    majority = np.bincount(y).max() / len(y)
    with open(os.path.join(out, "metrics.json")) as fh:
        metrics = json.load(fh)
    for run in RUNS:
        assert metrics[run]["accuracy"] > majority + 0.2, (run, metrics[run]["accuracy"], majority)
    table = pq.read_table(test_path, columns=["hlf", "label"])
    x = np.stack(table.column("hlf").to_numpy(zero_copy_only=False)).astype(np.float32)
    model = keras.models.load_model(os.path.join(out, "models", "adag-x2", "model.keras"),
                                    compile=False)
    own = float((model.predict(x, verbose=0).argmax(axis=1) == table.column("label").to_numpy()).mean())
    assert own == pytest.approx(metrics["ADAG x2"]["accuracy"], abs=1e-9)


def test_standalone_jobs_chain(demo, tmp_path):
    """features.py → train.py (DOWNPOUR, tracked in MLflow) → evaluate.py (with the demo's
    Keras model too)."""
    import mlflow
    out = demo[0]
    feats = tmp_path / "features"
    res = run_job("features", "--input", os.path.join(out, "events.parquet"), "--output",
                  str(feats), "--hlf-only", "--test-fraction", "0.25", "--seed", "7")
    info = json.loads(res.stdout[res.stdout.index("{"):])
    train_y, test_y = labels_of(str(feats / "train.parquet")), labels_of(str(feats / "test.parquet"))
    assert info["train_rows"] == len(train_y) and info["test_rows"] == len(test_y)
    assert info["events_in"] == 3 * EVENTS and info["events_selected"] == len(train_y) + len(test_y)
    assert 0.2 < len(test_y) / (len(train_y) + len(test_y)) < 0.3
    hlf = np.stack(pq.read_table(str(feats / "train.parquet")).column("hlf").to_numpy(
        zero_copy_only=False))
    assert hlf.shape[1] == 14
    np.testing.assert_allclose(hlf.mean(axis=0), 0, atol=1e-4)   # scaling fitted on train
    model_dir = tmp_path / "downpour"
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking)
    experiment = client.create_experiment("jobs", artifact_location=(tmp_path / "mlruns").as_uri())
    res = run_job("train", "--train", str(feats / "train.parquet"), "--validation",
                  str(feats / "test.parquet"), "--output", str(model_dir), "--trainer",
                  "DOWNPOUR", "--epochs", "2", "--quiet", "--mlflow", "jobs",
                  MLFLOW_TRACKING_URI=tracking)
    (run,) = client.search_runs([experiment])
    assert run.data.params["algorithm"] == "downpour" and run.data.params["epochs"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2
    info = json.loads(res.stdout[res.stdout.index("{"):])
    assert info["trainer"] == "DOWNPOUR" and info["workers"] == 2 and info["epochs"] == 2
    with open(model_dir / "history.json") as fh:
        hist = json.load(fh)
    assert len(hist["history"]["val_accuracy"]) == 2 and hist["ps_stats"]["workers"]
    assert (model_dir / "history.png").exists()
    eval_dir = tmp_path / "eval"
    res = run_job("evaluate", "--model", str(model_dir), "--model",
                  os.path.join(out, "models", "keras-model-fit-driver"), "--test",
                  str(feats / "test.parquet"), "--output", str(eval_dir))
    header, rows = table_rows(res.stdout)
    assert [r[0] for r in rows] == ["DOWNPOUR x2", "Keras model.fit (driver)"]
    for name in ("results.md", "metrics.json", "roc_downpour-x2.png",
                 "roc_keras-model-fit-driver.png"):
        assert (eval_dir / name).exists(), name
    with open(eval_dir / "metrics.json") as fh:
        assert json.load(fh)["DOWNPOUR x2"]["n"] == len(test_y)
