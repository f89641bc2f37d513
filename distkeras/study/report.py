"""The study's report: tables and figures computed from ``runs.jsonl`` alone.

``analyse(records)`` gives the numbers (every table of the report is printed from it, and the
tests recompute them from the records); ``write_report`` draws the figures with matplotlib and
writes ``report.md``:

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
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from distkeras.study.validation import model_error, validation_table

def _ok(records: Sequence[dict]) -> list[dict]:
    return [r for r in records if r.get("status") == "ok" and r.get("epochs")]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = [x for x in values if x is not None]
    if not v:
        return float("nan"), float("nan")
    return float(np.mean(v)), float(np.std(v))


def _group(records, *keys) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[tuple(r[k] for k in keys)].append(r)
    return dict(groups)


def time_to_target(record: dict, target: float) -> float | None:
    """Training wall time (cumulative epoch seconds) at which ``val_accuracy`` first reaches
    ``target``; None if it never does."""
    elapsed = 0.0
    for e in record["epochs"]:
        elapsed += e["epoch_seconds"]
        if e.get("val_accuracy", -1.0) >= target:
            return elapsed
    return None


def _networks(records: Sequence[dict]) -> list[dict]:
    """The records, labelled ``label @network`` when the measured ones span several networks
    (a simulated run's label already names its network)."""
    networks = {r.get("network", "loopback") for r in records if not r.get("simulated")}
    if len(networks) < 2:
        return list(records)
    return [r if r.get("simulated") else
            {**r, "label": f"{r.get('label', r.get('key'))} @{r.get('network', 'loopback')}"}
            for r in records]


def _compressed(record: dict) -> tuple[str, str]:
    """(the configuration without its compressor, the compressor) of a record."""
    compression = record.get("compression", "none")
    label = record["label"].split(" @")[0]
    suffix = f"+{compression}"
    return (label[:-len(suffix)] if compression != "none" and label.endswith(suffix)
            else label), compression


def compression_table(records: Sequence[dict], target_accuracy: float | None) -> list[dict]:
    """Per network, configuration, workers and compressor: bytes each worker sent per epoch,
    compression ratio (float32 bytes / bytes sent), samples/s, final validation accuracy and
    time to target (medians and means over repeats)."""
    rows = []
    groups = _group([{**r, "base": _compressed(r)[0], "compression": _compressed(r)[1],
                      "network": r.get("network", "loopback")} for r in _ok(records)
                     if r["algorithm"] != "single"],
                    "network", "base", "num_workers", "compression")
    for (network, base, workers, compression), runs in sorted(groups.items()):
        sent, raw = [], []
        for r in runs:
            for w in r.get("worker_stats", []):
                epochs = max(1, len(r["epochs"]))
                sent.append(w.get("bytes_sent", 0) / epochs)
                raw.append(w.get("raw_bytes_sent", w.get("bytes_sent", 0)) / epochs)
        times = [time_to_target(r, target_accuracy) if target_accuracy else None for r in runs]
        reached = [t for t in times if t is not None]
        rows.append({"network": network, "configuration": base, "num_workers": workers,
                     "compression": compression,
                     "bytes_per_epoch": float(np.mean(sent)) if sent else None,
                     "ratio": (float(np.sum(raw) / np.sum(sent)) if sent and np.sum(sent)
                               else None),
                     "samples_per_s": _mean_std([r.get("steady_samples_per_s") or
                                                 r.get("samples_per_s") for r in runs])[0],
                     "final_val_accuracy": _mean_std([r["final_val_accuracy"] for r in runs])[0],
                     "time_to_target": float(np.median(reached)) if reached else None,
                     "reached": f"{len(reached)}/{len(runs)}"})
    return rows


def analyse(records: Sequence[dict], target: float = 0.99) -> dict[str, Any]:
    """Every number of the report, from the records."""
    records = _networks(records)
    ok = _ok(records)
    baseline = [r["final_val_accuracy"] for r in ok if r["algorithm"] == "single"
                and r.get("final_val_accuracy") is not None]
    target_accuracy = target * max(baseline) if baseline else None
    out: dict[str, Any] = {"target_accuracy": target_accuracy, "failed": [
        {"key": r["key"], "error": r.get("error")} for r in records if r.get("status") != "ok"]}

    rows = []
    for (label, workers, window), runs in sorted(_group(ok, "label", "num_workers", "window").items(),
                                                 key=lambda kv: (kv[0][0], kv[0][1],
                                                                 kv[0][2] or 0)):
        times = [time_to_target(r, target_accuracy) if target_accuracy else None for r in runs]
        reached = [t for t in times if t is not None]
        acc, acc_std = _mean_std([r["final_val_accuracy"] for r in runs])
        per_epoch = [(w.get("compute_seconds"), w.get("exchange_seconds"), len(r["epochs"]))
                     for r in runs for w in r.get("worker_stats", [])]
        rows.append({"label": label, "algorithm": runs[0]["algorithm"],
                     "slowmo": runs[0]["slowmo"], "num_workers": workers, "window": window,
                     "simulated": bool(runs[0].get("simulated")),
                     "network": runs[0].get("network", "loopback"),
                     "compute_per_epoch": _mean_std([c / e for c, _, e in per_epoch
                                                     if c is not None and e])[0],
                     "exchange_per_epoch": _mean_std([x / e for _, x, e in per_epoch
                                                      if x is not None and e])[0],
                     "final_val_accuracy_se": standard_error(
                         [r["final_val_accuracy"] for r in runs]),
                     "repeats": len(runs), "learning_rate": runs[0]["learning_rate"],
                     "time_to_target": float(np.median(reached)) if reached else None,
                     "reached": f"{len(reached)}/{len(runs)}",
                     "final_val_accuracy": acc, "final_val_accuracy_std": acc_std,
                     "train_seconds": _mean_std([r["train_seconds"] for r in runs])[0],
                     "steady_epoch_seconds": _mean_std([r["steady_epoch_seconds"]
                                                        for r in runs])[0],
                     "samples_per_s": _mean_std([r["samples_per_s"] for r in runs])[0],
                     "time_per_batch": _mean_std([r["time_per_batch"] for r in runs])[0],
                     "staleness_mean": _mean_std([r.get("staleness_mean") for r in runs])[0],
                     "consensus_distance": _mean_std([(r.get("consensus_distance") or [None])[-1]
                                                      for r in runs])[0]})
    out["runs"] = rows
    out["time_to_target"] = sorted(
        rows, key=lambda r: (r["time_to_target"] is None, r["time_to_target"] or 0.0))

    # speed-up t(1)/t(n) of each algorithm, t the steady epoch time (epochs 2..N: the first
    # pays start-up), from the same runs the figure plots; t(1) is the algorithm's own 1-worker
    # run, else the single-worker baseline's
    speedup: dict[str, dict[int, float]] = {}
    for label, group in _group(rows, "label").items():
        by_workers = {r["num_workers"]: r["steady_epoch_seconds"] for r in group}
        single = [r for r in rows if r["algorithm"] == "single"      # measured, or simulated
                  and (r["simulated"], r["network"]) == (group[0]["simulated"],   # alike
                                                         group[0]["network"])]
        base = by_workers.get(1) or (single[0]["steady_epoch_seconds"] if single else None)
        if base:
            speedup[label[0]] = {n: base / t for n, t in sorted(by_workers.items()) if t}
    out["speedup"] = speedup

    # Baseline / SlowMo / SlowMo-no-avg at the largest worker count (Table 4.2): mean ± s.e.
    top = max((r["num_workers"] for r in rows), default=1)
    table = defaultdict(dict)
    for r in rows:
        if r["num_workers"] == top and r["algorithm"] != "single":
            name = r["algorithm"] + (f" [simulated {r['network']}]" if r["simulated"] else "")
            table[name][r["slowmo"]] = (r["final_val_accuracy"], r["final_val_accuracy_se"],
                                        r["repeats"])
    out["slowmo_table"] = {"num_workers": top, "rows": dict(table),
                           "verdicts": {name: slowmo_verdicts(cells)
                                        for name, cells in table.items()}}
    out["validation"] = validation_table(rows)
    compressed = any(r.get("compression", "none") != "none" for r in ok)
    networks = {r.get("network") for r in ok if not r.get("simulated")}
    out["compression"] = (compression_table([r for r in ok if not r.get("simulated")],
                                            target_accuracy)
                          if compressed or len(networks) > 1 else [])
    return out


def standard_error(values: Sequence[float]) -> float:
    """s/√k of ``values`` (s the sample standard deviation); nan for fewer than 2."""
    v = [x for x in values if x is not None]
    return float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def slowmo_verdicts(cells: dict) -> dict[str, str]:
    """For SlowMo with and without the average: does it change the base's final accuracy?
    ``improves`` / ``worsens`` when the difference is over twice its standard error
    (√(se₁² + se₂²), about 95 %), ``unresolved`` otherwise (or with fewer than 2 repeats)."""
    out = {}
    if "none" not in cells:
        return out
    base, base_se, _ = cells["none"]
    for variant in ("avg", "noavg"):
        if variant not in cells:
            continue
        mean, se, _ = cells[variant]
        error = math.sqrt(base_se ** 2 + se ** 2)
        difference = mean - base
        if not math.isfinite(error) or error == 0 or abs(difference) <= 2 * error:
            verdict = "unresolved"
        else:
            verdict = "improves" if difference > 0 else "worsens"
        out[variant] = (f"{verdict} ({difference:+.4f} ± {error:.4f})" if math.isfinite(error)
                        else f"unresolved ({difference:+.4f}, one repeat)")
    return out


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
    ok = _ok(_networks(records))
    figures = {
        "accuracy_vs_epoch.png": _curves(plt, ok, out, "accuracy_vs_epoch.png", by_time=False),
        "accuracy_vs_time.png": _curves(plt, ok, out, "accuracy_vs_time.png", by_time=True),
        "communication.png": _boxes(plt, ok, out, "communication.png"),
        "speedup.png": _speedup(plt, a, out, "speedup.png"),
        "epoch_time.png": _epoch_time(plt, a, out, "epoch_time.png"),
        "sensitivity.png": _sensitivity(plt, ok, out, "sensitivity.png"),
        "accuracy_vs_time_by_network.png": bool(a["compression"]) and _by_network(
            plt, ok, out, "accuracy_vs_time_by_network.png"),
    }
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


def _by_network(plt, records, out, name) -> bool:
    """Validation accuracy against training wall time, one panel per network, one line per
    configuration (with its compressor) at its largest worker count."""
    records = [r for r in _largest(records) if r["epochs"] and "val_accuracy" in r["epochs"][0]]
    networks = sorted({r.get("network", "loopback") for r in records})
    if not networks:
        return False
    fig, axes = plt.subplots(1, len(networks), figsize=(6 * len(networks), 4.5), squeeze=False,
                             sharey=True)
    for ax, network in zip(axes[0], networks):
        mine = [r for r in records if r.get("network", "loopback") == network]
        for label, runs in sorted(_group(mine, "label").items()):
            n = min(len(r["epochs"]) for r in runs)
            x = np.mean([np.cumsum([e["epoch_seconds"] for e in r["epochs"][:n]])
                         for r in runs], axis=0)
            y = np.nanmean([[e.get("val_accuracy", np.nan) for e in r["epochs"][:n]]
                            for r in runs], axis=0)
            compressed = runs[0].get("compression", "none") != "none"
            ax.plot(x, y, marker="o", ms=3, ls="--" if compressed else "-",
                    label=f"{label[0].split(' @')[0]} ×{runs[0]['num_workers']}")
        ax.set_title(network)
        ax.set_xlabel("training wall time (s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("validation accuracy")
    return _save(fig, plt, os.path.join(out, name))


def _largest(records):
    """Per label, the runs at the largest worker count it has (single: 1)."""
    top = {}
    for r in records:
        top[r["label"]] = max(top.get(r["label"], 0), r["num_workers"])
    return [r for r in records if r["num_workers"] == top[r["label"]]]


def _curves(plt, records, out, name, by_time: bool) -> bool:
    records = [r for r in _largest(records) if r["window"] in (None, _default_window(records, r))]
    if not records or not any("val_accuracy" in r["epochs"][0] for r in records):
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, runs in sorted(_group(records, "label").items()):
        n = min(len(r["epochs"]) for r in runs)
        acc = np.array([[e.get("val_accuracy", np.nan) for e in r["epochs"][:n]] for r in runs])
        x = (np.mean([np.cumsum([e["epoch_seconds"] for e in r["epochs"][:n]]) for r in runs],
                     axis=0) if by_time else np.arange(1, n + 1))
        mean, std = np.nanmean(acc, axis=0), np.nanstd(acc, axis=0)
        color, style = _style(records, runs[0])
        ax.plot(x, mean, marker="o", ms=3, color=color, ls=style,
                label=f"{label[0]} ×{runs[0]['num_workers']}")
        ax.fill_between(x, mean - std, mean + std, alpha=0.15, color=color)
    ax.set_xlabel("training wall time (s)" if by_time else "epoch")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, os.path.join(out, name))


def _style(records, record) -> tuple:
    """One colour per algorithm, one line style per SlowMo variant."""
    import matplotlib

    algorithms = sorted({r["algorithm"] for r in records})
    colour = matplotlib.colormaps["tab10" if len(algorithms) <= 10 else "tab20"](
        algorithms.index(record["algorithm"]) % 20)
    return colour, {"none": "-", "avg": "--", "noavg": ":"}[record["slowmo"]]


def _default_window(records, record):
    """The first λ swept for this label (curves show one λ per algorithm)."""
    windows = sorted({r["window"] for r in records if r["label"] == record["label"]},
                     key=lambda w: (w is None, w or 0))
    return windows[0] if windows else None


def _boxes(plt, records, out, name) -> bool:
    records = _largest(records)
    if not records:
        return False
    labels = sorted({r["label"] for r in records})
    comm = [[w["exchange_seconds"] / max(1, len(r["epochs"])) for r in records
             if r["label"] == lab for w in r["worker_stats"]] for lab in labels]
    epoch = [[e["epoch_seconds"] for r in records if r["label"] == lab for e in r["epochs"]]
             for lab in labels]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, data, what in ((axes[0], comm, "communication s per epoch (per worker)"),
                           (axes[1], epoch, "epoch wall time (s)")):
        ax.boxplot(data)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    return _save(fig, plt, os.path.join(out, name))


def _speedup(plt, analysis, out, name) -> bool:
    """Figure 4.2: speed-up and time per batch against workers; simulated series dotted with
    open square markers, measured ones solid with dots."""
    series = {k: v for k, v in analysis["speedup"].items() if len(v) > 1}
    if not series:
        return False
    rows = analysis["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    top = max(n for s in series.values() for n in s)
    axes[0].plot([1, top], [1, top], "k--", label="ideal")
    for label, s in sorted(series.items()):
        row = next(r for r in rows if r["label"] == label)
        color, style = _style(rows, row)
        mark = dict(marker="s", mfc="none", ls=":") if row["simulated"] else dict(marker="o",
                                                                                  ls=style)
        axes[0].plot(list(s), list(s.values()), label=label, color=color, **mark)
        tpb = sorted((r["num_workers"], r["time_per_batch"]) for r in rows if r["label"] == label
                     and r["time_per_batch"] is not None)
        if tpb:
            axes[1].plot(*zip(*tpb), label=label, color=color, **mark)
    base = [r["time_per_batch"] for r in rows if r["num_workers"] == 1 and r["time_per_batch"]
            and not r["simulated"]]
    if base:   # ideal: a step costs what it costs one worker alone, whatever the workers
        axes[1].axhline(min(base), color="k", ls="--", label="ideal (1-worker step, measured)")
    if top > 16:
        for ax in axes:
            ax.set_xscale("log", base=2)
        axes[0].set_yscale("log", base=2)
        axes[1].set_yscale("log")
    _label(axes, ("workers", "workers"), ("speed-up t(1)/t(n)", "seconds per batch (per worker)"))
    if len(series) > 8:       # one legend beside both panels
        axes[0].get_legend().remove()
        axes[1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.set_size_inches(15, 5.5)
    return _save(fig, plt, os.path.join(out, name))


def _epoch_time(plt, analysis, out, name) -> bool:
    """Figure 4.1: per algorithm at 16 workers (else the largest count there is), a worker's
    compute and communication seconds per epoch, and the epoch's wall time; simulated bars
    hatched."""
    rows = [r for r in analysis["runs"] if r["algorithm"] != "single"
            and r["compute_per_epoch"] == r["compute_per_epoch"]]
    if not rows:
        return False
    counts = {r["num_workers"] for r in rows}
    n = 16 if 16 in counts else max(counts)
    rows = sorted((r for r in rows if r["num_workers"] == n), key=lambda r: r["label"])
    fig, ax = plt.subplots(figsize=(max(7, 0.8 * len(rows) + 3), 5))
    x = np.arange(len(rows))
    compute = [r["compute_per_epoch"] for r in rows]
    exchange = [r["exchange_per_epoch"] for r in rows]
    hatch = ["//" if r["simulated"] else "" for r in rows]
    ax.bar(x - 0.2, compute, 0.4, label="compute per worker", color="tab:blue", hatch=hatch)
    ax.bar(x - 0.2, exchange, 0.4, bottom=compute, label="communication per worker",
           color="tab:orange", hatch=hatch)
    ax.bar(x + 0.2, [r["steady_epoch_seconds"] for r in rows], 0.4, label="epoch wall time",
           color="tab:gray", hatch=hatch)
    ax.set_xticks(x, [r["label"] for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"seconds per epoch ({n} workers; hatched: simulated)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, plt, os.path.join(out, name))


def _sensitivity(plt, records, out, name) -> bool:
    from distkeras.algorithms.registry import asynchronous_parameter_server

    keys = asynchronous_parameter_server()
    asynchronous = [r for r in records if r["algorithm"] in keys and r["slowmo"] == "none"]
    if not asynchronous:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for label, runs in sorted(_group(asynchronous, "label").items()):
        top = max(r["num_workers"] for r in runs)
        by_window = sorted((r["window"] or 0, r["final_val_accuracy"]) for r in runs
                           if r["num_workers"] == top)
        by_workers = sorted((r["num_workers"], r["final_val_accuracy"]) for r in runs
                            if r["window"] == _default_window(runs, runs[0]))
        for ax, points in ((axes[0], by_window), (axes[1], by_workers)):
            groups = _group([{"x": x, "y": y} for x, y in points], "x")
            xs = sorted(k[0] for k in groups)
            ax.plot(xs, [np.mean([p["y"] for p in groups[(x,)]]) for x in xs], marker="o",
                    label=label[0])
    _label(axes, ("communication window λ (0: the algorithm's default)", "workers"),
           ("final validation accuracy",) * 2)
    return _save(fig, plt, os.path.join(out, name))


def _label(axes, xlabels, ylabels) -> None:
    for ax, x, y in zip(axes, xlabels, ylabels):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)


def _save(fig, plt, path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
