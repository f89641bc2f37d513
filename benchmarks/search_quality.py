"""Benchmark: which search finds the best HLF classifier for a budget, and how fast.

On the HLF features of a generated Delphes-like sample (``--events`` per class, cached under
``--work``), the same space (hidden layers, learning rate, batch size), the same trial function
(``distkeras.tuning.trial.run_trial``: the same model, split and seeds) and the same budget of
``--trials`` trials of up to ``--epochs`` epochs, on ``local[2]``:

* ``grid``: :class:`~distkeras.tuning.GridSearch` on a grid of about ``--trials`` points;
* ``random``: :class:`~distkeras.tuning.RandomSearch`;
* ``optuna-tpe``: :class:`~distkeras.tuning.OptunaSearch`, TPE with a median pruner;
* ``asha``: :class:`~distkeras.tuning.ASHA` (η = 3, rungs at 1, 3, 9 epochs);
* ``hyperopt``: hyperopt's ``fmin(tpe.suggest)`` with ``SparkTrials(parallelism=slots)``
  running ``run_trial`` on the same shipped data (skipped with a note if hyperopt is missing:
  ``pip install 'distkeras[bench]'``).

The Python workers are warmed up first (TensorFlow imported), then every search runs in the same
session. Printed per search: the best validation accuracy, the wall time, trials/s, the share of
trials pruned and the time until the search first reached the best random-search score (within
``--tolerance``), and the ratios against random search measured in this run. Targets: Optuna
with pruning reaches random search's best in <= 0.6x its time, and scores at least as well as
hyperopt's SparkTrials.

    SPARK_LOCAL_IP=127.0.0.1 python benchmarks/search_quality.py [--trials 24] [--epochs 9] \
        [--space narrow|wide]
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SPACES = {   # "narrow": where every configuration learns; "wide": as a user who does not know
    "narrow": {"hidden": [(16,), (32, 16), (50, 20, 10), (64, 32)], "lr": (1e-4, 3e-2),
               "batch_size": [32, 128]},
    "wide": {"hidden": [(4,), (16,), (32, 16), (50, 20, 10), (64, 32)], "lr": (1e-5, 0.3),
             "batch_size": [32, 128, 512]},
}
HIDDEN, LR_RANGE, BATCHES = (SPACES["narrow"][k] for k in ("hidden", "lr", "batch_size"))


def build(params):
    """The HLF classifier with ``params["hidden"]`` Dense ReLU layers (as jobs/tune.py)."""
    import keras

    x = inp = keras.Input((14,), name="hlf")
    for units in params["hidden"]:
        x = keras.layers.Dense(units, activation="relu")(x)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))


def hlf_data(spark, work: str, events: int):
    from distkeras import pipeline
    from distkeras.pipeline.data import load_split

    features = os.path.join(work, "features")
    if not os.path.exists(os.path.join(features, "train.parquet")):
        sample, parquet = os.path.join(work, "sample"), os.path.join(work, "events.parquet")
        pipeline.generate_sample(sample, events)
        pipeline.ingest_sample(spark, pipeline.sample_labels(sample), parquet)
        pipeline.make_features(spark, parquet, features, hlf_only=True)
    return load_split(spark, features)[0].cache()


def summary(name: str, trials: list[dict], started: float, wall: float, sign: float) -> dict:
    """Best score, the curve of (seconds, best so far) from the ``ended`` stamps (in
    ``sign * score``: higher is better), share pruned."""
    done = sorted((t for t in trials if t.get("ended")), key=lambda t: t["ended"])
    curve, best = [], -math.inf
    for t in done:
        score = t.get("score")
        if t["status"] == "ok" and score is not None and math.isfinite(score) \
                and sign * score > best:
            best = sign * score
            curve.append((t["ended"] - started, best))
    return {"search": name, "best": sign * best, "wall": wall, "trials": len(trials),
            "trials_per_s": len(trials) / wall,
            "pruned": sum(t["status"] == "pruned" for t in trials) / max(1, len(trials)),
            "failed": sum(t["status"] == "failed" for t in trials), "curve": curve}


def time_to(curve: list[tuple[float, float]], target: float) -> float:
    """Seconds until the best so far (signed) reached ``target`` (signed); NaN if never."""
    return next((t for t, score in curve if score >= target), math.nan)


def run_ours(name: str, search, df) -> dict:
    started = time.time()
    t0 = time.perf_counter()
    result = search.fit(df)
    return summary(name, result.trials, started, time.perf_counter() - t0,
                   1.0 if search.mode == "max" else -1.0)


def run_hyperopt(df, args, common: dict, seed: int) -> dict:
    import hyperopt
    from hyperopt import SparkTrials, fmin, hp, tpe

    from distkeras.spark import total_slots
    from distkeras.tuning import RandomSearch
    from distkeras.tuning.data import ship
    from distkeras.tuning.trial import run_trial

    ref = RandomSearch(build, space(args), n_trials=1, epochs=args.epochs, **common)
    sign = 1.0 if ref.mode == "max" else -1.0
    _, feed = ref.probe_model(ref.candidates())
    shipped = ship(df, feed, ref.features_col, ref.label_col)
    data = {"search_id": shipped.search_id, "broadcast": shipped.broadcast, "rows": shipped.rows}
    ended: list[dict] = []

    def objective(p):
        params = {"hidden": tuple(p["hidden"]), "learning_rate": float(p["learning_rate"]),
                  "batch_size": int(p["batch_size"])}
        trial = zlib.crc32(json.dumps(params, sort_keys=True).encode()) % 100_000
        result = run_trial(ref.trial_spec(trial, params), build, data, 1)
        if result["status"] != "ok":
            return {"status": hyperopt.STATUS_FAIL, "error": result["error"]}
        score = result["metrics"].get(args.metric, math.nan)
        if not math.isfinite(score):
            return {"status": hyperopt.STATUS_FAIL, "error": f"{args.metric} = {score}"}
        return {"status": hyperopt.STATUS_OK, "loss": -sign * score}

    hspace = {"hidden": hp.choice("hidden", HIDDEN),
              "learning_rate": hp.loguniform("learning_rate", *map(math.log, LR_RANGE)),
              "batch_size": hp.choice("batch_size", BATCHES)}
    trials = SparkTrials(parallelism=total_slots(df.sparkSession))
    started = time.time()
    t0 = time.perf_counter()
    try:
        fmin(objective, hspace, algo=tpe.suggest, max_evals=args.trials, trials=trials,
             rstate=np.random.default_rng(seed), show_progressbar=False)
    finally:
        shipped.destroy()
    wall = time.perf_counter() - t0
    for t in trials.trials:
        ok = t["result"].get("status") == hyperopt.STATUS_OK
        when = t.get("refresh_time")
        ended.append({"status": "ok" if ok else "failed",
                      "score": -sign * t["result"]["loss"] if ok else math.nan,
                      "ended": when.timestamp() if when is not None else None})
    return summary(f"hyperopt {hyperopt.__version__} SparkTrials", ended, started, wall, sign)


def space(args) -> dict:
    from distkeras.tuning import Choice, LogUniform

    return {"hidden": Choice(HIDDEN), "learning_rate": LogUniform(*LR_RANGE),
            "batch_size": Choice(BATCHES)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=24, help="trials per search")
    ap.add_argument("--epochs", type=int, default=9, help="epochs of a full trial")
    ap.add_argument("--events", type=int, default=3000, help="generated events per class")
    ap.add_argument("--work", default="/tmp/distkeras-search-quality", help="data cache")
    ap.add_argument("--metric", default="val_loss",
                    help="what ranks the trials (val_loss: smoother than val_accuracy on a "
                         "small validation split)")
    ap.add_argument("--repeats", type=int, default=3, help="seeds per search (medians reported)")
    ap.add_argument("--tolerance", type=float, default=0.0,
                    help="'reached' = within this much of random search's best score")
    ap.add_argument("--searches", default="grid,random,optuna-tpe,asha,hyperopt")
    ap.add_argument("--space", choices=sorted(SPACES), default="narrow",
                    help="narrow: every configuration learns; wide: learning rates from 1e-5 to "
                         "0.3, a 4-unit network, batches up to 512")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    global HIDDEN, LR_RANGE, BATCHES
    HIDDEN, LR_RANGE, BATCHES = (SPACES[args.space][k] for k in ("hidden", "lr", "batch_size"))
    logging.basicConfig(level=logging.WARNING)
    import optuna

    from distkeras import tuning
    from distkeras.spark import session

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spark = session("local[2]", app_name="search-quality")
    df = hlf_data(spark, args.work, args.events)
    print(f"HLF features: {df.count()} training rows; {args.trials} trials of <= {args.epochs} "
          f"epochs per search; {args.space} space; metric {args.metric}; {args.repeats} seeds; "
          "local[2]", flush=True)
    rates = max(2, round(args.trials / (len(HIDDEN) * len(BATCHES))))   # about --trials points
    grid = {"hidden": HIDDEN, "batch_size": BATCHES,
            "learning_rate": [float(v) for v in np.geomspace(*LR_RANGE, rates)]}
    per_seed: dict[str, list[dict]] = {}
    for seed in range(args.seed, args.seed + args.repeats):
        common = dict(features_col="hlf", label_col="label", loss="categorical_crossentropy",
                      metric=args.metric, seed=seed, verbose=False)
        if seed == args.seed:     # warm-up: TensorFlow imported in the Python workers
            tuning.RandomSearch(build, space(args), n_trials=2, epochs=1, **common).fit(df)
        makers = {
            "grid": lambda: tuning.GridSearch(build, grid, epochs=args.epochs, **common),
            "random": lambda: tuning.RandomSearch(build, space(args), n_trials=args.trials,
                                                  epochs=args.epochs, **common),
            "optuna-tpe": lambda: tuning.OptunaSearch(
                build, space(args), n_trials=args.trials, epochs=args.epochs,
                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=6),
                pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1),
                **common),
            "asha": lambda: tuning.ASHA(build, space(args), n_trials=args.trials, eta=3,
                                        min_epochs=1, max_epochs=args.epochs, **common),
        }
        for name in args.searches.split(","):
            if name == "hyperopt":
                try:
                    row = run_hyperopt(df, args, common, seed)
                except ImportError as exc:
                    print(f"hyperopt not run: {exc} (pip install 'distkeras[bench]')")
                    continue
            else:
                row = run_ours(name, makers[name](), df)
            per_seed.setdefault(row["search"], []).append(row)
            print(f"  seed {seed} {row['search']}: best {args.metric} {row['best']:.4f} in "
                  f"{row['wall']:.1f} s", flush=True)
    spark.stop()
    report(per_seed, args)


def report(per_seed: dict[str, list[dict]], args) -> None:
    """Medians over the seeds; times to random search's best of the same seed."""
    sign = 1.0 if "accuracy" in args.metric else -1.0
    randoms = per_seed.get("random", [])
    print(f"\nmedians over {args.repeats} seeds; 'to random's best' = seconds until the search's "
          f"best {args.metric} reached random search's best of the same seed"
          + (f" (within {args.tolerance:g})" if args.tolerance else ""))
    print(f"\n| search | trials | best {args.metric} | wall s | trials/s | pruned | "
          "s to random's best | reached (seeds) | time ratio vs random |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios: dict[str, float] = {}
    for name, rows in per_seed.items():
        reach, ratio = [], []
        for i, r in enumerate(rows):
            if i < len(randoms):
                target = sign * randoms[i]["best"] - args.tolerance
                t, base = time_to(r["curve"], target), time_to(randoms[i]["curve"], target)
                reach.append(t)
                ratio.append(t / base if base > 0 else math.nan)
        got = [t for t in reach if not math.isnan(t)]
        med = statistics.median
        ratios[name] = (med([x if not math.isnan(x) else math.inf for x in ratio]) if ratio
                        else math.nan)
        cells = [name, rows[0]["trials"], f"{med(r['best'] for r in rows):.4f}",
                 f"{med(r['wall'] for r in rows):.1f}",
                 f"{med(r['trials_per_s'] for r in rows):.3f}",
                 f"{med(r['pruned'] for r in rows):.0%}",
                 f"{med(got):.1f}" if got else "never", f"{len(got)}/{len(rows)}",
                 f"{ratios[name]:.2f}" if math.isfinite(ratios[name]) else "-"]
        print("| " + " | ".join(map(str, cells)) + " |")
    opt = per_seed.get("optuna-tpe")
    hyp = next((rows for name, rows in per_seed.items() if name.startswith("hyperopt")), None)
    if opt and randoms:
        ratio = ratios["optuna-tpe"]
        print(f"\nOptuna+pruning reaches random search's best in {ratio:.2f}x its time (median; "
              f"target <= 0.6): {'met' if ratio <= 0.6 else 'NOT met'}")
    if opt and hyp:
        wins = sum(sign * o["best"] >= sign * h["best"] for o, h in zip(opt, hyp))
        print(f"Optuna at least as good as SparkTrials at equal budget in {wins}/{len(opt)} seeds "
              f"(target: all): {'met' if wins == len(opt) else 'NOT met'}")


if __name__ == "__main__":
    main()
