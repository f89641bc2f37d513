"""Where the decentralised and all-reduce algorithms spend their time, against SingleTrainer.

For AR-SGD, D-PSGD, AD-PSGD and SwarmSGD, with and without SlowMo, on the HLF classifier's shape
(``small``: Dense 50-20-10, 14 inputs) and a 1M-parameter MLP (``large``), with 2 workers on ``--master``: samples/s in
steady state (epochs 2..N) and its ratio to SingleTrainer measured in the same run, epoch wall
time, and per worker the seconds computing, exchanging (communication, waits included) and
waiting for peers, as min/median/max over the workers. AD-PSGD's gossip runs behind the next
window's compute, so its epochs must be shorter than AR-SGD's for the same epochs.

Usage::

    python benchmarks/communication.py [--rows 60000] [--epochs 3] [--models small,large]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer_overhead import build, cached_frame, data  # noqa: E402

RUNS = [("SingleTrainer", {}), ("ARSGD", {}), ("DPSGD", {}), ("ADPSGD", {}),
        ("SwarmSGD", {"local_steps": 3}),
        ("SlowMo", {"base": "localsgd"}), ("SlowMo", {"base": "adpsgd", "average": False}),
        ("SlowMo", {"base": "swarmsgd", "average": False})]


def spread(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.min():.2f}/{np.median(v):.2f}/{v.max():.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=14)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models", default="small,large",
                        help="small: the HLF classifier's shape (2k parameters); large: 1M")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import distkeras as dk
    from distkeras.spark import session

    spark = session(args.master, app_name="bench-communication")
    x, y = data(args.rows, args.dim)
    df = cached_frame(spark, x, y)
    common = dict(loss="categorical_crossentropy", worker_optimizer="adam", learning_rate=1e-3,
                  batch_size=args.batch_size, epochs=args.epochs, verbose=False)
    # warm-up: the Python workers import TensorFlow once (worker reuse)
    dk.trainers.ADPSGD(build("small", args.dim), num_workers=args.workers, **common).fit(df)

    print(f"rows={args.rows} epochs={args.epochs} batch={args.batch_size} workers={args.workers} "
          f"master={args.master} load={os.getloadavg()[0]:.2f}")
    print("per-worker seconds as min/median/max over the workers; steady = epochs 2..N")
    header = (f"{'model':>5} {'algorithm':<22} {'samples/s':>10} {'x Single':>8} {'epoch s':>8} "
              f"{'compute s':>16} {'exchange s':>16} {'wait s':>16} {'exch.':>6} {'acc':>5}")
    for kind in args.models.split(","):
        print(header)
        single_rate = None
        for name, params in RUNS:
            model = build(kind, args.dim)
            kw = dict(common, **params)
            if name != "SingleTrainer":
                kw["num_workers"] = args.workers
            fitted = getattr(dk.trainers, name)(model, **kw).fit(df)
            samples = sum(w["samples"] for w in fitted.history.workers)
            epochs = fitted.history["epoch_seconds"]
            steady = epochs[1:] or epochs
            rate = samples / args.epochs / np.mean(steady)
            single_rate = single_rate or rate
            accuracy = float((fitted.predict([x[:5000]]).argmax(1) == y[:5000]).mean())
            label = name + ("" if not params else
                            "(" + ",".join(f"{v}" for v in params.values()) + ")")
            workers = fitted.history.workers
            print(f"{kind:>5} {label:<22} {rate:>10.0f} {rate / single_rate:>8.2f} "
                  f"{np.mean(steady):>8.2f} {spread([w['compute_seconds'] for w in workers]):>16} "
                  f"{spread([w['exchange_seconds'] for w in workers]):>16} "
                  f"{spread([w['wait_seconds'] for w in workers]):>16} "
                  f"{int(np.mean([w['exchanges'] for w in workers])):>6} {accuracy:>5.3f}",
                  flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
