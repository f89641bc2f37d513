"""A measured guide for the communication window λ: samples/s and accuracy against λ for the
HLF classifier's size (``small``, ~2k parameters) and the 1M-parameter MLP (``large``), 2 workers
on 2 cores, each against SingleTrainer measured in the same run: on all cores (``wall/1``,
``steady/1``) and on one core (``steady/1c``: the issue's target, ADAG ×2 at the recommended λ
≥ 1.3 × SingleTrainer on one core each, steady).

A window is λ local steps in one compiled call, then one exchange. A small model's window is
short against the fixed cost of a call and an exchange (about 1.5 ms on loopback), so its
throughput grows with λ until the exchange no longer shows; the accuracy column says where the
staler, larger steps start to cost. Steady = epochs 2..N.

    python benchmarks/communication_window.py [--windows 4,12,32,64,128] [--trainers ADAG]
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    from trainer_overhead import build, cached_frame, data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", default="4,12,32,64,128")
    ap.add_argument("--trainers", default="ADAG")
    ap.add_argument("--models", default="small,large")
    # the small model's epochs need ~2M rows to last a second on one core: at 200k an epoch
    # took 0.1 s, and "steady" measured the epoch boundaries rather than the windows
    ap.add_argument("--rows", default="small=2000000,large=60000")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import distkeras as dk
    from distkeras.spark import session

    spark = session("local[2]", app_name="bench-window", conf={"spark.driver.memory": "4g"})
    rows = dict(item.split("=") for item in args.rows.split(","))
    common = dict(loss="categorical_crossentropy", worker_optimizer="adam", learning_rate=1e-3,
                  batch_size=args.batch_size, epochs=args.epochs, verbose=False)

    def run(cls, kind, df, test, **kw):
        t0 = time.perf_counter()
        fitted = cls(build(kind), **common, **kw).fit(df)
        wall = time.perf_counter() - t0
        samples = sum(w["samples"] for w in fitted.history.workers)
        steady = samples / args.epochs / np.mean(fitted.history["epoch_seconds"][1:])
        accuracy = float((fitted.predict([test[0]]).argmax(1) == test[1]).mean())
        return samples / wall, steady, accuracy

    print(f"2 workers on local[2], {args.epochs} epochs, batch {args.batch_size}; samples/s and "
          "held-out accuracy; ratios against SingleTrainer in the same run")
    print(f"{'model':>6} {'trainer':>8} {'λ':>5} | {'wall':>9} {'steady':>9} {'accuracy':>8} | "
          f"{'wall/1':>7} {'steady/1':>8} {'Δacc':>6} {'steady/1c':>9}")
    for kind in args.models.split(","):
        n = int(rows[kind])
        x, y = data(n, 14, 3)
        df = cached_frame(spark, x, y)
        test = data(n + 20_000, 14, 3)           # same centres, rows the training never saw
        test = (test[0][n:], test[1][n:])
        run(dk.trainers.SingleTrainer, kind, df, test)          # warm the Python workers
        base = run(dk.trainers.SingleTrainer, kind, df, test)
        print(f"{kind:>6} {'Single':>8} {'-':>5} | {base[0]:>9.0f} {base[1]:>9.0f} {base[2]:>8.3f} |")
        run(dk.trainers.SingleTrainer, kind, df, test, cores_per_worker=1)   # its own workers
        one = run(dk.trainers.SingleTrainer, kind, df, test, cores_per_worker=1)
        print(f"{kind:>6} {'Single1c':>8} {'-':>5} | {one[0]:>9.0f} {one[1]:>9.0f} {one[2]:>8.3f} |")
        for name in args.trainers.split(","):
            cls = getattr(dk.trainers, name)
            run(cls, kind, df, test, num_workers=2, communication_window=12)   # warm
            for window in (int(w) for w in args.windows.split(",")):
                r = run(cls, kind, df, test, num_workers=2, communication_window=window)
                print(f"{kind:>6} {name:>8} {window:>5} | {r[0]:>9.0f} {r[1]:>9.0f} {r[2]:>8.3f} | "
                      f"{r[0] / base[0]:>7.2f} {r[1] / base[1]:>8.2f} {r[2] - base[2]:>+6.3f} "
                      f"{r[1] / one[1]:>9.2f}")
        df.unpersist()
    spark.stop()


if __name__ == "__main__":
    main()
