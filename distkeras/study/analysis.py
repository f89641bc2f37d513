"""The study's numbers, from ``runs.jsonl``'s records alone: time to target accuracy, final
accuracy per algorithm and worker count, the SlowMo table with its verdicts, speed-up, the
compressed exchanges per network and the simulated runs checked against measured ones
(``analyse``). The report's tables are printed from it, and the tests recompute them from the
records.

Example::

    from distkeras.study import analyse, load_runs
    a = analyse(load_runs("study-hlf/runs.jsonl"), target=0.99)
    a["time_to_target"][0]["label"], a["target_accuracy"]
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from distkeras.study.validation import validation_table


def _ok(records: Sequence[dict]) -> list[dict]:
    return [r for r in records if r.get("status") == "ok" and r.get("epochs")]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = [x for x in values if x is not None]
    if not v:
        return float("nan"), float("nan")
    return float(np.mean(v)), float(np.std(v))


def group(records, *keys) -> dict[tuple, list[dict]]:
    """The records by the values of ``keys``: {(values…): records}."""
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


def finished_runs(records: Sequence[dict]) -> list[dict]:
    """The runs that finished, labelled as the report names them (``label @network`` when the
    measured runs span several networks): what the tables and figures are drawn from."""
    return _ok(_networks(records))


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
    groups = group([{**r, "base": _compressed(r)[0], "compression": _compressed(r)[1],
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
    for (label, workers, window), runs in sorted(group(ok, "label", "num_workers", "window").items(),
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
    for label, runs in group(rows, "label").items():
        by_workers = {r["num_workers"]: r["steady_epoch_seconds"] for r in runs}
        single = [r for r in rows if r["algorithm"] == "single"      # measured, or simulated
                  and (r["simulated"], r["network"]) == (runs[0]["simulated"],   # alike
                                                         runs[0]["network"])]
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
