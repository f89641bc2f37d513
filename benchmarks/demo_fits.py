"""The demo's fits in one session, against Keras' ``model.fit`` on the driver: a distkeras
trainer on the demo's HLF features (the train split cached, its Python workers warmed up,
validation on the test split and without), fitted twice: the session's first fit pays the
first data checks of the cached frame and the first window's trace; the second is what a
notebook's next fit gets. Target: ≤ 1.3 × ``model.fit``.

    python jobs/pipeline.py --out demo-out                   # once: the demo's features
    python benchmarks/demo_fits.py [--features demo-out/features] [--trainer ADAG] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--features", default="demo-out/features")
    ap.add_argument("--trainer", default="ADAG")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    import distkeras as dk
    from distkeras.pipeline import data, training
    from distkeras.spark import session

    spark = session("local[2]")
    train_df, test_df = (df.cache() for df in data.load_split(spark, args.features))
    dk.warm_up_workers(spark, args.workers)
    print(f"{args.trainer} x{args.workers} against model.fit, HLF classifier, {args.epochs} "
          f"epochs, local[2]; fit seconds")
    print(f"{'fit':>6} | {'validation':>10} | {'distkeras':>9} | {'model.fit':>9} | {'ratio':>5} | "
          f"{'data checks':>11} | {'first window':>12}")
    for which in ("first", "second"):
        keras_run = training.train_keras(train_df, "hlf", epochs=args.epochs,
                                         validation_df=test_df, verbose=0)
        for validation in (test_df, None):
            run = training.train(train_df, "hlf", args.trainer, num_workers=args.workers,
                                 epochs=args.epochs, validation_df=validation, verbose=False)
            startup = run.model.history.startup
            print(f"{which:>6} | {'test split' if validation is not None else 'none':>10} | "
                  f"{run.seconds:>9.2f} | {keras_run.seconds:>9.2f} | "
                  f"{run.seconds / keras_run.seconds:>5.2f} | "
                  f"{startup.get('preflight_seconds') or 0:>11.2f} | "
                  f"{startup.get('first_window_seconds') or 0:>12.2f}", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
