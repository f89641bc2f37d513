"""Cold start: the first ``fit`` of a fresh Spark session against a second, warm one.

Each measurement runs in its own process (a fresh JVM and fresh Python workers, as a user's
first fit, a study run on a new cluster, or a notebook back after Spark's idle Python workers
were stopped). In it: the Fashion-MNIST-shaped data set (60,000 x 784 float32, 10 classes,
generated) cached, then fit 1 (cold) and fit 2 (warm, same model and settings). Printed: both
wall times of ``fit``, the difference, and where each fit spent its time before the first
window ended: the model's construction before the fit (``build``: Keras' import and first
model on the driver, the user's cell before the fit, not timed as the fit), this process' cost
of fresh memory (``touch``: ms per 100 MB, the page faults a cold fit pays for its partition,
and for its windows on a backend that copies them), and ``history.startup`` (data checks, driver set-up, task start,
partition read, TensorFlow import and model build, first window with its XLA compilation) in
four variants: nothing hidden (``none``: no compilation cache on disk, no warm-up), the
compilation cache on disk (``cache``, the default: filled by the earlier runs, as on a machine
that trained this model before), the cache plus the warm-up that imports TensorFlow in the
workers during the data checks (``cache+warm-up``), and the cache plus ``distkeras.warm_up_workers(spark, n, wait=False)``
called right after the session is made, so that the import runs while the data set is made and
cached (``cache+early``: what a user does in a notebook's first cell). The warm fit reuses the
compiled replica its Python worker kept (``reused`` column) where Spark gives its task to that
worker.

Target: cold fit <= warm fit + 3 s.

    python benchmarks/cold_start.py [--trainer SingleTrainer] [--epochs 2] [--repeats 2]
                                    [--variants none cache cache+warm-up cache+early]
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
PHASES = ("build_seconds", "touch_ms_per_100mb", "preflight_seconds", "submitted_after_seconds",
          "task_start_seconds", "read_seconds", "setup_seconds", "first_window_seconds",
          "reused_replicas")
VARIANTS = ("none", "cache", "cache+warm-up", "cache+early")


def measure(trainer: str, epochs: int, warm_up: bool, workers: int, early: bool = False) -> dict:
    """In this (fresh) process: cold fit, then warm fit; their seconds and start-up phases."""
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import distkeras as dk
    from distkeras.driver import fit as fit_module
    from distkeras.spark import session
    from trainer_overhead import build, cached_frame, data

    fit_module.WARM_UP = warm_up
    touch = first_touch_ms_per_100mb()
    spark = session("local[2]", app_name="bench-cold-start", conf={"spark.driver.memory": "4g"})
    cls = getattr(dk.trainers, trainer)
    if early:
        dk.warm_up_workers(spark, 1 if cls is dk.trainers.SingleTrainer else workers, wait=False)
    x, y = data(60_000, 784, 10)
    df = cached_frame(spark, x, y)
    kw = {} if cls is dk.trainers.SingleTrainer else {"num_workers": workers}
    out = {}
    for which in ("cold", "warm"):
        t0 = time.perf_counter()
        model = build("fashion")       # the user's cell before the fit: Keras' import, first model
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        fitted = cls(model, loss="categorical_crossentropy", worker_optimizer="adam",
                     learning_rate=1e-3, batch_size=128, epochs=epochs, verbose=False,
                     metrics=["accuracy"], **kw).fit(df)
        out[which] = {"seconds": time.perf_counter() - t0, "build_seconds": built,
                      "touch_ms_per_100mb": touch, **fitted.history.startup,
                      "accuracy": float(np.asarray(fitted.history["accuracy"][-1]))}
    spark.stop()
    return out


def first_touch_ms_per_100mb() -> float:
    """Milliseconds to write 100 MB of memory new to this process: the page faults every cold
    fit pays for its partition, its windows and its tensors (0.35 ms/MB on the development VM
    right after another process freed memory, 8-10 ms/MB once its host had taken it back)."""
    import numpy as np

    t0 = time.perf_counter()
    np.ones(25_000_000, np.float32)
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trainer", default="SingleTrainer")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.trainer, args.epochs, "warm-up" in args.child,
                                             args.workers, "early" in args.child)), flush=True)
        return
    results: dict[str, list] = {variant: [] for variant in args.variants}
    for _ in range(args.repeats):          # interleaved: the machine's noise hits all alike
        for variant in args.variants:
            env = {**os.environ, "DISTKERAS_COMPILATION_CACHE": "off"} if variant == "none" \
                else {k: v for k, v in os.environ.items() if k != "DISTKERAS_COMPILATION_CACHE"}
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--trainer",
                                  args.trainer, "--epochs", str(args.epochs), "--workers",
                                  str(args.workers)], capture_output=True, text=True, timeout=900,
                                 env=env)
            lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
            if not lines:
                raise SystemExit(out.stderr[-3000:])
            results[variant].append(json.loads(lines[0][len("RESULT "):]))
    print(f"{args.trainer}{'' if args.trainer == 'SingleTrainer' else f' x{args.workers}'}, "
          f"Fashion-MNIST-shaped MLP, {args.epochs} epochs, local[2]; median of {args.repeats}")
    print(f"{'variant':>13} {'fit':>5} {'seconds':>8} "
          + " ".join(f"{p.replace('_seconds', ''):>14}" for p in PHASES))
    for variant in args.variants:
        for which in ("cold", "warm"):
            rows = [r[which] for r in results[variant]]
            med = lambda key: sorted(r.get(key) or 0.0 for r in rows)[len(rows) // 2]  # noqa: E731
            print(f"{variant:>13} {which:>5} {med('seconds'):>8.2f} "
                  + " ".join(f"{med(p):>14.2f}" for p in PHASES))
        gap = sorted(r["cold"]["seconds"] - r["warm"]["seconds"] for r in results[variant])
        print(f"{variant:>13}  cold - warm = {gap[len(gap) // 2]:.2f} s (target <= 3 s)")


if __name__ == "__main__":
    main()
