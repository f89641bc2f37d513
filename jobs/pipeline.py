"""The whole topology-classifier pipeline on Spark: ROOT -> events Parquet -> features ->
training -> evaluation, with plots and a results table in OUT.

With no arguments (or --demo) it runs the demo: generates a Delphes-like sample (3000 events per
class: QCD, ttbar, W+jets), ingests it with uproot in the executors, computes the HLF features,
trains the HLF classifier with ADAG on 2 Spark workers, compares it with single-process Keras
model.fit and with SingleTrainer (same data, epochs and learning rate), and writes
OUT/results.md (accuracy, per-class AUC, training time, samples/s), OUT/roc_<run>.png,
OUT/history_<run>.png, OUT/metrics.json, OUT/summary.json, the models and the Parquet data.

Examples::

    python jobs/pipeline.py                              # the demo, into demo-out/
    python jobs/pipeline.py --events 20000 --workers 4 --epochs 10 --out big-out
    python jobs/pipeline.py --model inclusive --trainer DOWNPOUR --baselines none
    spark-submit --master spark://head:7077 jobs/pipeline.py --workers 16 --baselines none \\
        --label '/data/qcd/*.root=0' --label '/data/ttbar/*.root=1' --label '/data/wjets/*.root=2'
"""
from __future__ import annotations

import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    from distkeras.pipeline.cli import add_spark_args, add_training_args

    ap = argparse.ArgumentParser(prog="pipeline.py", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", action="store_true",
                    help="run the demo (the default; the other options scale it up)")
    ap.add_argument("--out", default="demo-out", help="output directory (default: %(default)s)")
    ap.add_argument("--events", type=int, default=3000,
                    help="events per class to generate (default: %(default)s)")
    ap.add_argument("--label", action="append", default=[], metavar="GLOB=INT",
                    help="use existing Delphes ROOT files instead of generating: files matching "
                    "GLOB get class INT (0 QCD, 1 ttbar, 2 W+jets); repeatable")
    ap.add_argument("--tree", default="Delphes", help="TTree name (default: %(default)s)")
    ap.add_argument("--muon", default="MuonTight",
                    help="muon collection, 'Muon' in some samples (default: %(default)s)")
    add_training_args(ap)
    ap.add_argument("--baselines", default="keras,SingleTrainer",
                    help="comma-separated runs to compare with on the same data and epochs: "
                    "'keras' (model.fit in the driver) and/or trainer names; 'none' for no "
                    "baseline (default: %(default)s)")
    ap.add_argument("--test-fraction", type=float, default=0.2,
                    help="test split fraction (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=42,
                    help="seed of the sample, split and models (default: %(default)s)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    add_spark_args(ap)
    args = ap.parse_args(argv)
    if args.events < 1 or args.num_workers < 1 or args.epochs < 1 or args.batch_size < 1:
        ap.error("--events, --workers, --epochs and --batch-size must be positive")
    return args


def config(args: argparse.Namespace):
    from distkeras.pipeline import PipelineConfig
    from distkeras.pipeline.cli import parse_params

    labels = None
    if args.label:
        labels = {}
        for item in args.label:
            pattern, sep, label = item.rpartition("=")
            if not sep or not pattern:
                raise SystemExit(f"--label expects GLOB=INT, got {item!r}")
            labels[pattern] = int(label)
    baselines = tuple(b.strip() for b in args.baselines.split(",")
                      if b.strip() and b.strip().lower() != "none")
    return PipelineConfig(out=args.out, events=args.events, labels=labels, tree=args.tree,
                          muon=args.muon, model=args.model, trainer=args.trainer,
                          num_workers=args.num_workers, epochs=args.epochs,
                          batch_size=args.batch_size, learning_rate=args.learning_rate,
                          worker_optimizer=args.worker_optimizer,
                          communication_window=args.communication_window,
                          algorithm_params=parse_params(args.param), mlflow=args.mlflow,
                          baselines=baselines,
                          test_fraction=args.test_fraction, seed=args.seed,
                          verbose=not args.quiet)


def main(argv=None) -> int:
    args = parse_args(argv)
    from distkeras.pipeline import run_pipeline
    from distkeras.pipeline.cli import setup_logging, start_session

    setup_logging(args.log_level)
    cfg = config(args)
    spark = start_session(args.master, "distkeras-pipeline", num_workers=args.num_workers,
                          environment=args.environment)
    try:
        summary = run_pipeline(spark, cfg)
    finally:
        spark.stop()
    print("\n" + summary["table"])
    print(f"total {summary['steps']['total']:.0f} s; outputs in {cfg.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
