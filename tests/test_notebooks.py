"""The notebooks run top to bottom (nbclient, a python3 kernel on this interpreter) and produce
their artefacts, so they never rot. Each runs in a fresh kernel (its own SparkSession and JVM)
with a temporary working directory. With ``DISTKERAS_EXECUTED_NOTEBOOKS`` set (``.ci/run`` sets
``docs/notebooks``), the executed notebooks are written there, outputs and figures included,
for the documentation site."""
from __future__ import annotations

import csv
import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")


def execute(name: str, workdir) -> nbformat.NotebookNode:
    """Run ``notebooks/<name>.ipynb`` in ``workdir``; a failing cell raises CellExecutionError."""
    with open(os.path.join(NOTEBOOKS, f"{name}.ipynb"), encoding="utf-8") as fh:
        nb = nbformat.read(fh, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        f"{name}.ipynb is committed with outputs"
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # the python3 kernelspec runs "python", which jupyter_client replaces by sys.executable
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()
    rendered = os.environ.get("DISTKERAS_EXECUTED_NOTEBOOKS")   # the docs site shows these
    if rendered:
        os.makedirs(rendered, exist_ok=True)
        with open(os.path.join(rendered, f"{name}.ipynb"), "w", encoding="utf-8") as fh:
            nbformat.write(nb, fh)
    return nb


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_pipeline_notebook(tmp_path):
    nb = execute("pipeline", tmp_path)
    out = tmp_path / "pipeline-out"
    for name in ("roc.png", "history.png", "tuning.csv", "hlf_adag/model.keras",
                 "sample/qcd/qcd_000.root", "optuna_curves.png", "optuna.db"):
        assert (out / name).exists(), f"{name} missing"
    text = outputs_text(nb)
    assert "reloaded model accuracy:" in text and "refit on the full training split" in text
    with open(out / "tuning.csv") as fh:
        trials = list(csv.DictReader(fh))
    assert len(trials) == 4 and all(t["status"] == "ok" for t in trials)
    with open(out / "tuning_optuna.csv") as fh:      # the Optuna study: 8 trials, none failed
        trials = list(csv.DictReader(fh))
    assert len(trials) == 8 and {t["status"] for t in trials} <= {"ok", "pruned"}
    assert all(int(t["epochs"]) == 4 for t in trials if t["status"] == "ok")
    assert all(int(t["epochs"]) < 4 for t in trials if t["status"] == "pruned")
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3


def test_trainers_notebook(tmp_path):
    from distkeras.pipeline import trainer_names

    execute("trainers", tmp_path)
    out = tmp_path / "trainers-out"
    assert (out / "trainers.png").exists()
    with open(out / "trainers.csv") as fh:
        rows = list(csv.DictReader(fh))
    names = [r["trainer"].split(" x")[0] for r in rows]
    assert names == ["Keras model.fit (driver)"] + trainer_names()
    for r in rows:
        assert 0.0 < float(r["accuracy"]) <= 1.0 and float(r["seconds"]) > 0, r


def test_study_notebook(tmp_path):
    from distkeras.study import load_runs

    nb = execute("study", tmp_path)
    out = tmp_path / "study-out" / "study"
    records = load_runs(str(out / "runs.jsonl"))
    assert len(records) == 9 and all(r["status"] == "ok" for r in records)
    for name in ("report.md", "accuracy_vs_time.png", "speedup.png", "communication.png"):
        assert (out / name).exists(), f"{name} missing"
    text = outputs_text(nb)
    assert "Time to target accuracy" in text and "adpsgd+slowmo" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2
