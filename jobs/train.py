"""Train a topology classifier on a features Parquet (from jobs/features.py) with any distkeras
trainer, or with plain Keras model.fit in the driver (--trainer keras). Writes the fitted model
(distkeras.load_model(OUTPUT) reads it), OUTPUT/history.json (per-epoch metrics and
parameter-server statistics), OUTPUT/training.json (time, samples/s) and OUTPUT/history.png.

Examples::

    spark-submit --master spark://head:7077 jobs/train.py --train out/features/train.parquet \\
        --validation out/features/test.parquet --output out/models/adag --trainer ADAG --workers 8
    python jobs/train.py --train f/train.parquet --output m --model inclusive --trainer DOWNPOUR \\
        --epochs 3 --batch-size 128 --communication-window 5
    python jobs/train.py --train f/train.parquet --output m --trainer AEASGD --param rho=5
"""
from __future__ import annotations

import argparse
import json
import sys


def parse_args(argv=None) -> argparse.Namespace:
    from distkeras.pipeline.cli import add_spark_args, add_training_args

    ap = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="training Parquet (hlf/llf + label columns)")
    ap.add_argument("--validation", help="Parquet evaluated after every epoch (val_* curves)")
    ap.add_argument("--output", required=True, help="directory for the model, history and plot")
    ap.add_argument("--name", help="run name in logs and tables (default: 'TRAINER xWORKERS')")
    add_training_args(ap)
    ap.add_argument("--checkpoint-dir", default=None,
                    help="write what the run needs to resume here at every epoch end (a path or "
                         "any Hadoop filesystem URI); rerunning the same command after the "
                         "driver died resumes from the last completed epoch")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    add_spark_args(ap)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from distkeras import pipeline
    from distkeras.pipeline.cli import parse_params, setup_logging, start_session

    setup_logging(args.log_level)
    params = parse_params(args.param)
    if args.mlflow:
        params["mlflow"] = args.mlflow
    spark = start_session(args.master, "distkeras-train", num_workers=args.num_workers,
                          environment=args.environment)
    try:
        train_df = spark.read.parquet(args.train)
        val_df = spark.read.parquet(args.validation) if args.validation else None
        if args.trainer.lower() != pipeline.KERAS:
            pipeline.warm_up_workers(spark, args.num_workers)
        run = pipeline.train(train_df, args.model, args.trainer, num_workers=args.num_workers,
                             epochs=args.epochs, batch_size=args.batch_size,
                             learning_rate=args.learning_rate,
                             worker_optimizer=args.worker_optimizer,
                             communication_window=args.communication_window,
                             validation_df=val_df, name=args.name, verbose=not args.quiet,
                             **({"checkpoint_dir": args.checkpoint_dir}
                                if args.checkpoint_dir else {}), **params)
        pipeline.save_run(run, args.output)
    finally:
        spark.stop()
    print(json.dumps(run.info(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
