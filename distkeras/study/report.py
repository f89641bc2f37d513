"""The study's report: tables and figures computed from ``runs.jsonl`` alone.

``analyse(records)`` gives the numbers (``analysis.py``: every table of the report is printed
from it, and the tests recompute them from the records); ``write_report`` draws the figures
(``figures.py``, matplotlib) and writes ``report.md``:

1. time to target accuracy per algorithm (what a user picks an algorithm by);
2. final validation accuracy per algorithm and worker count (mean ± std over repeats);
3. Baseline / SlowMo / SlowMo-no-avg (Table 4.2: mean ± standard error, and a verdict per
   variant: improves, worsens or unresolved at two standard errors);
4. accuracy against epochs and against wall time (bands over repeats);
5. communication and epoch time per worker (box plots);
6. speed-up t(1)/t(n) and time per batch against workers, with the ideal line;
7. sensitivity of the asynchronous parameter-server methods to λ and to the workers;
8. compressed exchanges, per network: bytes per worker and epoch, compression ratio, speed,
   accuracy and time to target, and validation accuracy against wall time per network;
9. compute, communication and wall time per epoch per algorithm at 16 workers (Figure 4.1);
10. simulated runs (``Study(simulate=...)``) beside measured ones: marked in every figure,
    and checked against them where both exist (the model's error on epoch time and accuracy).

A study whose runs went over several networks (the ``network`` of each record) names each
configuration ``label @network`` in the tables.

Example::

    from distkeras.study import load_runs, write_report
    write_report(load_runs("study-hlf/runs.jsonl"), "study-hlf")
"""
from __future__ import annotations

import math
import os
from typing import Sequence

from distkeras.study.analysis import analyse, finished_runs
from distkeras.study.figures import draw
from distkeras.study.validation import model_error


def _fmt(v, digits=4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _pm(mean, std) -> str:
    return "—" if mean is None or math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"


def write_report(records: Sequence[dict], out: str, target: float = 0.99,
                 title: str = "distkeras study") -> str:
    """Figures (PNG) and ``report.md`` under ``out``; returns the report's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    a = analyse(records, target)
    ok = finished_runs(records)
    figures = draw(plt, records, a, out)
    lines = [f"# {title}", "",
             f"{len(ok)} runs ({len(a['failed'])} failed); model {ok[0]['model'] if ok else '—'}, "
             f"batch {ok[0]['batch_size'] if ok else '—'} per worker, "
             f"{ok[0]['epochs_planned'] if ok else '—'} epochs. Seconds are training wall time "
             "(the epochs; virtual seconds for a run labelled *simulated*), accuracies are on "
             "the validation data.", ""]
    lines += _target_table(a, target) + _slowmo_table(a) + _runs_table(a) + _speedup_table(a)
    lines += _validation_table(a)
    lines += _compression_table(a)
    lines += ["", "## Figures", ""]
    lines += [f"![{name}]({name})" for name, made in figures.items() if made]
    if a["failed"]:
        lines += ["", "## Failed runs", ""] + [f"- `{f['key']}`: {f['error']}" for f in a["failed"]]
    path = os.path.join(out, "report.md")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def _target_table(a: dict, target: float) -> list[str]:
    lines = [f"## Time to target accuracy ({target:g} × best single-worker final accuracy = "
             f"{_fmt(a['target_accuracy'])})", "",
             "| algorithm | workers | λ | time to target (s) | reached | final val acc | "
             "samples/s | learning rate |", "|---|---|---|---|---|---|---|---|"]
    for r in a["time_to_target"]:
        lines.append(f"| {r['label']} | {r['num_workers']} | {_fmt(r['window'])} | "
                     f"{_fmt(r['time_to_target'], 2)} | {r['reached']} | "
                     f"{_pm(r['final_val_accuracy'], r['final_val_accuracy_std'])} | "
                     f"{_fmt(r['samples_per_s'], 0)} | {r['learning_rate']:g} |")
    return lines


def _slowmo_table(a: dict) -> list[str]:
    table = a["slowmo_table"]
    lines = ["", f"## Baseline / SlowMo / SlowMo no avg ({table['num_workers']} workers, final "
             "validation accuracy, mean ± standard error over repeats)", "",
             "| algorithm | Baseline | SlowMo | SlowMo no avg | SlowMo vs baseline | "
             "no avg vs baseline |", "|---|---|---|---|---|---|"]
    for algorithm, cells in sorted(table["rows"].items()):
        verdicts = table["verdicts"].get(algorithm, {})
        lines.append(f"| {algorithm} | " + " | ".join(
            f"{_pm(*cells[v][:2])} (×{cells[v][2]})" if v in cells else "—"
            for v in ("none", "avg", "noavg")) + " | " +
            " | ".join(verdicts.get(v, "—") for v in ("avg", "noavg")) + " |")
    if table["verdicts"]:
        lines += ["", "A verdict says *improves* or *worsens* only where the difference is over "
                  "twice its standard error (√(se₁² + se₂²)); otherwise *unresolved*."]
    return lines


def _validation_table(a: dict) -> list[str]:
    if not a["validation"]:
        return []
    error = model_error(a["validation"])
    lines = ["", "## The simulation against measured runs", "",
             "Each simulated configuration beside the same configuration trained for real: "
             "steady epoch seconds, seconds per batch and final validation accuracy "
             "(error: simulated ÷ measured − 1). A simulated difference between algorithms "
             f"smaller than the model's typical error ({_fmt(error, 3)}) is not a finding.", "",
             "| configuration | simulated network | workers | epoch s measured | simulated | "
             "error | s per batch measured | simulated | error | acc measured | simulated |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in a["validation"]:
        lines.append(f"| {v['label']} | {v['network']} | {v['num_workers']} | "
                     f"{_fmt(v['measured_epoch'], 3)} | {_fmt(v['simulated_epoch'], 3)} | "
                     f"{_fmt(v['epoch_error'], 2)} | {_fmt(v['measured_batch'], 5)} | "
                     f"{_fmt(v['simulated_batch'], 5)} | {_fmt(v['batch_error'], 2)} | "
                     f"{_fmt(v['measured_accuracy'])} | {_fmt(v['simulated_accuracy'])} |")
    return lines


def _runs_table(a: dict) -> list[str]:
    lines = ["", "## Every configuration", "",
             "| algorithm | workers | λ | repeats | final val acc | train s | samples/s | "
             "s per batch | staleness | Γ (last epoch) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in a["runs"]:
        lines.append(f"| {r['label']} | {r['num_workers']} | {_fmt(r['window'])} | "
                     f"{r['repeats']} | "
                     f"{_pm(r['final_val_accuracy'], r['final_val_accuracy_std'])} | "
                     f"{_fmt(r['train_seconds'], 2)} | {_fmt(r['samples_per_s'], 0)} | "
                     f"{_fmt(r['time_per_batch'], 5)} | {_fmt(r['staleness_mean'], 2)} | "
                     f"{_fmt(r['consensus_distance'], 4)} |")
    return lines


def _speedup_table(a: dict) -> list[str]:
    counts = sorted({n for s in a["speedup"].values() for n in s})
    lines = ["", "## Speed-up t(1)/t(n) (t: mean time of epochs 2..N)", "",
             "| algorithm | " + " | ".join(f"{n} workers" for n in counts) + " |",
             "|---|" + "---|" * len(counts)]
    for label, s in sorted(a["speedup"].items()):
        lines.append(f"| {label} | " + " | ".join(_fmt(s.get(n), 2) for n in counts) + " |")
    return lines


def _compression_table(a: dict) -> list[str]:
    if not a["compression"]:
        return []
    lines = ["", "## Compressed exchanges, per network", "",
             "Bytes: what each worker sent per epoch; ratio: what float32 would have sent ÷ "
             "what was sent.", "",
             "| network | algorithm | workers | compression | MB sent / epoch | ratio | "
             "samples/s | final val acc | time to target (s) | reached |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in a["compression"]:
        mb = None if r["bytes_per_epoch"] is None else r["bytes_per_epoch"] / 1e6
        lines.append(f"| {r['network']} | {r['configuration']} | {r['num_workers']} | "
                     f"{r['compression']} | {_fmt(mb, 3)} | {_fmt(r['ratio'], 1)} | "
                     f"{_fmt(r['samples_per_s'], 0)} | {_fmt(r['final_val_accuracy'])} | "
                     f"{_fmt(r['time_to_target'], 2)} | {r['reached']} |")
    return lines
