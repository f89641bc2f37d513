"""distkeras against elephas, each side cold in its own process, on the same data and model.

The data: a Fashion-MNIST-shaped set (60,000 x 784 float32, 10 classes, plus 10,000 held out),
generated with overlapping classes so that accuracy is informative (about 0.85-0.9, like
Fashion-MNIST), or Debian's ``dataset-fashion-mnist`` files when installed. The model: MLP
784-512-256-10, Adam (1e-3), batch 128, 2 workers on ``local[2]``.

Each run is a fresh process (a new JVM, new Python workers: the user's first fit). In it the
training set is put into Spark and materialised, then the fit is timed, and accuracy is taken on
the held-out set. distkeras reads the DataFrame as a user makes it (``--frame parquet``, the
default): ``spark.read.parquet(...)`` of a file written once for all runs, cached, in the
partitions Spark's reader makes; ``--frame split`` gives it a frame already cached in one
partition per worker. elephas gets its ``to_simple_rdd`` of the numpy arrays, cached (its
documented input). Keras' ``model.fit`` runs on the same arrays in a fresh process of its own.
``--early-warm-up``: distkeras's runs call ``warm_up_workers(spark, n, wait=False)`` as the
session starts, as the docs tell a notebook's first cell to.

Printed per run: the seconds to place the data, the fit's seconds, accuracy; and the ratios the
issue asks for: ``AveragingTrainer`` <= 0.7x elephas synchronous at equal accuracy, ADAG <= 0.9x
elephas asynchronous at its accuracy, ``SingleTrainer`` <= 1.05x ``model.fit``.

elephas 7.3 pins numpy<2, pyspark<=4.0 and tensorflow<2.20, so it lives in its own
environment, given with ``--elephas-python``::

    python -m venv /tmp/elephas && /tmp/elephas/bin/pip install elephas==7.3 tensorflow-cpu==2.19.*
    python benchmarks/elephas_comparison.py --elephas-python /tmp/elephas/bin/python [--epochs 5]
                                            [--frame parquet|split] [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
OURS = ("AveragingTrainer", "DOWNPOUR", "ADAG", "SingleTrainer")
THEIRS = ("synchronous", "asynchronous")


def make_data(path: str) -> str:
    """Fashion-MNIST (Debian's files) or a set of its shape whose classes overlap."""
    sys.path.insert(0, HERE)
    from trainer_overhead import FASHION_FILES, fashion_data

    x, y, name = fashion_data()
    if name != "Fashion-MNIST":
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(10, 784)) * 0.09      # pairwise distance ~3.6 noise sds
        y = rng.integers(0, 10, 70_000)
        x = (centres[y] + rng.normal(size=(70_000, 784))).astype(np.float32)
        name = "generated 60000 x 784, 10 overlapping classes"
    else:
        name = f"Fashion-MNIST ({FASHION_FILES}), last 10,000 held out"
    np.savez(path, x=x[:60_000], y=y[:60_000], x_test=x[60_000:70_000], y_test=y[60_000:70_000],
             name=name)
    return name


def model():
    import keras

    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
                             keras.layers.Dense(256, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def run_ours(name: str, data: dict, epochs: int, parquet: str | None, early: bool) -> dict:
    import distkeras as dk
    from distkeras.spark import arrays_to_dataframe, session

    spark = session("local[2]", app_name=f"bench-{name}", conf={"spark.driver.memory": "6g"})
    workers = {} if name == "SingleTrainer" else {"num_workers": 2}
    if early:                            # a notebook's first cell (docs/training.md, start-up)
        dk.warm_up_workers(spark, workers.get("num_workers", 1), wait=False)
    t0 = time.perf_counter()
    if parquet:                          # as a user makes it: read, cached, Spark's partitions
        df = spark.read.parquet(parquet).cache()
    else:                                # one partition per worker, as for elephas
        df = arrays_to_dataframe(spark, {"features": data["x"], "label": data["y"]},
                                 partitions=2).cache()
    df.count()
    placed = time.perf_counter() - t0
    net = model()                        # built (and Keras imported) before the clock starts
    t0 = time.perf_counter()
    fitted = getattr(dk.trainers, name)(net, loss="categorical_crossentropy",
                                        worker_optimizer="adam", learning_rate=1e-3,
                                        batch_size=128, epochs=epochs, verbose=False,
                                        **workers).fit(df)
    seconds = time.perf_counter() - t0
    accuracy = float((fitted.predict([data["x_test"]]).argmax(1) == data["y_test"]).mean())
    spark.stop()
    return {"place_seconds": placed, "fit_seconds": seconds, "accuracy": accuracy}


def run_keras(data: dict, epochs: int) -> dict:
    """Keras' own ``model.fit`` on the arrays, in this fresh process."""
    import keras

    net = model()
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                metrics=["accuracy"])
    t0 = time.perf_counter()
    net.fit(data["x"], np.eye(10, dtype=np.float32)[data["y"]], batch_size=128, epochs=epochs,
            verbose=0)
    seconds = time.perf_counter() - t0
    accuracy = float((net.predict(data["x_test"], verbose=0).argmax(1) == data["y_test"]).mean())
    return {"place_seconds": 0.0, "fit_seconds": seconds, "accuracy": accuracy}


def run_theirs(mode: str, data: dict, epochs: int) -> dict:
    import keras
    from elephas.spark_model import SparkModel
    from elephas.utils.rdd_utils import to_simple_rdd
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName(f"bench-elephas-{mode}")
             .config("spark.driver.memory", "6g").getOrCreate())
    t0 = time.perf_counter()
    rdd = to_simple_rdd(spark.sparkContext, data["x"], np.eye(10, dtype=np.float32)[data["y"]])
    rdd = rdd.repartition(2).cache()
    rdd.count()
    placed = time.perf_counter() - t0
    net = model()
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                metrics=["accuracy"])
    t0 = time.perf_counter()
    spark_model = SparkModel(net, mode=mode, frequency="epoch", num_workers=2)
    spark_model.fit(rdd, epochs=epochs, batch_size=128, verbose=0, validation_split=0.0)
    seconds = time.perf_counter() - t0
    master = getattr(spark_model, "master_network", None) or spark_model._master_network
    accuracy = float((master.predict(data["x_test"], verbose=0).argmax(1)
                      == data["y_test"]).mean())
    spark.stop()
    return {"place_seconds": placed, "fit_seconds": seconds, "accuracy": accuracy}


def child(argv: list[str]) -> None:
    side, what, path, epochs, parquet, early = argv
    with np.load(path) as z:
        data = {k: z[k] for k in ("x", "y", "x_test", "y_test")}
    if side == "ours":
        out = run_ours(what, data, int(epochs), parquet or None, early == "early")
    elif side == "keras":
        out = run_keras(data, int(epochs))
    else:
        out = run_theirs(what, data, int(epochs))
    print("RESULT " + json.dumps(out), flush=True)


def write_parquet(path: str, data: str) -> None:
    """The training set as a Parquet file (``features`` list<float>, ``label``), row groups
    of 10,000 rows, as a feature job writes it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with np.load(data) as z:
        x, y = z["x"], z["y"]
    offsets = pa.array(np.arange(0, x.size + 1, x.shape[1], dtype=np.int32))
    table = pa.table({"features": pa.ListArray.from_arrays(offsets, pa.array(x.ravel())),
                      "label": pa.array(y.astype(np.int64))})
    pq.write_table(table, path, row_group_size=10_000)


def spawn(python: str, side: str, what: str, path: str, epochs: int, parquet: str = "",
          early: bool = False) -> dict:
    out = subprocess.run([python, __file__, "--child", side, what, path, str(epochs), parquet,
                          "early" if early else ""],
                         capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "PYTHONPATH": os.path.dirname(HERE),
                              "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python})
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"{side} {what} failed:\n{out.stderr[-4000:]}")
    return json.loads(lines[0][len("RESULT "):])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elephas-python", required=True,
                    help="interpreter of an environment with elephas installed (see above)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--frame", choices=("parquet", "split"), default="parquet",
                    help="distkeras's DataFrame: read from Parquet and cached as a user makes it "
                         "(default), or cached in one partition per worker")
    ap.add_argument("--early-warm-up", action="store_true",
                    help="distkeras's runs call warm_up_workers(spark, n, wait=False) right after "
                         "making the session, as the docs tell notebook users to")
    args = ap.parse_args()
    check = subprocess.run([args.elephas_python, "-c", "import elephas"], capture_output=True,
                           text=True)
    if check.returncode:
        raise SystemExit(f"{args.elephas_python} cannot import elephas: {check.stderr[-500:]}"
                         "\ninstall it as the docstring says (python -m venv ...).")
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.npz")
        name = make_data(path)
        parquet = ""
        if args.frame == "parquet":
            parquet = os.path.join(tmp, "train.parquet")
            write_parquet(parquet, path)
        for _ in range(args.repeats):      # interleaved: the machine's noise hits both alike
            for mode in THEIRS:
                results.setdefault(f"elephas {mode}", []).append(
                    spawn(args.elephas_python, "theirs", mode, path, args.epochs))
            results.setdefault("Keras model.fit", []).append(
                spawn(sys.executable, "keras", "fit", path, args.epochs))
            for trainer in OURS:
                results.setdefault(trainer, []).append(
                    spawn(sys.executable, "ours", trainer, path, args.epochs, parquet,
                          args.early_warm_up))
    med = {k: {f: float(np.median([r[f] for r in rows])) for f in rows[0]}
           for k, rows in results.items()}
    print(f"{name}; MLP 784-512-256-10, Adam 1e-3, batch 128, {args.epochs} epochs, 2 workers, "
          f"local[2]; each run cold in its own process; distkeras's frame: "
          f"{'read from Parquet and cached' if parquet else 'one cached partition per worker'}"
          f"{', workers warmed up as the session starts' if args.early_warm_up else ''}; "
          f"median of {args.repeats}")
    print(f"{'run':>22} {'place data s':>13} {'fit s':>7} {'accuracy':>9}  fit s of each run")
    for k, m in med.items():
        each = ", ".join(f"{r['fit_seconds']:.1f}" for r in results[k])
        print(f"{k:>22} {m['place_seconds']:>13.2f} {m['fit_seconds']:>7.2f} {m['accuracy']:>9.3f}"
              f"  {each}")
    sync, asyn = med["elephas synchronous"], med["elephas asynchronous"]
    avg = med["AveragingTrainer"]
    print(f"AveragingTrainer / elephas synchronous: {avg['fit_seconds'] / sync['fit_seconds']:.2f}x"
          f" (target <= 0.7), accuracy {avg['accuracy']:.3f} vs {sync['accuracy']:.3f}")
    for trainer in ("DOWNPOUR", "ADAG"):
        m = med[trainer]
        print(f"{trainer} / elephas asynchronous: {m['fit_seconds'] / asyn['fit_seconds']:.2f}x "
              f"(target <= 0.9 for ADAG), accuracy {m['accuracy']:.3f} vs {asyn['accuracy']:.3f}")
    single, keras_fit = med["SingleTrainer"], med["Keras model.fit"]
    print(f"SingleTrainer / Keras model.fit: "
          f"{single['fit_seconds'] / keras_fit['fit_seconds']:.2f}x (target <= 1.05), accuracy "
          f"{single['accuracy']:.3f} vs {keras_fit['accuracy']:.3f}")


if __name__ == "__main__":
    main()
