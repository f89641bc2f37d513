"""Evaluation in Spark against scikit-learn on the same data; plots and the results table."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

from distkeras import evaluation as E
from tests.topology_events import to_spark


@pytest.fixture(scope="module")
def scored(spark):
    """600 rows: 3-class probabilities with signal, some exact ties, and a float32 array column."""
    rng = np.random.default_rng(7)
    n = 600
    label = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[label]
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    prob = np.round(prob, 2).astype(np.float32)           # ties in the scores
    offsets = pa.array(np.arange(0, 3 * n + 1, 3, dtype=np.int32))
    table = pa.table({"label": pa.array(label.astype(np.int32)),
                      "probability": pa.ListArray.from_arrays(offsets, pa.array(prob.ravel()))})
    return to_spark(spark, table).repartition(3), label, prob


def test_metrics_equal_sklearn(scored):
    df, label, prob = scored
    m = E.evaluate(df)
    pred = prob.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(accuracy_score(label, pred), abs=1e-12)
    for k in range(3):
        assert m["auc"][k] == pytest.approx(roc_auc_score(label == k, prob[:, k]), abs=1e-9)
    np.testing.assert_array_equal(m["confusion_matrix"], confusion_matrix(label, pred))
    assert m["n"] == 600 and m["auc_QCD"] == m["auc"][0] and 0.6 < m["accuracy"] < 0.95


def test_roc_curve_endpoints_and_monotone(scored):
    df, label, prob = scored
    fpr, tpr = E.roc_curve(df, 1, num_bins=100)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    auc = np.trapezoid(tpr, fpr) if hasattr(np, "trapezoid") else np.trapz(tpr, fpr)
    assert auc == pytest.approx(roc_auc_score(label == 1, prob[:, 1]), abs=0.01)


def test_plots_written(scored, tmp_path):
    df, _, _ = scored
    roc = E.plot_roc(df, str(tmp_path / "roc.png"))
    hist = {"loss": [1.0, 0.7, 0.5], "accuracy": [0.5, 0.7, 0.8], "val_loss": [1.1, 0.8, 0.6],
            "val_accuracy": [0.45, 0.65, 0.75]}
    curves = E.plot_history(hist, str(tmp_path / "sub" / "history.png"))
    for path in (roc, curves):
        with open(path, "rb") as f:
            data = f.read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ValueError):
        E.plot_history({"ps_stats": {"x": 1}}, str(tmp_path / "none.png"))


def test_results_table_markdown():
    m = {"accuracy": 0.91234, "auc": [0.98, 0.97, 0.99], "class_names": ["QCD", "ttbar", "W+jets"],
         "train_s": 12}
    table = E.results_table({"HLF": m, "inclusive": {**m, "accuracy": 0.955}}, extra=["train_s"])
    lines = table.strip().splitlines()
    assert lines[0] == "| model | accuracy | AUC QCD | AUC ttbar | AUC W+jets | train_s |"
    assert lines[1] == "|---|---|---|---|---|---|"
    assert lines[2] == "| HLF | 0.9123 | 0.9800 | 0.9700 | 0.9900 | 12 |"
    assert lines[3].startswith("| inclusive | 0.9550 |")
