"""Throughput of the topology features (LLF + HLF): events/s per core, pure function and Spark.

Events come from the Delphes-like generator (`distkeras.datasets.delphes.generate_block`, the
same physics as the ROOT sample, kept in memory) or, if it is missing, from
`tests.topology_events`. Spark runs on ``local[1]`` (one core) with the input cached first, and
the output is fully materialised through the ``noop`` sink. Target: 1,000 events/s/core (the
original CERN pipeline: 12–17 events/s/core).

Run::

    SPARK_LOCAL_IP=127.0.0.1 .venv/bin/python benchmarks/features.py --events 4000
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGET = 1000.0
log = logging.getLogger("benchmarks.features")


def generated_events(n: int, seed: int = 1) -> tuple[pa.Table, str]:
    """``n`` events as a read_root-shaped Arrow table (a third of each process)."""
    try:
        import awkward as ak
        from distkeras.datasets.delphes import generate_block
    except ImportError:
        from tests.topology_events import make_events

        return make_events(n, seed=seed), "tests.topology_events"
    tables = []
    for label, process in enumerate(("qcd", "ttbar", "wjets")):
        block = generate_block(process, n // 3 + (label < n % 3), np.random.default_rng([seed, label]))
        cols, names = [], []
        for coll, arr in block.items():
            for field in arr.fields:
                col = ak.to_arrow(arr[field], list_to32=True, extensionarray=False)
                if pa.types.is_unsigned_integer(col.type.value_type):   # as read_root widens
                    col = col.cast(pa.list_(pa.int64()))
                cols.append(col)
                names.append(f"{coll}_{field}")
            cols.append(pa.array(ak.to_numpy(ak.num(arr, axis=1)).astype(np.int32)))
            names.append(f"{coll}_size")
        cols.append(pa.array(np.full(len(cols[0]), label, dtype=np.int32)))
        names.append("label")
        tables.append(pa.Table.from_arrays(cols, names=names))
    return pa.concat_tables(tables), "distkeras.datasets.delphes.generate_block"


def bench_pure(table: pa.Table, batch: int, hlf_only: bool = False) -> tuple[float, int]:
    from distkeras.features.arrow import events_from_arrow
    from distkeras.features.topology import TopologyConfig, compute_topology_features

    cfg = TopologyConfig(hlf_only=hlf_only)
    batches = table.to_batches(max_chunksize=batch)
    compute_topology_features(events_from_arrow(batches[0]), cfg)      # warm-up
    t0, c0, selected = time.perf_counter(), time.process_time(), 0
    for b in batches:
        _, hlf, _ = compute_topology_features(events_from_arrow(b), cfg)
        selected += len(hlf)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    log.info("pure %s: wall %.2f s, CPU %.2f s -> %.0f events per CPU-second",
             "HLF" if hlf_only else "LLF+HLF", wall, cpu, table.num_rows / cpu)
    return table.num_rows / wall, selected


def bench_spark(table: pa.Table, batch: int, hlf_only: bool = False, repeats: int = 2) -> float:
    from distkeras.spark import session
    from distkeras.features import TopologyFeatures

    spark = session("local[1]", app_name="bench-features")
    df = spark.createDataFrame(table).repartition(1).cache()
    df.count()
    tf = TopologyFeatures(hlfOnly=hlf_only, batchSize=batch)
    tf.transform(df.limit(batch)).write.format("noop").mode("overwrite").save()   # warm workers
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        tf.transform(df).write.format("noop").mode("overwrite").save()
        best = max(best, table.num_rows / (time.perf_counter() - t0))
    df.unpersist()
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=1024, help="events per Arrow batch")
    ap.add_argument("--no-spark", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    t0 = time.perf_counter()
    table, source = generated_events(args.events)
    log.info("%d events from %s in %.1f s; mean multiplicities: tracks %.0f, photons %.0f, "
             "neutral hadrons %.0f", table.num_rows, source, time.perf_counter() - t0,
             *(np.mean(table.column(f"{c}_size").to_numpy()) for c in
               ("EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron")))
    log.info("load average at start: %.1f on %d cores (timings are wall-clock)",
             os.getloadavg()[0], os.cpu_count() or 1)
    rows = []
    pure, sel = bench_pure(table, args.batch)
    rows.append(("pure function, LLF + HLF (1 core)", pure))
    rows.append(("pure function, HLF only (1 core)", bench_pure(table, args.batch, hlf_only=True)[0]))
    if not args.no_spark:
        rows.append(("Spark local[1] mapInArrow, LLF + HLF", bench_spark(table, args.batch)))
        rows.append(("Spark local[1] mapInArrow, HLF only", bench_spark(table, args.batch, hlf_only=True)))
    log.info("selected %d of %d events (%.0f %%)", sel, table.num_rows, 100 * sel / table.num_rows)
    log.info("%-40s %14s %12s", "measurement", "events/s/core", "vs 1000/s")
    for name, rate in rows:
        log.info("%-40s %14.0f %11.2fx", name, rate, rate / TARGET)
    log.info("original CERN pipeline: 12-17 events/s/core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
