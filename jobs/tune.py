"""Tune the HLF topology classifier (hidden layer sizes, learning rate, batch size) on Spark.

Reads a Parquet file with an ``array<float>`` feature column (``hlf``, 14 values) and an integer
label column (``label``, 0..2), runs a grid, random, successive-halving, Optuna (TPE with
pruning), ASHA or Hyperband search with one trial per Spark task, and writes the trials table as
``results.csv`` and ``results.md`` (best first).

Examples::

    spark-submit jobs/tune.py --input hlf.parquet --output tune_out \
        --hidden 50,20,10 --hidden 32,16 --learning-rate 1e-3 --learning-rate 3e-3 \
        --batch-size 64 --batch-size 128 --epochs 5
    python jobs/tune.py --input hlf.parquet --output out --search random --trials 16 \
        --lr-range 1e-4 1e-2 --master local[4]
    python jobs/tune.py --input hlf.parquet --output out --search optuna --trials 30 \
        --lr-range 1e-4 1e-2 --epochs 10 --pruner median --storage sqlite:///hlf-tune.db
    python jobs/tune.py --input hlf.parquet --output out --search hyperband --trials 27 \
        --lr-range 1e-4 1e-2 --epochs 1 --max-epochs 9
"""
from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys

from distkeras.pipeline.cli import add_master_args  # noqa: E402 - no Spark or TensorFlow import

log = logging.getLogger("distkeras.jobs.tune")
HLF_DIM, NUM_CLASSES = 14, 3
SEARCHES = ("grid", "random", "halving", "optuna", "asha", "hyperband")
_LAYER_ARGS = ("hidden_units", "hidden_layers", "layer_sizes", "hidden", "units", "layers")


def layer_sizes(text: str) -> tuple[int, ...]:
    """``"50,20,10"`` -> ``(50, 20, 10)``."""
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"layer sizes must be integers like 50,20,10: {text!r}")
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"layer sizes must be positive integers: {text!r}")
    return sizes


def build_hlf(params: dict):
    """The HLF classifier with ``params["hidden"]`` layer sizes: ``distkeras.models.hlf_classifier``
    when it takes layer sizes, else the same MLP (Dense ReLU layers -> 3 softmax) built here."""
    import keras

    hidden = tuple(params["hidden"])
    try:
        from distkeras.models import hlf_classifier
        accepted = inspect.signature(hlf_classifier).parameters
        arg = next((a for a in _LAYER_ARGS if a in accepted), None)
    except ImportError:
        arg = None
    if arg is not None:
        kwargs = {arg: hidden}
        if "compile" in accepted:
            kwargs["compile"] = False
        return hlf_classifier(**kwargs)
    x = inp = keras.Input(shape=(HLF_DIM,), name="hlf")
    for units in hidden:
        x = keras.layers.Dense(units, activation="relu")(x)
    out = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="output")(x)
    return keras.Model(inp, out, name="hlf_classifier")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tune.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input", required=True, help="Parquet file or directory with the features")
    p.add_argument("--output", required=True,
                   help="directory for results.csv, results.md and best.json")
    p.add_argument("--features-col", default="hlf", help="array<float> feature column (14 values)")
    p.add_argument("--label-col", default="label", help="integer class column (0..2)")
    p.add_argument("--search", choices=SEARCHES, default="grid",
                   help="grid: every combination; random: --trials samples; halving: successive "
                        "halving over the grid (or --trials samples); optuna: --trials asked of "
                        "an Optuna sampler, pruned per epoch; asha / hyperband: asynchronous "
                        "successive halving / Hyperband over --trials samples")
    p.add_argument("--hidden", type=layer_sizes, action="append",
                   help="hidden layer sizes to try, e.g. 50,20,10 (repeat the option for several; "
                        "default 50,20,10 and 32,16)")
    p.add_argument("--learning-rate", type=float, action="append",
                   help="learning rate to try (repeatable; default 1e-3 and 3e-3)")
    p.add_argument("--lr-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="random/halving search: sample the learning rate log-uniformly instead")
    p.add_argument("--batch-size", type=int, action="append",
                   help="batch size to try (repeatable; default 128)")
    p.add_argument("--optimizer", default="adam", help="Keras optimizer name")
    p.add_argument("--epochs", type=int, default=3,
                   help="epochs per trial (grid/random/optuna); first-rung epochs for "
                        "halving/asha/hyperband")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="halving: cap on rung epochs; asha/hyperband: epochs of a full trial "
                        "(default 9 x --epochs)")
    p.add_argument("--eta", type=int, default=3,
                   help="halving/asha/hyperband: keep the best 1/eta per rung")
    p.add_argument("--trials", type=int, default=None,
                   help="random/optuna/asha/hyperband trials (default 10; optuna: in the study "
                        "in all); for halving, sample this many instead of the grid")
    p.add_argument("--sampler", choices=("tpe", "random", "cmaes"), default="tpe",
                   help="optuna: the sampler (seeded with --seed)")
    p.add_argument("--pruner", choices=("median", "hyperband", "asha", "none"), default="median",
                   help="optuna: the pruner")
    p.add_argument("--storage", default=None,
                   help="optuna: storage URL, e.g. sqlite:///tune.db (resumable, readable by "
                        "optuna-dashboard)")
    p.add_argument("--study-name", default="distkeras-hlf", help="optuna: the study's name")
    p.add_argument("--timeout", type=float, default=None,
                   help="optuna: no new trial after this many seconds")
    p.add_argument("--folds", type=int, default=None,
                   help="k-fold cross-validation (default: a hold-out split)")
    p.add_argument("--validation-fraction", type=float, default=0.2,
                   help="hold-out fraction when --folds is not given")
    p.add_argument("--sample-fraction", type=float, default=None,
                   help="tune on this fraction of the rows")
    p.add_argument("--metric", default="val_accuracy", help="metric that ranks the trials")
    p.add_argument("--mode", choices=("max", "min"), default=None,
                   help="max or min (default: min for losses, else max)")
    p.add_argument("--cores-per-trial", type=int, default=1,
                   help="TensorFlow threads per trial; trials at once = task slots // this")
    p.add_argument("--steps-per-execution", type=int, default=16,
                   help="batches per compiled TensorFlow call in a trial's fit (speed only)")
    p.add_argument("--seed", type=int, default=42, help="seeds sampling, splits and trials")
    add_master_args(p, "local[*]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def make_search(args):
    from distkeras import tuning

    hidden = args.hidden or [(50, 20, 10), (32, 16)]
    lrs = args.learning_rate or [1e-3, 3e-3]
    space = {"hidden": list(hidden), "batch_size": args.batch_size or [128],
             "optimizer": args.optimizer,
             "learning_rate": tuning.LogUniform(*args.lr_range) if args.lr_range else lrs}
    common = dict(features_col=args.features_col, label_col=args.label_col,
                  loss="categorical_crossentropy", metric=args.metric, mode=args.mode,
                  folds=args.folds, validation_fraction=args.validation_fraction,
                  sample_fraction=args.sample_fraction, cores_per_trial=args.cores_per_trial,
                  steps_per_execution=args.steps_per_execution, seed=args.seed, verbose=not args.quiet)
    if args.search == "grid":
        return tuning.GridSearch(build_hlf, space, epochs=args.epochs, **common)
    if args.search == "random":
        return tuning.RandomSearch(build_hlf, space, n_trials=args.trials or 10,
                                   epochs=args.epochs, **common)
    if args.search == "halving":
        return tuning.SuccessiveHalving(build_hlf, space, eta=args.eta, min_epochs=args.epochs,
                                        max_epochs=args.max_epochs, n_trials=args.trials, **common)
    if args.search in ("asha", "hyperband"):
        cls = tuning.ASHA if args.search == "asha" else tuning.Hyperband
        return cls(build_hlf, space, n_trials=args.trials or 10, eta=args.eta,
                   min_epochs=args.epochs, max_epochs=args.max_epochs or 9 * args.epochs, **common)
    return tuning.OptunaSearch(build_hlf, space, n_trials=args.trials or 10, epochs=args.epochs,
                               sampler=optuna_sampler(args), pruner=optuna_pruner(args),
                               storage=args.storage, study_name=args.study_name,
                               timeout=args.timeout, **common)


def optuna_sampler(args):
    import optuna

    return {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "cmaes": optuna.samplers.CmaEsSampler}[args.sampler](seed=args.seed)


def optuna_pruner(args):
    import optuna

    return {"median": optuna.pruners.MedianPruner,
            "hyperband": lambda: optuna.pruners.HyperbandPruner(reduction_factor=args.eta),
            "asha": lambda: optuna.pruners.SuccessiveHalvingPruner(reduction_factor=args.eta),
            "none": optuna.pruners.NopPruner}[args.pruner]()


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    search = make_search(args)       # invalid options fail here, before Spark starts
    import distkeras.spark

    from distkeras.pipeline import default_master

    spark = distkeras.spark.session(default_master(args.master, "local[*]"),
                                    app_name="distkeras-tune")
    try:
        df = spark.read.parquet(args.input)
        result = search.fit(df)
        os.makedirs(args.output, exist_ok=True)
        table = result.table.copy()
        table["hidden"] = [json.dumps(list(h)) if h is not None else None for h in table["hidden"]]
        table.to_csv(os.path.join(args.output, "results.csv"), index=False)
        with open(os.path.join(args.output, "results.md"), "w") as fh:
            fh.write(f"# HLF classifier tuning ({args.search}, metric {result.metric}, "
                     f"{result.mode})\n\n")
            fh.write(result.to_markdown())
        ok = [t for t in result.trials if t["status"] == "ok"]
        best = {"best_params": result.best_params, "best_score": result.best_score} if ok else {}
        with open(os.path.join(args.output, "best.json"), "w") as fh:
            json.dump({"metric": result.metric, "mode": result.mode, "trials": len(result.trials),
                       "ok": len(ok),
                       "pruned": sum(t["status"] == "pruned" for t in result.trials),
                       **best}, fh, indent=2, default=list)
        log.info("%s; tables in %s", result, args.output)
        return 0 if ok else 1
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
