"""Benchmark: the same hyperparameter trials run by ``distkeras.tuning.GridSearch`` on a local
Spark (2 slots: two trials at once, one TF thread each) and by a sequential Python loop in one
process (plain Keras, TensorFlow's default threads), in one run. Prints trials/s and speedup,
over the plain loop (``model.fit`` as users write it) and over a loop compiled with the trials'
own ``steps_per_execution`` (what remains is Spark's scheduling against TF's threads).

Each side runs ``--repeats`` times in rotating order and the fastest run of each is compared
(the machine is shared, its load drifts). The Spark Python workers are warmed up first (one tiny search imports TensorFlow in them), as the
sequential loop's process has TensorFlow imported too: the figure compares scheduling, not
interpreter start-up. Both sides train the same models on the same hold-out split.

    SPARK_LOCAL_IP=127.0.0.1 python benchmarks/tuning.py            # 8 trials, local[2]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DIM, CLASSES = 32, 3


def build(params):
    import keras

    layers = [keras.Input((DIM,))]
    layers += [keras.layers.Dense(u, activation="relu") for u in params["hidden"]]
    layers.append(keras.layers.Dense(CLASSES, activation="softmax"))
    return keras.Sequential(layers)


def sequential(candidates, x, y, search, steps_per_execution=1) -> list[dict]:
    """The baseline: the same trials, one after the other, plain Keras in this process
    (``steps_per_execution=1``, Keras' default, unless told otherwise)."""
    import keras

    from distkeras.tuning.folds import holdout
    from distkeras.tuning.trial import make_optimizer

    train, val = holdout(len(y), search.validation_fraction, search.seed)
    onehot = np.eye(CLASSES, dtype=np.float32)[y]
    out = []
    for i, params in enumerate(candidates):
        keras.backend.clear_session()
        keras.utils.set_random_seed(search.seed + i)
        model = build(params)
        model.compile(optimizer=make_optimizer("adam", params["learning_rate"]),
                      loss="categorical_crossentropy", metrics=["accuracy"],
                      steps_per_execution=steps_per_execution)
        hist = model.fit(x[train], onehot[train], validation_data=(x[val], onehot[val]),
                         epochs=search.defaults["epochs"], batch_size=params["batch_size"],
                         verbose=0)
        out.append({"val_accuracy": hist.history["val_accuracy"][-1]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--master", default="local[2]", help="Spark master")
    p.add_argument("--rows", type=int, default=12000, help="training rows")
    p.add_argument("--epochs", type=int, default=4, help="epochs per trial")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs per side, rotating order; the fastest of each is compared")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    import pandas as pd

    from distkeras.spark import session
    from distkeras.tuning import GridSearch
    from tests.data import blobs

    spark = session(args.master, app_name="distkeras-bench-tuning")
    x, y = blobs(args.rows, dim=DIM, seed=0)
    df = spark.createDataFrame(pd.DataFrame({"features": list(x), "label": y}),
                               schema="features array<float>, label bigint").cache()
    df.count()
    space = {"hidden": [(64, 64), (128, 64)], "learning_rate": [1e-3, 3e-3],
             "batch_size": [32, 64]}           # 8 trials
    common = dict(loss="categorical_crossentropy", epochs=args.epochs, verbose=False,
                  cores_per_trial=1, seed=42)
    GridSearch(build, {"hidden": [(4,)], "batch_size": [64, 128]}, **{**common, "epochs": 1}
               ).fit(df.limit(200))           # warm-up: TF imported in both Python workers
    search = GridSearch(build, space, **common)
    candidates = search.candidates()

    load0 = os.getloadavg()[0]
    spark_times, seq_times, same_times = [], [], []
    sides = ("spark", "loop", "loop-same")
    for rep in range(args.repeats):          # rotate the order: the machine's load drifts
        for side in sides[rep % 3:] + sides[:rep % 3]:
            t0 = time.perf_counter()
            if side == "spark":
                result = search.fit(df)
                spark_times.append(time.perf_counter() - t0)
            elif side == "loop":
                seq = sequential(candidates, x, y, search)
                seq_times.append(time.perf_counter() - t0)
            else:
                sequential(candidates, x, y, search, search.steps_per_execution)
                same_times.append(time.perf_counter() - t0)
    spark_s, seq_s, same_s = min(spark_times), min(seq_times), min(same_times)

    n = len(candidates)
    ok = sum(t["status"] == "ok" for t in result.trials)
    by_trial = {t["trial"]: t for t in result.trials}
    diff = max(abs(by_trial[i]["metrics"]["val_accuracy"] - s["val_accuracy"])
               for i, s in enumerate(seq))
    mean_trial = np.mean([t["seconds"] for t in result.trials])
    print(f"trials: {n} ({ok} ok), {args.rows} rows x {DIM} features, {args.epochs} epochs, "
          f"master {args.master}, {os.cpu_count()} cores, load average {load0:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end (other processes share these cores)")
    print(f"spark search   : {spark_s:7.1f} s  {n / spark_s:.3f} trials/s  "
          f"(mean trial {mean_trial:.1f} s in its task)")
    print(f"sequential loop: {seq_s:7.1f} s  {n / seq_s:.3f} trials/s  (plain model.fit)")
    print(f"loop, same fit : {same_s:7.1f} s  {n / same_s:.3f} trials/s  (steps_per_execution="
          f"{search.steps_per_execution}, as the search's trials)")
    print(f"speedup        : {seq_s / spark_s:.2f}x over the plain loop, {same_s / spark_s:.2f}x "
          f"over the loop with the trials' fit settings (scheduling alone)  (best of "
          f"{args.repeats}; all runs: spark {[round(t, 1) for t in spark_times]} s, loop "
          f"{[round(t, 1) for t in seq_times]} s, same {[round(t, 1) for t in same_times]} s)")
    print(f"max |val_accuracy(spark) - val_accuracy(loop)| = {diff:.4f}")
    print(f"best: {result.best_params} val_accuracy={result.best_score:.4f}")
    spark.stop()


if __name__ == "__main__":
    main()
