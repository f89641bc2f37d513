"""Trainer overhead: plain Keras ``fit`` vs SingleTrainer vs 2-worker ADAG / DOWNPOUR, same model,
same data, same epochs; samples/s and ratios measured in one run (the machine is shared and noisy,
so only the ratios are meaningful).

Two figures per run: *wall* = all samples / the whole ``fit`` call (data checks, task launch,
graph tracing and XLA compilation included: what a short run costs), and *steady* = samples per
epoch / mean time of epochs 2..N (what a long training run gets; needs ``--epochs`` >= 2).

Targets: SingleTrainer >= 0.9 x plain fit; 2 workers on 2 cores >= 1.5 x SingleTrainer.

    python benchmarks/trainer_overhead.py [--rows 200000] [--epochs 5] [--models small,large]
"""
from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build(kind: str, dim: int):
    import keras

    widths = {"small": [50, 20, 10], "large": [1024, 768, 256]}[kind]   # large: ~1M parameters
    layers = [keras.Input((dim,))] + [keras.layers.Dense(w, activation="relu") for w in widths]
    return keras.Sequential(layers + [keras.layers.Dense(3, activation="softmax")])


def data(rows: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim))
    y = rng.integers(0, 3, rows)
    return (centres[y] + rng.normal(size=(rows, dim))).astype(np.float32), y


def cached_frame(spark, x: np.ndarray, y: np.ndarray):
    """``features`` array<float> / ``label`` bigint DataFrame, cached and materialised."""
    import pandas as pd

    df = spark.createDataFrame(pd.DataFrame({"features": list(x), "label": y}),
                               schema="features array<float>, label bigint").cache()
    df.count()
    return df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=14)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--models", default="small,large")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import keras

    import distkeras as dk
    from distkeras.spark import session

    spark = session(args.master, app_name="bench-trainer-overhead")
    x, y = data(args.rows, args.dim)
    df = cached_frame(spark, x, y)
    common = dict(loss="categorical_crossentropy", worker_optimizer="adam", learning_rate=1e-3,
                  batch_size=args.batch_size, epochs=args.epochs, verbose=False)

    def run_trainer(cls, model, workers):
        """(wall, steady) samples/s of one fit."""
        kw = dict(common, num_workers=workers) if cls is not dk.trainers.SingleTrainer else common
        t0 = time.perf_counter()
        fitted = cls(model, **kw).fit(df)
        seconds = time.perf_counter() - t0
        samples = sum(w["samples"] for w in fitted.history.workers)
        return samples / seconds, steady(samples / args.epochs, fitted.history["epoch_seconds"])

    def steady(per_epoch, epoch_seconds):
        later = epoch_seconds[1:]
        return per_epoch / np.mean(later) if later else float("nan")

    class EpochTimes(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds, self.t = [], time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.seconds.append(now - self.t)
            self.t = now

    # warm-up: Python workers import TensorFlow once (worker reuse), as in any long session
    run_trainer(dk.trainers.ADAG, build("small", args.dim), 2)

    print(f"rows={args.rows} epochs={args.epochs} batch={args.batch_size} master={args.master}")
    print(f"{'model':>6} {'params':>9} {'':>6} | {'plain fit':>10} {'Single':>10} {'ADAG x2':>10} "
          f"{'DOWNPOUR x2':>11} | {'Single/fit':>10} {'ADAG/Single':>11} {'DOWN/Single':>11}")
    for kind in args.models.split(","):
        model = build(kind, args.dim)
        plain = keras.models.clone_model(model)
        plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        times = EpochTimes()
        t0 = time.perf_counter()
        plain.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0,
                  callbacks=[times])
        fit_rates = (args.rows * args.epochs / (time.perf_counter() - t0),
                     steady(args.rows, times.seconds))
        rates = [run_trainer(cls, model, workers) for cls, workers in
                 ((dk.trainers.SingleTrainer, 1), (dk.trainers.ADAG, 2), (dk.trainers.DOWNPOUR, 2))]
        for i, what in enumerate(("wall", "steady")):
            fit_rate, (single, adag, down) = fit_rates[i], (r[i] for r in rates)
            print(f"{kind:>6} {model.count_params():>9} {what:>6} | {fit_rate:>10.0f} {single:>10.0f} "
                  f"{adag:>10.0f} {down:>11.0f} | {single / fit_rate:>10.2f} {adag / single:>11.2f} "
                  f"{down / single:>11.2f}")
    print("samples/s; targets: Single/fit >= 0.9, ADAG/Single and DOWN/Single >= 1.5")
    spark.stop()


if __name__ == "__main__":
    main()
