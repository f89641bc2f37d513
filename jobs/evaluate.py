"""Score a test Parquet with one or more models saved by jobs/train.py and compare them: writes
OUTPUT/metrics.json (accuracy, per-class AUC, confusion matrix, training time per model),
OUTPUT/roc_<model>.png and OUTPUT/results.md, and prints the table.

Examples::

    spark-submit jobs/evaluate.py --model out/models/adag --test out/features/test.parquet \\
        --output out/eval
    python jobs/evaluate.py --model m/adag --model m/keras --test f/test.parquet --output cmp
"""
from __future__ import annotations

import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    from distkeras.pipeline.cli import add_spark_args

    ap = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, metavar="DIR",
                    help="model directory written by jobs/train.py; repeatable")
    ap.add_argument("--test", required=True, help="test Parquet (same columns as for training)")
    ap.add_argument("--output", required=True, help="directory for metrics, plots and table")
    ap.add_argument("--title", default="Test-split evaluation",
                    help="heading of results.md (default: %(default)s)")
    add_spark_args(ap)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from distkeras import pipeline
    from distkeras.pipeline.cli import setup_logging, start_session

    setup_logging(args.log_level)
    runs = [pipeline.load_run(path) for path in args.model]   # bad paths fail before Spark
    spark = start_session(args.master, "distkeras-evaluate",
                          environment=args.environment)
    try:
        test_df = spark.read.parquet(args.test)
        counts = pipeline.class_counts(test_df)
        notes = [f"test split {args.test}: {sum(counts.values())} rows, classes {counts}, "
                 f"majority-class rate {pipeline.majority_rate(counts):.4f}"]
        results = pipeline.evaluate_runs(runs, test_df, args.output, title=args.title,
                                         notes=notes)
    finally:
        spark.stop()
    print(pipeline.results_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
