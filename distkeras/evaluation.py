"""Classifier evaluation on a scored Spark DataFrame, plots and a markdown results table.

The metrics are Spark jobs over the scored DataFrame (an int ``label`` column and a
probability column: the Spark ML vector `KerasModel.transform` writes, or an array of floats);
only aggregates reach the
driver: accuracy (``MulticlassClassificationEvaluator``), per-class one-vs-rest ROC AUC
(``BinaryClassificationEvaluator`` with ``numBins=0``: exact), the confusion matrix and binned
ROC curves (``groupBy`` counts). Plots use matplotlib's Agg backend.

Example::

    metrics = evaluate(scored, label_col="label", probability_col="probability")
    plot_roc(scored, "roc.png"); plot_history(fitted.history, "history.png")
    print(results_table({"HLF": metrics}))
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

CLASS_NAMES = ("QCD", "ttbar", "W+jets")


def _as_array(df, probability_col: str):
    """``df`` with ``probability_col`` as an array (a Spark ML vector column is converted)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    if probability_col not in df.columns:
        raise ValueError(f"evaluation: no column {probability_col!r} (columns: {df.columns}); "
                         "pass probability_col=")
    if type(df.schema[probability_col].dataType).__name__ == "VectorUDT":
        return df.withColumn(probability_col, vector_to_array(F.col(probability_col)))
    return df


def _num_classes(df, probability_col: str) -> int:
    from pyspark.sql import functions as F

    df = _as_array(df, probability_col)

    row = df.select(F.max(F.size(probability_col)).alias("k")).first()
    if row is None or row["k"] is None:
        raise ValueError("evaluation: the scored DataFrame is empty")
    return int(row["k"])


def _with_prediction(df, label_col: str, probability_col: str):
    """Adds ``__pred`` (argmax, first on ties like numpy) and ``__label`` as doubles."""
    from pyspark.sql import functions as F

    df = _as_array(df, probability_col)

    q = f"`{probability_col}`"    # SQL form: pyspark 3.5's array_position takes no Column value
    return df.select(
        F.col(label_col).cast("double").alias("__label"),
        F.expr(f"array_position({q}, array_max({q})) - 1").cast("double").alias("__pred"))


def accuracy(df, label_col: str = "label", probability_col: str = "probability") -> float:
    """Fraction of rows whose argmax class equals the label."""
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    scored = _with_prediction(df, label_col, probability_col)
    ev = MulticlassClassificationEvaluator(labelCol="__label", predictionCol="__pred",
                                           metricName="accuracy")
    return float(ev.evaluate(scored))


def roc_auc(df, label_col: str = "label", probability_col: str = "probability",
            num_classes: int | None = None) -> list[float]:
    """One-vs-rest ROC AUC per class (class k: score ``p[k]``, positive ``label == k``)."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.sql import functions as F

    df = _as_array(df, probability_col)
    k = num_classes or _num_classes(df, probability_col)
    ev = BinaryClassificationEvaluator(rawPredictionCol="__score", labelCol="__pos",
                                       metricName="areaUnderROC", numBins=0)
    out = []
    for c in range(k):
        one = df.select(F.col(probability_col)[c].cast("double").alias("__score"),
                        (F.col(label_col) == c).cast("double").alias("__pos"))
        out.append(float(ev.evaluate(one)))
    return out


def confusion_matrix(df, label_col: str = "label", probability_col: str = "probability",
                     num_classes: int | None = None) -> np.ndarray:
    """``cm[true, predicted]`` counts (rows: labels, columns: argmax predictions)."""
    from pyspark.sql import functions as F

    k = num_classes or _num_classes(df, probability_col)
    counts = (_with_prediction(df, label_col, probability_col)
              .groupBy("__label", "__pred").agg(F.count(F.lit(1)).alias("n")).collect())
    cm = np.zeros((k, k), dtype=np.int64)
    for r in counts:  # at most k*k aggregate rows
        cm[int(r["__label"]), int(r["__pred"])] = int(r["n"])
    return cm


def roc_curve(df, class_index: int, label_col: str = "label", probability_col: str = "probability",
              num_bins: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of class ``class_index`` vs rest at ``num_bins`` score thresholds (Spark groupBy)."""
    from pyspark.sql import functions as F

    df = _as_array(df, probability_col)
    score = F.col(probability_col)[class_index].cast("double")
    b = F.least(F.greatest(F.floor(score * num_bins), F.lit(0)), F.lit(num_bins - 1)).cast("int")
    rows = (df.select(b.alias("bin"), (F.col(label_col) == class_index).cast("int").alias("pos"))
            .groupBy("bin").agg(F.sum("pos").alias("p"), F.count(F.lit(1)).alias("n")).collect())
    pos = np.zeros(num_bins)
    tot = np.zeros(num_bins)
    for r in rows:  # at most num_bins aggregate rows
        pos[r["bin"]], tot[r["bin"]] = r["p"], r["n"]
    neg = tot - pos
    tp = np.concatenate([[0.0], np.cumsum(pos[::-1])])   # thresholds from high to low
    fp = np.concatenate([[0.0], np.cumsum(neg[::-1])])
    return fp / max(fp[-1], 1.0), tp / max(tp[-1], 1.0)


def evaluate(df, label_col: str = "label", probability_col: str = "probability",
             class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
    """Accuracy, per-class AUC (``auc`` list and ``auc_<name>``), confusion matrix, row count."""
    df = _as_array(df, probability_col)
    k = _num_classes(df, probability_col)
    names = list(class_names)[:k] + [str(i) for i in range(len(class_names), k)]
    aucs = roc_auc(df, label_col, probability_col, k)
    cm = confusion_matrix(df, label_col, probability_col, k)
    out: dict[str, Any] = {"accuracy": accuracy(df, label_col, probability_col), "auc": aucs,
                           "confusion_matrix": cm, "n": int(cm.sum()), "class_names": names}
    out.update({f"auc_{n}": a for n, a in zip(names, aucs)})
    log.info("evaluation: accuracy %.4f, AUC %s on %d rows", out["accuracy"],
             ", ".join(f"{n} {a:.4f}" for n, a in zip(names, aucs)), out["n"])
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_roc(df, path: str, label_col: str = "label", probability_col: str = "probability",
             class_names: Sequence[str] = CLASS_NAMES, num_bins: int = 2000,
             title: str = "ROC (one vs rest)") -> str:
    """ROC curve per class (AUC from `roc_auc` in the legend) saved as a PNG at ``path``."""
    df = _as_array(df, probability_col)
    k = _num_classes(df, probability_col)
    aucs = roc_auc(df, label_col, probability_col, k)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for c in range(k):
        fpr, tpr = roc_curve(df, c, label_col, probability_col, num_bins)
        name = class_names[c] if c < len(class_names) else str(c)
        ax.plot(fpr, tpr, label=f"{name} (AUC = {aucs[c]:.4f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return _save(fig, plt, path)


def plot_history(history: Mapping[str, Sequence[float]], path: str, title: str = "Training") -> str:
    """Loss and accuracy (and their ``val_`` curves) per epoch from a Keras-style history dict."""
    hist = getattr(history, "history", history)
    metrics = [m for m in ("loss", "accuracy") if m in hist or f"val_{m}" in hist]
    if not metrics:
        metrics = sorted({k.removeprefix("val_") for k, v in hist.items() if _numeric(v)})
    if not metrics:
        raise ValueError(f"plot_history: no per-epoch curves in keys {sorted(hist)}")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for key, style in ((m, "-"), (f"val_{m}", "--")):
            values = hist.get(key)
            if _numeric(values):
                ax.plot(np.arange(1, len(values) + 1), values, style, marker="o", label=key)
        ax.set(xlabel="epoch", ylabel=m, title=f"{title}: {m}")
        ax.legend()
    return _save(fig, plt, path)


def _numeric(values: Any) -> bool:
    return isinstance(values, (list, tuple, np.ndarray)) and len(values) > 0 and all(
        isinstance(v, (int, float, np.floating, np.integer)) for v in values)


def _save(fig, plt, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log.info("wrote %s", path)
    return path


def results_table(results: Mapping[str, Mapping[str, Any]],
                  class_names: Sequence[str] | None = None, extra: Sequence[str] = ()) -> str:
    """Markdown table: one row per model with accuracy and per-class AUC (+ ``extra`` keys).

    ``results`` maps a model name to an `evaluate` dict. Example:
    ``results_table({"HLF": m1, "inclusive": m2}, extra=["train_s"])``.
    """
    if not results:
        return ""
    first = next(iter(results.values()))
    names = list(class_names or first.get("class_names") or CLASS_NAMES)
    head = ["model", "accuracy"] + [f"AUC {n}" for n in names] + list(extra)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for model, m in results.items():
        aucs = list(m.get("auc", []))
        cells = [model, _fmt(m.get("accuracy"))]
        cells += [_fmt(aucs[i]) if i < len(aucs) else "" for i in range(len(names))]
        cells += [_fmt(m.get(e)) for e in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)
