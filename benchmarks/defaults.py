"""Every trainer at its own defaults, given a model compiled the way a Keras user compiles it
(Adam at 1e-3), against plain ``model.fit`` on the same rows and epochs: the accuracy gap on
held-out data, on three problems, in one run.

- ``hlf``: the HLF classifier on a generated Delphes-like sample (ROOT → features, cached in
  ``--cache``), 14 standardised features, 3 classes;
- ``digits``: scikit-learn's bundled 8×8 digits (1,797 images, 10 classes), an MLP;
- ``scales``: 10 features spanning six orders of magnitude, 3 classes, a model with
  BatchNormalization and Dropout (non-trainable state, the data-parallel trap).

Each trainer trains on ``--workers`` workers with ``batch_size`` per worker and the same epochs
as ``model.fit``; the target is a gap of at most 2 points. ``--repeats`` runs each comparison
with other seeds (the split, the initial weights, the shuffles) and prints the mean gap: the
digits' 360 test images alone put ±1.6 points of noise on one run.

    python benchmarks/defaults.py [--problems hlf,digits,scales] [--trainers ADAG,ARSGD]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from distkeras.algorithms import trainer_specs  # noqa: E402  (no TensorFlow import)

#: every trainer the registry knows, SingleTrainer (the one-worker baseline) first
TRAINERS = sorted((spec.name for _, spec in trainer_specs()), key=lambda n: n != "SingleTrainer")
TARGET = 0.02


def hlf_problem(spark, cache: str):
    """(train x, y), (test x, y) of the HLF features of a generated sample (cached)."""
    from distkeras import pipeline
    from distkeras.pipeline.data import load_split

    features = os.path.join(cache, "features")
    if not os.path.exists(os.path.join(features, "features.json")):
        sample = os.path.join(cache, "sample")
        pipeline.generate_sample(sample, 3000, seed=7)
        events = os.path.join(cache, "events.parquet")
        pipeline.ingest_sample(spark, pipeline.sample_labels(sample), events)
        pipeline.make_features(spark, events, features, hlf_only=True)
    train, test = load_split(spark, features)
    return _arrays(train, "hlf"), _arrays(test, "hlf")


def _arrays(df, column: str):
    rows = df.select(column, "label").toPandas()
    return np.stack(rows[column].to_numpy()).astype("float32"), rows["label"].to_numpy()


def digits_problem(seed: int = 0):
    from distkeras.datasets.digits import digits_arrays

    x, y = digits_arrays()
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    cut = int(0.8 * len(y))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def scales_problem(seed: int = 0, n: int = 6000, dim: int = 10, classes: int = 3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    y = rng.integers(0, classes, n)
    scales = np.logspace(-2, 4, dim)
    x = ((centres[y] + rng.normal(size=(n, dim)) * 1.3) * scales + scales).astype("float32")
    cut = 5000
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def build(problem: str, dim: int, classes: int):
    import keras

    from distkeras.models import hlf_classifier

    if problem == "hlf":
        model = hlf_classifier(dim, classes, compile=False)
    elif problem == "digits":
        from distkeras.datasets.digits import digits_mlp

        model = digits_mlp()
    else:
        model = keras.Sequential([
            keras.Input((dim,)), keras.layers.BatchNormalization(),
            keras.layers.Dense(32, activation="relu"), keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.2), keras.layers.Dense(classes, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def accuracy(predict, test) -> float:
    x, y = test
    return float((np.asarray(predict(x)).argmax(axis=1) == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="hlf,digits,scales")
    ap.add_argument("--trainers", default=",".join(TRAINERS))
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", default="/tmp/distkeras-bench-defaults")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from distkeras.spark import session

    spark = session("local[2]", app_name="bench-defaults")
    print(f"{args.workers} workers, batch {args.batch_size} per worker, {args.epochs} epochs, "
          f"Adam 1e-3 compiled into the model, {args.repeats} seed(s); gap = trainer - "
          f"model.fit, mean over the seeds (target >= -{TARGET:.2f})")
    print(f"{'problem':>7} {'trainer':>16} {'accuracy':>8} {'keras':>7} {'gap':>7} "
          f"{'gaps':>22} {'s':>6}")
    misses = []
    for problem in args.problems.split(","):
        results = {name: [] for name in args.trainers.split(",")}
        references = []
        for seed in range(args.repeats):
            train, test = (hlf_problem(spark, args.cache) if problem == "hlf"
                           else digits_problem(seed) if problem == "digits"
                           else scales_problem(seed))
            references.append(compare(spark, problem, train, test, seed, args, results))
        keras_acc = float(np.mean(references))
        for name, runs in results.items():
            accs = [a for a, _ in runs]
            gaps = [a - k for a, k in zip(accs, references)]
            gap = float(np.mean(gaps))
            if gap < -TARGET:
                misses.append(f"{problem}/{name}")
            print(f"{problem:>7} {name:>16} {np.mean(accs):>8.3f} {keras_acc:>7.3f} {gap:>+7.3f} "
                  f"{' '.join(f'{g:+.3f}' for g in gaps):>22} "
                  f"{np.mean([s for _, s in runs]):>6.1f}", flush=True)
    print(f"beyond the {TARGET:.2f} target: {', '.join(misses) if misses else 'none'}")
    spark.stop()


def compare(spark, problem, train, test, seed, args, results) -> float:
    """model.fit's accuracy on one seed; each trainer's (accuracy, seconds) into ``results``."""
    import keras

    import distkeras as dk
    from distkeras.spark import arrays_to_dataframe

    dim, classes = train[0].shape[1], int(train[1].max()) + 1
    keras.utils.set_random_seed(seed + 1)
    reference = build(problem, dim, classes)
    reference.fit(train[0], train[1], batch_size=args.batch_size, epochs=args.epochs, verbose=0)
    keras_acc = accuracy(lambda x: reference.predict(x, verbose=0), test)
    df = arrays_to_dataframe(spark, {"features": train[0], "label": train[1]},
                             partitions=args.workers).cache()
    df.count()
    for name in results:
        keras.utils.set_random_seed(seed + 1)
        extra = {} if name == "SingleTrainer" else {"num_workers": args.workers}
        trainer = getattr(dk.trainers, name)(build(problem, dim, classes),
                                             batch_size=args.batch_size, epochs=args.epochs,
                                             seed=seed, verbose=False, **extra)
        t0 = time.perf_counter()
        fitted = trainer.fit(df)
        results[name].append((accuracy(lambda x: fitted.predict([x]), test),
                              time.perf_counter() - t0))
    df.unpersist()
    return keras_acc


if __name__ == "__main__":
    sys.exit(main())
