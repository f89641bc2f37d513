"""Pipeline evaluation step: score the test split with each trained run, write ``metrics.json``,
one ROC PNG per run and the markdown results table.

Example::

    results = evaluate_runs([adag_run, keras_run], test_df, "out")
    print(results_markdown(results))
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Iterable, Mapping, Sequence

from distkeras.pipeline.data import LABEL_COL
from distkeras.pipeline.training import Run

log = logging.getLogger(__name__)

TABLE_EXTRA = ["workers", "epochs", "train s", "samples/s"]


def slug(name: str) -> str:
    """File-name form of a run name: ``"ADAG x2"`` → ``"adag-x2"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "run"


def evaluate_run(run: Run, test_df, roc_png: str | None = None) -> dict[str, Any]:
    """Score ``test_df`` with ``run.model`` in the executors (scored rows cached once), return
    accuracy, per-class AUC and confusion matrix (see `distkeras.evaluation.evaluate`) merged
    with the run's timing; ``roc_png`` also draws the per-class ROC curves."""
    from distkeras import evaluation

    col = run.model.getProbabilityCol()
    scored = run.model.transform(test_df).persist()
    try:
        metrics = evaluation.evaluate(scored, label_col=LABEL_COL, probability_col=col)
        if roc_png:
            evaluation.plot_roc(scored, roc_png, label_col=LABEL_COL, probability_col=col,
                                title=f"ROC: {run.name}")
    finally:
        scored.unpersist()
    return {**metrics, "confusion_matrix": metrics["confusion_matrix"].tolist(), **run.info()}


def evaluate_runs(runs: Iterable[Run], test_df, out_dir: str, title: str = "Results",
                  notes: Sequence[str] = (), write_table: bool = True) -> dict[str, dict[str, Any]]:
    """`evaluate_run` for each run; writes ``out_dir/roc_<run>.png``, ``out_dir/metrics.json``
    (``{run name: metrics}``) and, with ``write_table``, ``out_dir/results.md``
    (`write_results`). Returns the metrics."""
    os.makedirs(out_dir, exist_ok=True)
    results = {}
    for run in runs:
        name, i = run.name, 1
        while name in results:      # two runs of the same name: number them
            i += 1
            name = f"{run.name} ({i})"
        log.info("evaluating %s on the test split", name)
        results[name] = evaluate_run(run, test_df, os.path.join(out_dir, f"roc_{slug(name)}.png"))
    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=1)
    if write_table:
        write_results(results, os.path.join(out_dir, "results.md"), title=title, notes=notes)
    return results


def results_markdown(results: Mapping[str, Mapping[str, Any]],
                     class_names: Sequence[str] | None = None) -> str:
    """Markdown table of `evaluate_run` dicts: accuracy, AUC per class, workers, epochs,
    training seconds (wall time of ``fit``) and training samples/s, one row per run."""
    from distkeras.evaluation import results_table

    rows = {}
    for name, m in results.items():
        seconds, rate = m.get("seconds"), m.get("samples_per_s")
        rows[name] = {**m, "train s": f"{seconds:.1f}" if seconds else "",
                      "samples/s": f"{rate:,.0f}" if rate else ""}
    return results_table(rows, class_names=class_names, extra=TABLE_EXTRA)


def write_results(results: Mapping[str, Mapping[str, Any]], path: str, title: str = "Results",
                  notes: Sequence[str] = ()) -> str:
    """``# title``, the `results_markdown` table, then ``notes`` as a bullet list; returns the
    markdown written to ``path``."""
    text = f"# {title}\n\n" + results_markdown(results)
    if notes:
        text += "\n" + "".join(f"- {n}\n" for n in notes)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    log.info("wrote %s", path)
    return text
