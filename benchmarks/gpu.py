"""The GPU path, for real: Keras (TensorFlow, JAX or PyTorch) on a GPU inside a Spark executor,
against the same on CPU.

One short script for a machine with NVIDIA GPUs (``nvidia-smi`` on the PATH):

1. a local Spark session whose tasks each take one GPU (``spark.task.resource.gpu.amount=1``,
   the driver's GPUs found by a discovery script); a probe task reports its
   ``TaskContext.resources()``, the ``CUDA_VISIBLE_DEVICES`` the worker set from them before
   importing the backend, and the GPUs the backend sees;
2. SingleTrainer samples/s (epochs 2..N) of the particle-sequence GRU (LLF, 801 x 19) and of
   the 1M-parameter MLP, on the GPU with and without XLA (PyTorch: eager), against the same
   fit on CPU (a session without GPU resources, in its own process), for each backend asked
   (``--backends``; each in processes of its own, ``--python jax=...`` where a backend lives in
   another environment; JAX needs ``jax[cuda12]`` there).

Without a GPU the script says so and measures the CPU side alone.

    python benchmarks/gpu.py [--gru-rows 4000] [--mlp-rows 200000] [--epochs 3]
        [--backends tensorflow,jax,torch] [--python jax=.venv-backends/bin/python,...]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
DISCOVERY = """#!/bin/sh
echo "{\\"name\\": \\"gpu\\", \\"addresses\\": [$(nvidia-smi --query-gpu=index --format=csv,noheader \
| sed 's/.*/"&"/' | paste -sd, -)]}"
"""


def gpu_conf(count: int, workdir: str) -> dict:
    script = os.path.join(workdir, "gpus.sh")
    with open(script, "w") as f:
        f.write(DISCOVERY)
    os.chmod(script, 0o755)
    return {"spark.driver.resource.gpu.amount": str(count),
            "spark.driver.resource.gpu.discoveryScript": script,
            "spark.task.resource.gpu.amount": "1"}


def probe(batches):
    import pyarrow as pa
    from pyspark import TaskContext

    from distkeras.executor.remote import _task_resources
    from distkeras import backends

    for _ in batches:
        pass
    cpus, gpus = _task_resources(TaskContext.get())
    backend = backends.prepare(backends.configured(), cpus, gpus)
    yield pa.RecordBatch.from_pylist([{"probe": json.dumps({
        "task_gpus": gpus, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "backend": backend.name, "backend_gpus": backend.accelerators()})}])


def measure(device: str, args) -> dict:
    """In this process: samples/s of each model (and, on GPU, with XLA off) on ``device``."""
    import numpy as np

    import distkeras as dk
    from distkeras import backends
    from distkeras.models import LLF_SHAPE, particle_sequence_classifier
    from distkeras.spark import session
    from trainer_overhead import build, cached_frame, data

    workdir = tempfile.mkdtemp(prefix="dk-gpu-")
    count = args.gpus if device == "gpu" else 0
    spark = session(f"local[{os.cpu_count()}]", app_name=f"bench-gpu-{device}",
                    conf={"spark.driver.memory": "8g", **(gpu_conf(count, workdir) if count else {})})
    out = {}
    if count:
        out["probe"] = json.loads(spark.range(0, 1, 1, 1).mapInArrow(probe, "probe string")
                                  .collect()[0]["probe"])
    rng = np.random.default_rng(0)
    n = args.gru_rows
    llf = (rng.normal(size=(n, LLF_SHAPE[0] * LLF_SHAPE[1])) * (rng.random((n, 1)) > 0.1))
    sets = {"gru": (lambda: particle_sequence_classifier(compile=False),
                    cached_frame(spark, llf.astype(np.float32), rng.integers(0, 3, n))),
            "mlp_1m": (lambda: build("large"), cached_frame(spark, *data(args.mlp_rows, 14, 3)))}
    for name, (make, df) in sets.items():
        for jit in ((True, False) if count and backends.current().name != "torch"
                    else ("auto",)):
            t0 = time.perf_counter()
            fitted = dk.trainers.SingleTrainer(
                make(), loss="categorical_crossentropy", worker_optimizer="adam",
                batch_size=args.batch_size, epochs=args.epochs, jit_compile=jit,
                verbose=False).fit(df)
            samples = sum(w["samples"] for w in fitted.history.workers) / args.epochs
            out[f"{name} xla={jit}"] = {
                "steady": samples / float(np.mean(fitted.history["epoch_seconds"][1:])),
                "wall": samples * args.epochs / (time.perf_counter() - t0)}
    spark.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gru-rows", type=int, default=4000)
    ap.add_argument("--mlp-rows", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--backends", default="tensorflow")
    ap.add_argument("--python", default="", help="backend=interpreter,... for backends "
                    "installed in another environment")
    ap.add_argument("--child", choices=("cpu", "gpu"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    gpus = 0
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        gpus = sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))
    args.gpus = gpus
    if args.child:
        print("RESULT " + json.dumps(measure(args.child, args)), flush=True)
        return
    pythons = dict(p.split("=", 1) for p in args.python.split(",") if p)
    for backend in args.backends.split(","):
        report(backend, gpus, args, pythons.get(backend, sys.executable))


def report(backend: str, gpus: int, args, python: str) -> None:
    """Measure ``backend`` on GPU and CPU (each in a process of its own) and print the table."""
    results = {}
    for device in (("gpu", "cpu") if gpus else ("cpu",)):
        argv = [python, os.path.abspath(__file__), "--child", device, "--gru-rows",
                str(args.gru_rows), "--mlp-rows", str(args.mlp_rows), "--epochs",
                str(args.epochs), "--batch-size", str(args.batch_size)]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=1800,
                             env={**os.environ, "KERAS_BACKEND": backend})
        lines = [l for l in run.stdout.splitlines() if l.startswith("RESULT ")]
        if not lines:
            raise SystemExit(f"{backend} on {device}:\n{run.stderr[-3000:]}")
        results[device] = json.loads(lines[0][len("RESULT "):])
    print(f"== Keras backend: {backend}")
    if not gpus:
        print("no GPU on this machine (nvidia-smi finds none): CPU figures only; the GPU path "
              "was not measured")
    else:
        print("probe task:", json.dumps(results["gpu"].pop("probe")))
    cpu = results["cpu"]
    print(f"SingleTrainer samples/s, epochs 2..{args.epochs} (steady) and whole fit (wall)")
    for key, value in cpu.items():
        name = key.split(" ")[0]
        line = (f"{name:>7} cpu ({key.split(' ')[1]}): {value['steady']:>10.0f} steady "
                f"{value['wall']:>10.0f} wall")
        for gkey, gvalue in results.get("gpu", {}).items():
            if gkey.startswith(name + " "):
                line += (f" | gpu ({gkey.split(' ')[1]}): {gvalue['steady']:>10.0f} steady "
                         f"(x{gvalue['steady'] / value['steady']:.1f})")
        print(line)


if __name__ == "__main__":
    main()
