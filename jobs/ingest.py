"""Ingest ROOT files into Parquet with Spark (uproot reads the baskets in executors).

Examples::

    spark-submit jobs/ingest.py --label 'data/qcd/*.root=0' --label 'data/ttbar/*.root=1' \\
        --label 'data/wjets/*.root=2' --output out/events.parquet
    python jobs/ingest.py 'data/**/*.root' --tree Delphes --branches 'Jet.*,MissingET.*' -o out/ev
    python jobs/ingest.py --generate 3000 --output out/demo.parquet     # generate a sample first
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from distkeras.pipeline.cli import add_master_args  # noqa: E402 - no Spark or TensorFlow import

log = logging.getLogger("distkeras.jobs.ingest")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="*", help="ROOT files, globs ('**' recursive), directories or URLs "
                    "(root://, file://, https://...); may be omitted when --label or --generate is given")
    ap.add_argument("-o", "--output", required=True, help="output Parquet directory")
    ap.add_argument("--tree", default="Delphes", help="TTree name (default: %(default)s)")
    ap.add_argument("--branches", action="append", help="branch names or wildcards, comma separated, "
                    "repeatable (default: every branch with a Spark type)")
    ap.add_argument("--label", action="append", default=[], metavar="GLOB=INT",
                    help="give files matching GLOB the integer label INT (adds a 'label' column); "
                    "repeatable; the globs are read even if not listed in INPUTS")
    ap.add_argument("--source-col", "--source-column", dest="source_col", metavar="NAME",
                    help="add a column NAME with each row's file path")
    ap.add_argument("--on-bad-file", choices=("raise", "skip"), default="raise",
                    help="'raise' stops at the first unreadable file; 'skip' leaves it out and reports "
                    "it (and the events lost) at the end (default: %(default)s)")
    ap.add_argument("--partition-mb", type=float, help="target uncompressed MiB per read partition "
                    "(default: min(128, max(4, total / parallelism)), like Spark's file sources)")
    ap.add_argument("--partition-entries", type=int, help="target events per read partition instead")
    ap.add_argument("--partitions", type=int, help="at most this many output files (coalesce, no shuffle)")
    ap.add_argument("--rows-per-file", type=int, help="at most this many rows per Parquet file")
    ap.add_argument("--compression", default="zstd", help="Parquet codec (default: %(default)s)")
    ap.add_argument("--engine", choices=("arrow", "spark"), default="arrow",
                    help="'arrow': executors write Parquet with pyarrow from the Arrow batches (fast); "
                    "'spark': DataFrame.write.parquet (default: %(default)s)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    add_master_args(ap, "local[*]")
    ap.add_argument("--generate", type=int, metavar="N", help="first write a Delphes-like sample of N events "
                    "per process (qcd=0, ttbar=1, wjets=2) and ingest it with those labels")
    ap.add_argument("--generate-dir", help="where --generate writes (default: OUTPUT + '.root-sample')")
    ap.add_argument("--seed", type=int, default=42, help="seed for --generate (default: %(default)s)")
    ap.add_argument("--progress-interval", type=float, default=10.0, help="seconds between progress lines")
    ap.add_argument("--log-level", default="INFO", help="logging level (default: %(default)s)")
    args = ap.parse_args(argv)
    if not args.inputs and not args.label and not args.generate:
        ap.error("give INPUTS, --label GLOB=INT, or --generate N")
    return args


def parse_labels(items) -> dict[str, int]:
    labels = {}
    for item in items:
        pattern, sep, value = item.rpartition("=")
        if not sep or not pattern:
            raise SystemExit(f"--label expects GLOB=INT, got {item!r}")
        labels[pattern] = int(value)
    return labels


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from distkeras.io.errors import RootReadError
    from distkeras.io.ingest import write_parquet
    from distkeras.io.root_plan import plan_root
    from distkeras.pipeline import default_master
    from distkeras.spark import session

    labels = parse_labels(args.label)
    inputs = list(args.inputs)
    if args.generate:
        from distkeras.datasets.delphes import PROCESSES, generate_delphes

        sample = args.generate_dir or args.output.rstrip("/") + ".root-sample"
        generate_delphes(sample, args.generate, seed=args.seed)
        for name, proc in PROCESSES.items():
            labels.setdefault(os.path.join(sample, name, "*.root"), proc.label)
    branches = [b.strip() for group in args.branches or [] for b in group.split(",") if b.strip()] or None
    try:  # plan (open every file once) before starting Spark: bad input fails in seconds
        plan = plan_root(inputs or None, args.tree, branches, labels=labels or None,
                         source_col=args.source_col, on_bad_file=args.on_bad_file,
                         partition_bytes=int(args.partition_mb * (1 << 20)) if args.partition_mb else None,
                         partition_entries=args.partition_entries)
    except RootReadError as err:
        log.error("%s", err)
        return 2
    spark = session(default_master(args.master, "local[*]"), app_name="distkeras-ingest")
    try:
        summary = write_parquet(spark, plan, args.output, engine=args.engine, num_files=args.partitions,
                                rows_per_file=args.rows_per_file, compression=args.compression,
                                mode="overwrite" if args.overwrite else "errorifexists",
                                progress_interval=args.progress_interval)
    finally:
        spark.stop()
    print(summary.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
