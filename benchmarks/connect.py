"""What Spark Connect costs a fit, and where its services live: ADAG x2 on the HLF-sized MLP
from a Connect client with the services in the client (``services="here"``) and in a task of the
job (``services="task"``), against the same fit from a classic session (a subprocess: one Python
process cannot hold both kinds of session). Ratios against the classic fit, measured in one run.

    python benchmarks/connect.py [--rows 20000] [--epochs 5] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def fits(url: str, rows: int, epochs: int, repeats: int, modes: list[str]) -> dict:
    """Wall seconds of each mode's fits (the first, which starts the Python workers, apart)."""
    import keras
    import numpy as np

    import distkeras as dk
    from distkeras.spark import arrays_to_dataframe, session

    spark = session(url)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 14))
    y = rng.integers(0, 3, rows)
    x = (centres[y] + rng.normal(size=(rows, 14))).astype("float32")
    df = arrays_to_dataframe(spark, {"hlf": x, "label": y}, partitions=2).cache()
    df.count()

    def model():
        return keras.Sequential([keras.Input((14,)), keras.layers.Dense(50, activation="relu"),
                                 keras.layers.Dense(20, activation="relu"),
                                 keras.layers.Dense(3, activation="softmax")])

    out = {}
    for mode in modes:
        times, accuracy = [], None
        for _ in range(repeats + 1):
            trainer = dk.trainers.ADAG(model(), loss="categorical_crossentropy", num_workers=2,
                                       batch_size=64, epochs=epochs, features_col="hlf",
                                       verbose=False, services=mode)
            t0 = time.perf_counter()
            fitted = trainer.fit(df)
            times.append(time.perf_counter() - t0)
            accuracy = fitted.history["accuracy"][-1]
        out[mode] = {"first": times[0], "warm": min(times[1:]), "accuracy": accuracy}
    spark.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--classic", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.classic:                     # the subprocess: a classic session on local[3]
        print(json.dumps(fits("local[3]", args.rows, args.epochs, args.repeats, ["here"])))
        return 0
    from distkeras.connect_server import LocalConnectServer

    classic = subprocess.run([sys.executable, __file__, "--classic", "--rows", str(args.rows),
                              "--epochs", str(args.epochs), "--repeats", str(args.repeats)],
                             capture_output=True, text=True, check=True)
    base = json.loads(classic.stdout.strip().splitlines()[-1])["here"]
    with LocalConnectServer("local[3]") as url:
        connect = fits(url, args.rows, args.epochs, args.repeats, ["here", "task"])
    print(f"ADAG x2, HLF-sized MLP, {args.rows} rows, {args.epochs} epochs; wall seconds "
          f"(first fit of the session apart; warm: best of {args.repeats})")
    print("| session | services | first fit s | warm fit s | warm ÷ classic | accuracy |")
    print("|---|---|---|---|---|---|")
    print(f"| classic | here | {base['first']:.1f} | {base['warm']:.1f} | 1.00 | "
          f"{base['accuracy']:.3f} |")
    for mode, r in connect.items():
        print(f"| Connect | {mode} | {r['first']:.1f} | {r['warm']:.1f} | "
              f"{r['warm'] / base['warm']:.2f} | {r['accuracy']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
