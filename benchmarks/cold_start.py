"""Cold start: the first ``fit`` of a fresh Spark session against a second, warm one.

Each measurement runs in its own process (a fresh JVM and fresh Python workers, as a user's
first fit, a study run on a new cluster, or a notebook back after Spark's idle Python workers
were stopped). In it: the Fashion-MNIST-shaped data set (60,000 x 784 float32, 10 classes,
generated) cached, then fit 1 (cold) and fit 2 (warm, same model and settings). Printed: both
wall times, the difference, and where each fit spent its time before the first window ended
(``history.startup``: data checks, driver set-up, task start, partition read, TensorFlow import
and model build, first window with its XLA compilation), with and without the warm-up that
imports TensorFlow in the workers during the data checks.

Target: cold fit <= warm fit + 4 s.

    python benchmarks/cold_start.py [--trainer SingleTrainer] [--epochs 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PHASES = ("preflight_seconds", "submitted_after_seconds", "task_start_seconds", "read_seconds",
          "setup_seconds", "first_window_seconds")


def measure(trainer: str, epochs: int, warm_up: bool, workers: int) -> dict:
    """In this (fresh) process: cold fit, then warm fit; their seconds and start-up phases."""
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import distkeras as dk
    from distkeras.driver import fit as fit_module
    from distkeras.spark import session
    from trainer_overhead import build, cached_frame, data

    fit_module.WARM_UP = warm_up
    spark = session("local[2]", app_name="bench-cold-start", conf={"spark.driver.memory": "4g"})
    x, y = data(60_000, 784, 10)
    df = cached_frame(spark, x, y)
    cls = getattr(dk.trainers, trainer)
    kw = {} if cls is dk.trainers.SingleTrainer else {"num_workers": workers}
    out = {}
    for which in ("cold", "warm"):
        t0 = time.perf_counter()
        fitted = cls(build("fashion"), loss="categorical_crossentropy", worker_optimizer="adam",
                     learning_rate=1e-3, batch_size=128, epochs=epochs, verbose=False,
                     metrics=["accuracy"], **kw).fit(df)
        out[which] = {"seconds": time.perf_counter() - t0, **fitted.history.startup,
                      "accuracy": float(np.asarray(fitted.history["accuracy"][-1]))}
    spark.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trainer", default="SingleTrainer")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.trainer, args.epochs, args.child == "on",
                                             args.workers)), flush=True)
        return
    results = {"on": [], "off": []}
    for _ in range(args.repeats):          # interleaved: the machine's noise hits both alike
        for warm_up in ("off", "on"):
            out = subprocess.run([sys.executable, __file__, "--child", warm_up, "--trainer",
                                  args.trainer, "--epochs", str(args.epochs), "--workers",
                                  str(args.workers)], capture_output=True, text=True, timeout=900)
            lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
            if not lines:
                raise SystemExit(out.stderr[-3000:])
            results[warm_up].append(json.loads(lines[0][len("RESULT "):]))
    print(f"{args.trainer}{'' if args.trainer == 'SingleTrainer' else f' x{args.workers}'}, "
          f"Fashion-MNIST-shaped MLP, {args.epochs} epochs, local[2]; median of {args.repeats}")
    print(f"{'warm-up':>8} {'fit':>5} {'seconds':>8} " + " ".join(f"{p[:-8]:>14}" for p in PHASES))
    for warm_up in ("off", "on"):
        for which in ("cold", "warm"):
            rows = [r[which] for r in results[warm_up]]
            med = lambda key: sorted(r.get(key) or 0.0 for r in rows)[len(rows) // 2]  # noqa: E731
            print(f"{warm_up:>8} {which:>5} {med('seconds'):>8.2f} "
                  + " ".join(f"{med(p):>14.2f}" for p in PHASES))
        gap = sorted(r["cold"]["seconds"] - r["warm"]["seconds"] for r in results[warm_up])
        print(f"{warm_up:>8}  cold - warm = {gap[len(gap) // 2]:.2f} s (target <= 4 s)")


if __name__ == "__main__":
    main()
