"""Compressed exchanges on emulated networks: where compression pays, and where encoding eats
the gain.

For each link (``loopback``, or a rate such as ``10gbit``/``1gbit`` between hosts in network
namespaces shaped with tc: ``tests/network.py``), a real standalone Spark cluster runs its
workers on those hosts, and the study (``distkeras.study``) trains every algorithm family
(parameter server: ADAG; ring all-reduce: AR-SGD; gossip: D-PSGD) with and without each
compressor, plus the single-worker baseline, on the HLF classifier's shape (``small``, 2k
parameters) and the 1M MLP (``large``). It prints, per link, model, workers and family, the
steady samples/s and the time to target accuracy (0.99 × the baseline's best) of each
compressor as a ratio to the same family uncompressed on the same link, measured in the same
run; and writes the study's report with its compression table and time-to-accuracy figure per
link under ``--out/<model>``.

Needs root for the namespaces (else the links fall back to loopback, and it says so). The
kernel here may lack ``netem``: then ``--delay`` cannot be emulated and the link line says so.

    sudo python benchmarks/compression.py [--links loopback,10gbit,1gbit] [--workers 2,4]
        [--models small,large] [--compressions none,fp16,int8,topk:0.01,powersgd:4]
        [--rows 20000] [--epochs 3] [--delay 0.2ms] [--out bench-compression]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer_overhead import MODELS, build, cached_frame, data  # noqa: E402

FAMILIES = {"parameter server": "adag", "ring all-reduce": "arsgd", "gossip": "dpsgd"}
RATES = {"adag": 3e-3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", default="loopback,10gbit,1gbit")
    parser.add_argument("--workers", default="2")
    parser.add_argument("--models", default="small,large")
    parser.add_argument("--compressions", default="none,fp16,int8,topk:0.01,powersgd:4")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--large-rows", type=int, default=8_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--delay", default=None, help="round-trip delay of each link, e.g. 0.2ms")
    parser.add_argument("--out", default="bench-compression")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # a kill unwinds the clusters and removes the emulated network's namespaces and links
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workers = [int(w) for w in args.workers.split(",")]
    for link in args.links.split(","):
        run_link(link, workers, args)
    for model in args.models.split(","):
        summarise(model, args)


def run_link(link: str, workers: list[int], args) -> None:
    from distkeras.spark import session
    from distkeras.study import Study
    from tests.cluster import StandaloneCluster
    from tests.network import PLAIN, EmulatedNetwork

    hosts = max(workers)
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(EmulatedNetwork(
            hosts=hosts, rate=None if link == "loopback" else link, delay=args.delay,
            fallback=PLAIN, max_seconds=7200)) if link != "loopback" else None
        where = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dk-bench-")))
        url = stack.enter_context(StandaloneCluster(where, workers=hosts, cores=1, network=net))
        host = net.driver if net is not None else "127.0.0.1"
        os.environ["SPARK_LOCAL_IP"] = host
        described = net.describe() if net is not None else "loopback"
        label = link if net is None or net.mode == "namespaces" else f"{link} ({net.mode})"
        print(f"\n=== link {link}: {described}; {hosts} Spark workers, 1 core each", flush=True)
        spark = session(url, app_name=f"bench-compression-{link}",
                        conf={"spark.driver.host": host, "spark.driver.bindAddress": host,
                              "spark.executor.cores": "1", "spark.cores.max": str(hosts),
                              "spark.executor.memory": "2g"})
        try:
            for model in args.models.split(","):
                dim = MODELS[model][0]
                rows = args.rows if model == "small" else args.large_rows
                x, y = data(rows + rows // 4, dim)
                train = cached_frame(spark, x[:rows], y[:rows])
                val = cached_frame(spark, x[rows:], y[rows:])
                Study(model=_builder(model), algorithms=list(FAMILIES.values()),
                      num_workers=workers, compression=args.compressions.split(","),
                      network=label,
                      epochs=args.epochs, batch_size=args.batch_size, learning_rate=1e-3,
                      learning_rates=RATES, out=str(Path(args.out) / model / link),
                      verbose=True).run(train, validation=val)
                train.unpersist()
                val.unpersist()
        finally:
            spark.stop()


def _builder(model: str):
    def builder():
        return build(model)

    builder.__name__ = f"{model}_mlp"        # how the study's records name the model
    return builder


def summarise(model: str, args) -> None:
    from distkeras.study import load_runs, write_report
    from distkeras.study.analysis import analyse

    records = []
    for link in args.links.split(","):
        records += load_runs(str(Path(args.out) / model / link / "runs.jsonl"))
    if not records:
        return
    path = write_report(records, str(Path(args.out) / model),
                        title=f"compressed exchanges: {model} model")
    rows = analyse(records)["compression"]
    print(f"\n=== {model} ({MODELS[model]}): ratios to the same family uncompressed on the "
          f"same link; report {path}")
    print(f"{'network':<40} {'algorithm':<8} {'n':>2} {'compression':<12} {'MB/epoch':>9} "
          f"{'ratio':>6} {'samples/s':>10} {'x':>5} {'acc':>6} {'t→target':>9} {'x':>5}")
    base = {(r["network"], r["configuration"], r["num_workers"]): r for r in rows
            if r["compression"] == "none"}
    for r in rows:
        b = base.get((r["network"], r["configuration"], r["num_workers"]), {})
        speed = _ratio(r["samples_per_s"], b.get("samples_per_s"))
        ttt = _ratio(r["time_to_target"], b.get("time_to_target"))
        mb = (r["bytes_per_epoch"] or 0) / 1e6
        print(f"{r['network'][:40]:<40} {r['configuration']:<8} {r['num_workers']:>2} "
              f"{r['compression']:<12} {mb:>9.3f} {r['ratio'] or 0:>6.1f} "
              f"{r['samples_per_s'] or 0:>10.0f} {speed:>5} {r['final_val_accuracy']:>6.3f} "
              f"{_fmt(r['time_to_target']):>9} {ttt:>5}")
    with open(Path(args.out) / model / "compression.json", "w", encoding="utf-8") as fh:
        json.dump(rows, fh, indent=1)


def _ratio(a, b) -> str:
    return f"{a / b:.2f}" if a and b else "—"


def _fmt(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.1f}"


if __name__ == "__main__":
    main()
