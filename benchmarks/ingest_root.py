"""Benchmark: rows/s per core of distkeras.read_root against plain single-process uproot.arrays on
the same generated Delphes-like files (target: >= 0.8 of uproot per core).

    python benchmarks/ingest_root.py --events 5000 --master local[1]

Measures, best of --repeat runs each, interleaved:
  uproot   : uproot.open(f)["Delphes"].arrays(branches) for every file, one process, one thread
  count    : read_root(...).count()            (every branch read, converted to Arrow, sent to the JVM)
  parquet  : read_root(...).write.parquet(...) (full materialisation through Spark's writer)
  ingest   : distkeras.io.ingest.write_parquet (jobs/ingest.py default: executors write with pyarrow)
  by hand  : the ingest's work in one process: uproot.arrays -> awkward.to_arrow_table ->
             pyarrow.parquet.write_table, same compression (the baseline of ``ingest``)
Targets: count / uproot >= 0.8 and ingest / by hand >= 0.8, per core.
Spark per-core figures divide by the number of task slots of --master.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5000, help="events per process (3 processes)")
    ap.add_argument("--events-per-file", type=int, default=2500)
    ap.add_argument("--compression", default="zstd:1")
    ap.add_argument("--master", default="local[1]")
    ap.add_argument("--branches", default=None, help="comma list/wildcards (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", help="reuse/keep the sample here (default: a temp dir)")
    args = ap.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYTHONPATH", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    import uproot

    from distkeras.datasets.delphes import generate_delphes
    from distkeras.io.ingest import write_parquet
    from distkeras.io.root import read_root
    from distkeras.io.root_plan import plan_root
    from distkeras.spark import session, total_slots

    work = tempfile.mkdtemp(prefix="dk-bench-")
    data = args.data or os.path.join(work, "sample")
    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(data) for f in fs if f.endswith(".root")) \
        if os.path.isdir(data) else []
    if not paths:
        t0 = time.perf_counter()
        paths = generate_delphes(data, args.events, seed=1, events_per_file=args.events_per_file,
                                 compression=args.compression)
        print(f"generated {3 * args.events} events in {time.perf_counter() - t0:.1f} s")
    branches = args.branches.split(",") if args.branches else None
    plan = plan_root(paths, "Delphes", branches)
    names, rows = list(plan.spec.branches), plan.report.entries
    disk = sum(os.path.getsize(p) for p in paths)
    print(f"{len(paths)} files, {rows} events, {len(names)} branches, {disk / 2**20:.0f} MiB on disk, "
          f"~{plan.report.bytes_estimate / 2**20:.0f} MiB uncompressed ({args.compression})")

    def run_uproot():
        n = 0
        for p in paths:
            with uproot.open(p, handler=uproot.source.file.MemmapSource) as f:
                n += len(f["Delphes"].arrays(names, library="ak"))
        assert n == rows

    hand_out = os.path.join(work, "by-hand")
    os.makedirs(hand_out, exist_ok=True)

    def run_by_hand():
        import awkward as ak
        import pyarrow.parquet as pq

        for i, p in enumerate(paths):
            with uproot.open(p, handler=uproot.source.file.MemmapSource) as f:
                table = ak.to_arrow_table(f["Delphes"].arrays(names, library="ak"),
                                          extensionarray=False)
            pq.write_table(table, os.path.join(hand_out, f"part-{i:05d}.parquet"),
                           compression="zstd")

    spark = session(args.master, app_name="distkeras-bench")
    cores = total_slots(spark)
    out = os.path.join(work, "out.parquet")

    def run_count():
        assert read_root(spark, paths, "Delphes", branches).count() == rows

    def run_parquet():
        read_root(spark, paths, "Delphes", branches).write.mode("overwrite").parquet(out)

    def run_ingest():  # the ingest job's default: executors write Parquet with pyarrow
        plan = plan_root(paths, "Delphes", branches)
        assert write_parquet(spark, plan, out, mode="overwrite", progress_interval=1e9).events == rows

    read_root(spark, paths[:1], "Delphes", branches).limit(10).count()   # start Python workers
    t_up = t_count = t_pq = t_ing = t_hand = float("inf")
    for _ in range(args.repeat):   # interleaved, so load from elsewhere hits all alike
        t_up = min(t_up, best(run_uproot, 1))
        t_hand = min(t_hand, best(run_by_hand, 1))
        t_count = min(t_count, best(run_count, 1))
        t_pq = min(t_pq, best(run_parquet, 1))
        t_ing = min(t_ing, best(run_ingest, 1))
    spark.stop()
    shutil.rmtree(work, ignore_errors=True)

    up = rows / t_up
    cnt, pq, ing = rows / t_count / cores, rows / t_pq / cores, rows / t_ing / cores
    print(f"uproot.arrays, 1 process         : {up:10,.0f} rows/s          ({t_up:.2f} s)")
    print(f"read_root count, {args.master:<16}: {cnt:10,.0f} rows/s per core ({t_count:.2f} s, {cores} core(s))"
          f"  ratio {cnt / up:.2f}")
    print(f"read_root -> parquet, {args.master:<11}: {pq:10,.0f} rows/s per core ({t_pq:.2f} s, {cores} core(s))"
          f"  ratio {pq / up:.2f}")
    print(f"ingest (arrow engine), {args.master:<10}: {ing:10,.0f} rows/s per core ({t_ing:.2f} s, {cores} core(s))"
          f"  ratio {ing / up:.2f}")
    hand = rows / t_hand
    print(f"by hand (uproot->arrow->parquet)  : {hand:10,.0f} rows/s          ({t_hand:.2f} s)"
          f"  ingest / by hand {ing / hand:.2f} (target 0.8); count / uproot {cnt / up:.2f} "
          "(target 0.8)")
    print(f"MB/s uncompressed per core: uproot {plan.report.bytes_estimate / t_up / 1e6:.0f}, "
          f"count {plan.report.bytes_estimate / t_count / cores / 1e6:.0f}, "
          f"parquet {plan.report.bytes_estimate / t_pq / cores / 1e6:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
