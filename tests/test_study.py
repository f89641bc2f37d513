"""The study end to end on scikit-learn's digits: a small sweep runs, writes every table and
figure, resumes without redoing work, and its report says what the JSONL records say."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distkeras.study import Study, analyse, load_runs, time_to_target

FIGURES = ("accuracy_vs_epoch.png", "accuracy_vs_time.png", "communication.png", "speedup.png",
           "sensitivity.png", "epoch_time.png")


class CountingStudy(Study):
    """Counts the runs it really trains."""

    trained = 0

    def _train(self, config, train, validation):
        type(self).trained += 1
        return super()._train(config, train, validation)


@pytest.fixture(scope="module")
def study(spark, tmp_path_factory):
    from distkeras.datasets.digits import digits_dataframe

    train, test = digits_dataframe(spark).randomSplit([0.8, 0.2], seed=0)
    study = CountingStudy(model="digits_mlp", algorithms=["adpsgd", "adag"],
                          slowmo=["none", "noavg"], num_workers=[1, 2], epochs=2, batch_size=32,
                          learning_rate=3e-3, learning_rates={"adag": 1e-2},
                          out=str(tmp_path_factory.mktemp("study")), verbose=False)
    study.run(train, validation=test)
    study.report()
    return study, train, test


def test_small_study_runs_every_configuration_and_writes_the_report(study):
    study, _, _ = study
    records = load_runs(study.runs_path)
    keys = [r["key"] for r in records]
    assert keys == [c.key for c in study.configurations()] and len(keys) == 7
    assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    for r in records:
        assert len(r["epochs"]) == 2 and all("val_accuracy" in e for e in r["epochs"])
        assert r["samples_per_s"] > 0 and r["time_per_batch"] > 0
        assert all(w["compute_seconds"] > 0 for w in r["worker_stats"])
    adag = [r for r in records if r["algorithm"] == "adag"]
    assert all(r["learning_rate"] == 1e-2 and r["staleness_mean"] is not None for r in adag)
    gossip = [r for r in records if r["algorithm"] == "adpsgd" and r["num_workers"] == 2]
    assert all(r["consensus_distance"] and r["worker_stats"][0]["exchanges"] > 0 for r in gossip)
    best = max(r["final_val_accuracy"] for r in records if r["algorithm"] == "single")
    assert best > 0.8, "the baseline did not learn the digits"
    report = (Path(study.out) / "report.md").read_text()
    for figure in FIGURES:
        assert (Path(study.out) / figure).stat().st_size > 1000, figure
        assert f"]({figure})" in report
    assert report.index("## Time to target") < report.index("## Baseline / SlowMo")


def test_rerun_does_no_work(study):
    study, train, test = study
    before = Path(study.runs_path).read_text()
    trained = CountingStudy.trained
    study.run(train, validation=test)
    assert CountingStudy.trained == trained
    assert Path(study.runs_path).read_text() == before


def test_report_numbers_equal_the_records(study):
    study, _, _ = study
    records = load_runs(study.runs_path)
    report = (Path(study.out) / "report.md").read_text()
    section = report.split("## Time to target", 1)[1].split("## Baseline", 1)[0]
    rows = [l.split("|")[1:-1] for l in section.splitlines() if l.startswith("| ") and
            not l.startswith("| algorithm")]
    assert len(rows) == 7
    best = max(r["final_val_accuracy"] for r in records if r["algorithm"] == "single")
    assert f"{0.99 * best:.4f}" in report
    for label, workers, _window, ttt, _reached, acc, _rate, _lr in (map(str.strip, r) for r in rows):
        runs = [r for r in records if r["label"] == label and r["num_workers"] == int(workers)]
        assert float(acc.split(" ± ")[0]) == pytest.approx(
            np.mean([r["final_val_accuracy"] for r in runs]), abs=5e-5)
        times = [time_to_target(r, 0.99 * best) for r in runs]
        if ttt == "—":
            assert all(t is None for t in times)
        else:
            assert float(ttt) == pytest.approx(np.median([t for t in times if t is not None]),
                                               abs=5e-3)
    # Baseline / SlowMo-no-avg cells come from the same records
    slowmo = report.split("## Baseline / SlowMo", 1)[1].split("## Every", 1)[0]
    table = re.search(r"\| adpsgd \| (.+?) \| (.+?) \| (.+?) \|", slowmo).groups()
    noavg = [r["final_val_accuracy"] for r in records
             if r["label"] == "adpsgd+slowmo-noavg" and r["num_workers"] == 2]
    assert float(table[2].split(" ± ")[0]) == pytest.approx(np.mean(noavg), abs=5e-5)


def test_speedup_is_computed_from_the_runs_it_plots(study):
    study, _, _ = study
    records = load_runs(study.runs_path)
    a = analyse(records)
    for label in ("adpsgd", "adag"):
        t = {r["num_workers"]: r["steady_epoch_seconds"] for r in records if r["label"] == label}
        assert a["speedup"][label][2] == pytest.approx(t[1] / t[2])
        assert a["speedup"][label][1] == pytest.approx(1.0)


def test_a_simulated_study_joins_the_measured_one_and_is_checked_against_it(study, tmp_path):
    """--simulate on the same configurations: its runs sit beside the measured ones (their own
    labels and keys), the report compares each with its measured twin, and the SlowMo table
    gives a verdict with standard errors."""
    import shutil

    measured, train, test = study
    shutil.copy(measured.runs_path, tmp_path / "runs.jsonl")
    simulated = Study(model="digits_mlp", algorithms=["adpsgd"], slowmo=["none", "noavg"],
                      num_workers=[1, 2], epochs=2, batch_size=32, learning_rate=3e-3,
                      learning_rates={"adag": 1e-2}, out=str(tmp_path), verbose=False,
                      simulate="loopback", cores=2, repeats=2)
    records = simulated.run(train, validation=test)
    sims = [r for r in records if r.get("simulated")]
    assert len(sims) == 2 * 5 and all(r["status"] == "ok" for r in sims), \
        [r.get("error") for r in sims]
    assert all(r["label"].endswith("[simulated 40gbit:0.15ms]") and "|sim=" in r["key"]
               for r in sims)
    assert all(r["simulation"]["workers"] == r["num_workers"] for r in sims)
    a = analyse(records)
    pairs = {(v["label"], v["num_workers"]) for v in a["validation"]}
    assert pairs == {(label, n) for label in ("adpsgd", "adpsgd+slowmo-noavg")
                     for n in (1, 2)} | {("single", 1)}
    for v in a["validation"]:
        assert v["epoch_error"] == pytest.approx(v["simulated_epoch"] / v["measured_epoch"] - 1)
        assert abs(v["simulated_accuracy"] - v["measured_accuracy"]) < 0.1, v
    verdict = a["slowmo_table"]["verdicts"]["adpsgd [simulated 40gbit:0.15ms]"]["noavg"]
    assert verdict.split()[0] in ("improves", "worsens", "unresolved") and "±" in verdict
    report = Path(simulated.report()).read_text()
    assert "## The simulation against measured runs" in report
    assert "adpsgd [simulated 40gbit:0.15ms]" in report
    assert (tmp_path / "speedup.png").stat().st_size > 1000


def test_a_failed_run_is_recorded_and_the_study_goes_on(spark, tmp_path):
    from distkeras.datasets.digits import digits_dataframe

    df = digits_dataframe(spark)
    # batch larger than a worker's partition with 2 workers: that run fails with a clear error
    study = Study(model="digits_mlp", algorithms=["adag"], num_workers=[1, 2], epochs=1,
                  batch_size=1000, out=str(tmp_path), verbose=False)
    records = study.run(df)
    status = {r["key"]: r["status"] for r in records}
    assert list(status.values()).count("failed") == 1 and len(status) == 3
    failed = next(r for r in records if r["status"] == "failed")
    assert "batch_size=1000" in failed["error"]
    assert "Failed runs" in Path(study.report()).read_text()


def test_a_compression_axis_gets_its_table_and_figure_per_network(spark, tmp_path):
    from distkeras.datasets.digits import digits_dataframe

    train, test = digits_dataframe(spark).randomSplit([0.8, 0.2], seed=0)
    study = Study(model="digits_mlp", algorithms=["adag"], num_workers=[2], epochs=2,
                  batch_size=32, learning_rates={"adag": 1e-2}, compression=["none", "INT8"],
                  network="loopback", out=str(tmp_path), verbose=False)
    # the uncompressed keys are those of earlier studies; the baseline exchanges nothing
    assert [c.key for c in study.configurations()] == [
        "single|none|w1|l-|r0", "adag|none|w2|l-|r0", "adag|none|w2|l-|r0|cint8"]
    records = study.run(train, validation=test)
    assert all(r["status"] == "ok" and r["network"] == "loopback" for r in records), records
    rows = {r["compression"]: r for r in analyse(records)["compression"]}
    assert set(rows) == {"none", "int8"} and rows["none"]["ratio"] == pytest.approx(1.0)
    assert rows["int8"]["ratio"] > 3.5            # what each worker sent, from the records
    sent = [w["bytes_sent"] / len(r["epochs"]) for r in records if r["compression"] == "int8"
            for w in r["worker_stats"]]
    assert rows["int8"]["bytes_per_epoch"] == pytest.approx(np.mean(sent))
    assert rows["int8"]["final_val_accuracy"] > 0.8
    report = Path(study.report()).read_text()
    assert "## Compressed exchanges, per network" in report and "| loopback | adag | 2 | int8 |" \
        in report
    assert (tmp_path / "accuracy_vs_time_by_network.png").stat().st_size > 1000
    # a compressor an algorithm refuses is left out of the sweep
    refused = Study(algorithms=["adpsgd", "ensemble"], compression=["topk:0.01"])
    assert [c.key for c in refused.configurations()] == ["single|none|w1|l-|r0"]


def test_study_job_help_and_report_only(tmp_path):
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "jobs/study.py", "--help"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--slowmo" in out.stdout and "--lr-scaling" in out.stdout
    record = {"key": "single|none|w1|l-|r0", "algorithm": "single", "slowmo": "none",
              "num_workers": 1, "window": None, "repeat": 0, "label": "single", "status": "ok",
              "learning_rate": 0.001, "batch_size": 32, "epochs_planned": 1, "model": "hlf",
              "epochs": [{"epoch": 0, "loss": 1.0, "val_accuracy": 0.5, "epoch_seconds": 2.0}],
              "train_seconds": 2.0, "steady_epoch_seconds": 2.0, "samples_per_s": 10.0,
              "time_per_batch": 0.1,
              "worker_stats": [{"exchange_seconds": 0.0, "compute_seconds": 1.0}],
              "final_val_accuracy": 0.5}
    (tmp_path / "runs.jsonl").write_text(json.dumps(record) + "\n" + '{"truncated')
    out = subprocess.run([sys.executable, "jobs/study.py", "--report-only", "--out",
                          str(tmp_path)], cwd=root, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| single | 1 | — | 2.00 | 1/1 | 0.5000 ± 0.0000 |" in (tmp_path / "report.md").read_text()
