"""A window of local steps as a TensorFlow graph against XLA, per model: the first window
(tracing, and compiling for XLA) and the steady cost per step, in one process with the
threads a worker of ``cores_per_worker`` has. This is what ``jit_compile="auto"`` weighs
(:mod:`distkeras.backends.tensorflow`): the compilation's extra cost against the steps a fit
plans.

    python benchmarks/xla_windows.py [--threads 1] [--window 12] [--models hlf fashion gru]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def models():
    import keras

    from distkeras.models import hlf_classifier, particle_sequence_classifier

    return {
        "hlf": lambda: hlf_classifier(compile=False),
        "fashion": lambda: keras.Sequential([
            keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10, activation="softmax")]),
        "gru": lambda: particle_sequence_classifier(compile=False),
    }


def measure(make, window: int, jit: bool, seconds: float = 3.0) -> tuple[float, float]:
    """(first window seconds, steady ms per step) of a fresh replica of ``make()``."""
    import keras
    import numpy as np

    from distkeras.executor.replica import Replica, build_model
    from distkeras.feed import Window
    from distkeras.portable import PortableModel

    keras.utils.set_random_seed(0)
    model = make()
    classes = int(model.outputs[0].shape[-1])
    optimizer = keras.optimizers.serialize(keras.optimizers.Adam(1e-3))
    replica = Replica(build_model(PortableModel.of(model), "categorical_crossentropy", optimizer,
                                  ["accuracy"]), jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((window * 32,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)
    y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, window * 32)]
    batches = Window([x], [y]).steps(window)
    t0 = time.perf_counter()
    replica.train(batches)
    first = time.perf_counter() - t0
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        replica.train(batches)
        steps += window
    return first, 1e3 * (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (a worker's cores)")
    ap.add_argument("--window", type=int, default=12, help="steps per window (λ)")
    ap.add_argument("--models", nargs="+", default=["hlf", "fashion", "gru"])
    args = ap.parse_args()
    from distkeras import backends

    backends.current().setup(threads=args.threads)
    print(f"window of {args.window} steps, batch 32, {args.threads} thread(s)")
    print(f"{'model':>8} | {'first window s':>15} | {'ms per step':>15} | {'XLA: extra s':>12} | "
          f"{'graph/XLA':>9} | {'XLA pays after':>14}")
    print(f"{'':>8} | {'graph':>7} {'XLA':>7} | {'graph':>7} {'XLA':>7} | {'to compile':>12} | "
          f"{'per step':>9} | {'steps':>14}")
    for name in args.models:
        (g_first, g_step), (x_first, x_step) = (measure(models()[name], args.window, jit)
                                                for jit in (False, True))
        extra = x_first - g_first
        pays = f"{extra / (g_step - x_step) * 1e3:,.0f}" if g_step > x_step else "never"
        print(f"{name:>8} | {g_first:>7.2f} {x_first:>7.2f} | {g_step:>7.3f} {x_step:>7.3f} | "
              f"{extra:>12.2f} | {g_step / x_step:>9.2f} | {pays:>14}", flush=True)


if __name__ == "__main__":
    main()
