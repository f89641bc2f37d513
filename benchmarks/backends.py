"""Keras backends side by side: per backend, SingleTrainer against that backend's own
``model.fit``, ADAG x2 and ARSGD x2 against SingleTrainer, and the fixed cost of one window call
(the number that limits small models and the algorithms that exchange every step).

Each backend runs in a process of its own (``KERAS_BACKEND`` is read once, at Keras' import) with
its own local SparkSession, whose Python workers inherit the backend; every ratio is taken
within one backend's process, so only ratios are compared across backends (the machine is
shared and noisy).

- *wall*: all samples / the whole call (data checks, task launch, tracing and compilation
  included: what a short run costs); *steady*: samples per epoch / mean time of epochs 2..N.
- ``model.fit`` runs with ``jit_compile=True`` on TensorFlow and JAX (XLA, as distkeras' windows
  do), eagerly on PyTorch (distkeras' default there: torch.compile measured slower).
- *window ms*: one compiled window call of the replica in this process, HLF-sized MLP, batch
  32, for λ = 1 and λ = 12 steps (median of 50); the exchange after it is backend-neutral numpy.

    python benchmarks/backends.py [--backends tensorflow,jax,torch] [--rows 60000] [--epochs 3]
        [--models hlf,fashion,1m] [--python jax=.venv-backends/bin/python,torch=...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# (inputs, classes, hidden widths, batch size)
MODELS = {"hlf": (14, 3, [50, 20], 32), "fashion": (784, 10, [512, 256], 128),
          "1m": (14, 3, [1024, 768, 256], 128)}
TRAINERS = [("SingleTrainer", 1), ("ADAG", 2), ("ARSGD", 2)]


def build(kind: str):
    from trainer_overhead import mlp

    return mlp(*MODELS[kind][:3])


def measure(args) -> dict:
    """In this process (one backend): every figure of the table, as a dict."""
    import keras

    import distkeras as dk
    from distkeras import backends
    from distkeras.spark import session
    from trainer_overhead import cached_frame, data, epoch_times, steady

    backend = backends.current()
    backend.setup()
    spark = session(args.master, app_name=f"bench-backends-{backend.name}",
                    conf={"spark.driver.memory": "4g"})
    out = {"backend": backend.name, "models": {}, "window_ms": window_cost(backend)}

    for kind in args.models.split(","):
        dim, classes, _, batch = MODELS[kind]
        x, y = data(args.rows, dim, classes)
        df = cached_frame(spark, x, y)
        common = dict(loss="categorical_crossentropy", worker_optimizer="adam",
                      learning_rate=1e-3, batch_size=batch, epochs=args.epochs, verbose=False,
                      metrics=["accuracy"])
        dk.trainers.SingleTrainer(build(kind), **{**common, "epochs": 1}).fit(df)  # workers warm
        dk.trainers.ADAG(build(kind), num_workers=2, **{**common, "epochs": 1}).fit(df)
        model = build(kind)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=backend.name != "torch")
        times = epoch_times()
        t0 = time.perf_counter()
        history = model.fit(x, y, batch_size=batch, epochs=args.epochs, verbose=0,
                            callbacks=[times])
        rows = {"fit": (len(y) * args.epochs / (time.perf_counter() - t0),
                        steady(len(y), times.seconds), history.history["accuracy"][-1])}
        for name, workers in TRAINERS:
            kw = dict(common, num_workers=workers) if workers > 1 else common
            t0 = time.perf_counter()
            fitted = getattr(dk.trainers, name)(build(kind), **kw).fit(df)
            seconds = time.perf_counter() - t0
            samples = sum(w["samples"] for w in fitted.history.workers)
            rows[name] = (samples / seconds, steady(samples / args.epochs,
                                                    fitted.history["epoch_seconds"]),
                          fitted.history["accuracy"][-1])
        out["models"][kind] = {"params": build(kind).count_params(), "rates": rows}
        df.unpersist()
    spark.stop()
    return out


def window_cost(backend) -> dict:
    """Median ms of one window call of the HLF-sized replica, λ = 1 and λ = 12 (batch 32)."""
    import keras

    from distkeras.executor.replica import Replica
    from distkeras.feed import Window
    from trainer_overhead import data

    model = build("hlf")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    replica = Replica(model, backend, "auto")
    out = {}
    for steps in (1, 12):
        x, y = data(steps * 32, 14)
        window = Window([x], [np.eye(3, dtype=np.float32)[y]]).steps(steps)
        replica.train(window)                                  # compile
        times = []
        for _ in range(50):
            t0 = time.perf_counter()
            replica.train(window)
            times.append(time.perf_counter() - t0)
        out[str(steps)] = 1e3 * float(np.median(times))
    return out


def table(results: list[dict], args) -> str:
    lines = [f"rows={args.rows} epochs={args.epochs} master={args.master}; samples/s, and "
             "ratios within each backend's process", "",
             "| backend | model | params | | fit | Single | ADAG x2 | ARSGD x2 | Single/fit | "
             "ADAG/Single | ARSGD/Single |", "|" + "---|" * 11]
    for r in results:
        for kind, m in r["models"].items():
            rates = m["rates"]
            for i, what in enumerate(("wall", "steady")):
                cells = " | ".join(f"{rates[k][i]:,.0f}" for k in ("fit", "SingleTrainer",
                                                                    "ADAG", "ARSGD"))
                single = rates["SingleTrainer"][i]
                lines.append(f"| {r['backend']} | {kind} | {m['params']:,} | {what} | {cells} | "
                             f"{single / rates['fit'][i]:.2f} | {rates['ADAG'][i] / single:.2f} "
                             f"| {rates['ARSGD'][i] / single:.2f} |")
            acc = " / ".join(f"{rates[k][2]:.3f}" for k in ("fit", "SingleTrainer", "ADAG",
                                                           "ARSGD"))
            lines.append(f"| {r['backend']} | {kind} | | accuracy | {acc} | | | | | | |")
    lines += ["", "| backend | window call, λ=1 (ms) | window call, λ=12 (ms) |", "|---|---|---|"]
    lines += [f"| {r['backend']} | {r['window_ms']['1']:.2f} | {r['window_ms']['12']:.2f} |"
              for r in results]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--models", default="hlf,fashion,1m")
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--python", default="", help="backend=interpreter,... for backends "
                        "installed in another environment (default: this interpreter)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args)), flush=True)
        return
    results = []
    pythons = dict(p.split("=", 1) for p in args.python.split(",") if p)
    for name in args.backends.split(","):
        argv = [pythons.get(name, sys.executable), os.path.abspath(__file__), "--child",
                "--models", args.models, "--rows", str(args.rows), "--epochs", str(args.epochs),
                "--master", args.master]
        done = subprocess.run(argv, env={**os.environ, "KERAS_BACKEND": name}, text=True,
                              capture_output=True)
        found = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
        if done.returncode or not found:
            print(f"{name}: failed\n{done.stderr[-3000:]}")
            continue
        results.append(json.loads(found[-1][7:]))
        print(f"{name}: done", flush=True)
    print(table(results, args))


if __name__ == "__main__":
    main()
