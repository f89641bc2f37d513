"""The study's figures (matplotlib, PNG): accuracy against epochs and against wall time,
communication and epoch time per worker, speed-up, the epoch's compute and communication,
sensitivity to λ and to the workers, and accuracy per network for compressed exchanges.

Example::

    import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    made = draw(plt, records, analyse(records), "study-hlf")   # {file name: drawn}
"""
from __future__ import annotations

import os

import numpy as np

from distkeras.study.analysis import finished_runs, group


def draw(plt, records, analysis: dict, out: str) -> dict[str, bool]:
    """Every figure of the report under ``out``: {file name: whether it was drawn} (a figure
    whose data the study lacks is left out)."""
    ok = finished_runs(records)
    return {
        "accuracy_vs_epoch.png": _curves(plt, ok, out, "accuracy_vs_epoch.png", by_time=False),
        "accuracy_vs_time.png": _curves(plt, ok, out, "accuracy_vs_time.png", by_time=True),
        "communication.png": _boxes(plt, ok, out, "communication.png"),
        "speedup.png": _speedup(plt, analysis, out, "speedup.png"),
        "epoch_time.png": _epoch_time(plt, analysis, out, "epoch_time.png"),
        "sensitivity.png": _sensitivity(plt, ok, out, "sensitivity.png"),
        "accuracy_vs_time_by_network.png": bool(analysis["compression"]) and _by_network(
            plt, ok, out, "accuracy_vs_time_by_network.png"),
    }


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
        for label, runs in sorted(group(mine, "label").items()):
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
    for label, runs in sorted(group(records, "label").items()):
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
    for label, runs in sorted(group(asynchronous, "label").items()):
        top = max(r["num_workers"] for r in runs)
        by_window = sorted((r["window"] or 0, r["final_val_accuracy"]) for r in runs
                           if r["num_workers"] == top)
        by_workers = sorted((r["num_workers"], r["final_val_accuracy"]) for r in runs
                            if r["window"] == _default_window(runs, runs[0]))
        for ax, points in ((axes[0], by_window), (axes[1], by_workers)):
            groups = group([{"x": x, "y": y} for x, y in points], "x")
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
