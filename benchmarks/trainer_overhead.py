"""Trainer overhead: plain Keras ``fit`` vs SingleTrainer vs 2-worker ADAG / DOWNPOUR, same model,
same data, same epochs; samples/s and ratios measured in one run (the machine is shared and noisy,
so only the ratios are meaningful).

Two figures per run: *wall* = all samples / the whole ``fit`` call (data checks, task launch,
graph tracing and XLA compilation included: what a short run costs), and *steady* = samples per
epoch / mean time of epochs 2..N (what a long training run gets; needs ``--epochs`` >= 2).

Models: ``small`` (the HLF classifier's size, 14 inputs, ~2k parameters), ``large`` (the 1M MLP)
and ``fashion`` (Fashion-MNIST's MLP 784-512-256-10 on a generated set of its shape, 60,000 rows,
or the Debian ``dataset-fashion-mnist`` files when they are installed). Plain ``fit`` runs in this
process with TensorFlow's default threads (all cores); SingleTrainer's worker gets all the cores
of the local master (``cores_per_worker``), so both use the same threads.

Targets: SingleTrainer >= 0.95 x plain fit (wall time <= 1.05 x), epochs 2..N >= 1.0 x; 2 workers
on 2 cores >= 1.5 x SingleTrainer (small) and >= 1.8 x (large).

    python benchmarks/trainer_overhead.py [--rows 200000] [--epochs 5] [--models small,large,fashion]
"""
from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# (inputs, classes, hidden widths); large: ~1M parameters
MODELS = {"small": (14, 3, [50, 20, 10]), "large": (14, 3, [1024, 768, 256]),
          "fashion": (784, 10, [512, 256])}
FASHION_FILES = "/usr/share/dataset-fashion-mnist"   # Debian's dataset-fashion-mnist


def build(kind: str):
    return mlp(*MODELS[kind])


def mlp(dim: int, classes: int, widths: list[int]):
    """A ReLU MLP ``dim``-``widths``-``classes`` with a softmax output."""
    import keras

    layers = [keras.Input((dim,))] + [keras.layers.Dense(w, activation="relu") for w in widths]
    return keras.Sequential(layers + [keras.layers.Dense(classes, activation="softmax")])


def steady(per_epoch: float, epoch_seconds: list[float]) -> float:
    """Samples/s of epochs 2..N (the first pays start-up), NaN with one epoch."""
    later = epoch_seconds[1:]
    return per_epoch / np.mean(later) if later else float("nan")


def data(rows: int, dim: int, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    y = rng.integers(0, classes, rows)
    return (centres[y] + rng.normal(size=(rows, dim))).astype(np.float32), y


def fashion_data():
    """Fashion-MNIST's training set if Debian's package is installed, else one of its shape."""
    import gzip

    images = os.path.join(FASHION_FILES, "train-images-idx3-ubyte.gz")
    labels = os.path.join(FASHION_FILES, "train-labels-idx1-ubyte.gz")
    if os.path.exists(images) and os.path.exists(labels):
        with gzip.open(images) as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784) / np.float32(255)
        with gzip.open(labels) as f:
            y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
        return x.astype(np.float32), y, "Fashion-MNIST"
    x, y = data(60_000, 784, 10)
    return x, y, "generated 60000 x 784, 10 classes"


def epoch_times():
    """A Keras callback that records the seconds of each epoch of a ``fit`` (``.seconds``)."""
    import keras

    class EpochTimes(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds, self.t = [], time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.seconds.append(now - self.t)
            self.t = now

    return EpochTimes()


def cached_frame(spark, x: np.ndarray, y: np.ndarray):
    """``features`` array<float> / ``label`` bigint DataFrame, cached and materialised."""
    from distkeras.spark import arrays_to_dataframe

    df = arrays_to_dataframe(spark, {"features": x, "label": y}).cache()
    df.count()
    return df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--models", default="small,large,fashion")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--trainers", default="ADAG,DOWNPOUR", help="2-worker trainers to run")
    parser.add_argument("--overlap", choices=("on", "off", "both"), default="both",
                        help="their overlap_communication setting(s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import keras

    import distkeras as dk
    from distkeras.spark import session

    spark = session(args.master, app_name="bench-trainer-overhead",
                    conf={"spark.driver.memory": "4g"})   # Fashion-MNIST-sized frames
    sets = {}
    common = dict(loss="categorical_crossentropy", worker_optimizer="adam", learning_rate=1e-3,
                  batch_size=args.batch_size, epochs=args.epochs, verbose=False,
                  metrics=["accuracy"])

    def dataset(kind):
        if kind not in sets:
            dim, classes, _ = MODELS[kind]
            x, y, name = fashion_data() if kind == "fashion" else (*data(args.rows, dim, classes),
                                                                     "generated")
            sets[kind] = (x, y, cached_frame(spark, x, y), name)
        return sets[kind]

    def run_trainer(cls, kind, model, workers, **extra):
        """(wall samples/s, steady samples/s, last epoch's training accuracy) of one fit."""
        kw = dict(common, num_workers=workers) if cls is not dk.trainers.SingleTrainer else common
        df = dataset(kind)[2]
        t0 = time.perf_counter()
        fitted = cls(model, **kw, **extra).fit(df)
        seconds = time.perf_counter() - t0
        samples = sum(w["samples"] for w in fitted.history.workers)
        return (samples / seconds, steady(samples / args.epochs, fitted.history["epoch_seconds"]),
                fitted.history["accuracy"][-1])

    # warm-up: Python workers import TensorFlow once (worker reuse), as in any long session; one
    # pool of Python workers per thread count (1 worker: all cores, 2 workers: half each)
    run_trainer(dk.trainers.SingleTrainer, "small", build("small"), 1)
    run_trainer(dk.trainers.ADAG, "small", build("small"), 2)

    print(f"rows={args.rows} epochs={args.epochs} batch={args.batch_size} master={args.master}")
    runs = [("Single", dk.trainers.SingleTrainer, 1, {}),
            ("Single 1c", dk.trainers.SingleTrainer, 1, {"cores_per_worker": 1})]
    for name in args.trainers.split(","):
        for overlap in {"on": [True], "off": [False], "both": [True, False]}[args.overlap]:
            runs.append((f"{name} x2" + ("" if overlap else " seq"), getattr(dk.trainers, name), 2,
                         {"overlap_communication": overlap}))
    labels = [r[0] for r in runs]
    print(f"{'model':>7} {'params':>8} {'':>6} | {'fit':>7} " + " ".join(f"{l:>13}" for l in labels)
          + " | " + " ".join(f"{l:>18}" for l in ["Single/fit"] + [f"{l}/Single" for l in labels[1:]]))
    for kind in args.models.split(","):
        model = build(kind)
        x, y, _, name = dataset(kind)
        plain = keras.models.clone_model(model)
        plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        times = epoch_times()
        t0 = time.perf_counter()
        history = plain.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0,
                            callbacks=[times])
        fit_rates = (len(y) * args.epochs / (time.perf_counter() - t0),
                     steady(len(y), times.seconds), history.history["accuracy"][-1])
        rates = [run_trainer(cls, kind, model, workers, **kw) for _, cls, workers, kw in runs]
        for i, what in enumerate(("wall", "steady", "acc")):
            single = rates[0][i]
            cells = " ".join(f"{r[i]:>13.0f}" if i < 2 else f"{r[i]:>13.3f}" for r in rates)
            ratios = " ".join(f"{r[i] / single:>18.2f}" for r in rates[1:])
            first = f"{fit_rates[i]:>7.0f}" if i < 2 else f"{fit_rates[i]:>7.3f}"
            print(f"{kind:>7} {model.count_params():>8} {what:>6} | {first} {cells} | "
                  f"{single / fit_rates[i]:>18.2f} {ratios}")
    print("samples/s; " + "; ".join(f"{k}: {v[3]} ({len(v[1])} rows)" for k, v in sets.items()))
    print("Single 1c: SingleTrainer on 1 core (cores_per_worker=1); 'seq': overlap_communication="
          "False; acc: training accuracy of the last epoch")
    print("targets: Single/fit >= 0.95 wall (time <= 1.05x) and >= 1.0 steady; 2 workers/Single "
          ">= 1.5 (small), >= 1.8 (large)")
    spark.stop()


if __name__ == "__main__":
    main()
