"""Compare distributed optimisers in one command: train the same model on the same data with
every algorithm × SlowMo variant × worker count × λ × repeat, append each finished run to
OUT/runs.jsonl (a rerun skips finished runs: an interrupted study resumes), then write
OUT/report.md with its tables and PNG figures (time to target accuracy first).

Examples::

    spark-submit jobs/study.py --data features/ --model hlf \\
        --algorithms single,arsgd,adpsgd,swarmsgd,adag,downpour --slowmo none,avg,noavg \\
        --num-workers 1,2,4,8 --windows 12 --epochs 10 --repeats 3 --out study-hlf
    python jobs/study.py --dataset digits --model digits_mlp --algorithms single,adpsgd,adag \\
        --num-workers 1,2 --epochs 5 --out study-digits
    python jobs/study.py --demo --out study-demo          # generated Delphes-like sample, HLF
    python jobs/study.py --report-only --out study-hlf    # redraw the report from runs.jsonl
    python jobs/study.py --data features/ --simulate --workers 1,2,4,16,64,256 \
        --network 10gbit:0.1ms --algorithms single,arsgd,adpsgd,swarmsgd --out study-hlf

--simulate trains every run of the command in virtual time (distkeras.simulation): the real
rules, exchanges and data split, on a modelled network (--network, e.g. 1gbit:0.1ms) with a
step time measured here (or --step-time, e.g. a GPU's); the runs join the same runs.jsonl,
labelled "[simulated NETWORK]", so measured and simulated runs share the report's figures.

--data is a features directory from jobs/features.py (train.parquet, test.parquet) or a
Parquet file (20 % held out for validation). On a cluster, --master spreads every run's
workers over the executors; the study's runs themselves go one after the other, so that their
timings do not disturb each other.
"""
from __future__ import annotations

import argparse
import os
import sys


def _list(kind):
    return lambda text: [kind(t) if t not in ("", "default", "none") or kind is str else None
                         for t in text.split(",")]


def parse_args(argv=None) -> argparse.Namespace:
    from distkeras.pipeline.cli import add_spark_args
    from distkeras.scaling import LEARNING_RATE_SCALINGS

    ap = argparse.ArgumentParser(prog="study.py", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--data", help="features directory (train/test.parquet) or a Parquet file")
    src.add_argument("--dataset", choices=["digits"], help="a bundled data set instead")
    src.add_argument("--demo", action="store_true",
                     help="generate a small Delphes-like sample and its HLF features first")
    ap.add_argument("--demo-events", type=int, default=2000, help="events per class (--demo)")
    ap.add_argument("--model", default=None,
                    help="hlf, particle_sequence, inclusive, digits_mlp, digits_cnn, or "
                    "module:function returning a Keras model (default: hlf, digits_mlp with "
                    "--dataset digits)")
    ap.add_argument("--features-col", default=None, help="feature column(s), comma-separated")
    ap.add_argument("--label-col", default="label")
    ap.add_argument("--algorithms", type=_list(str), default=["single", "arsgd", "adpsgd", "adag"])
    ap.add_argument("--slowmo", type=_list(str), default=["none"],
                    help="none, avg (SlowMo + exact average), noavg (SlowMo without)")
    ap.add_argument("--num-workers", "--workers", dest="num_workers", type=_list(int),
                    default=[1, 2], help="worker counts to compare, e.g. 1,2,4")
    ap.add_argument("--windows", type=_list(int), default=[None],
                    help="λ values for the parameter-server algorithms and LocalSGD "
                    "('default': each algorithm's own)")
    ap.add_argument("--compression", type=_list(str), default=["none"],
                    help="exchange compressors to compare, e.g. none,int8,topk:0.01,powersgd:4 "
                    "(an algorithm that cannot take one skips it)")
    ap.add_argument("--network", default="loopback",
                    help="what the cluster's links are (recorded with every run; the report's "
                    "compression table is per network), e.g. '1gbit'; with --simulate, the "
                    "modelled links, BANDWIDTH:LATENCY, e.g. '10gbit:0.1ms'")
    ap.add_argument("--simulate", action="store_true",
                    help="train in virtual time on the --network model instead of on executors")
    ap.add_argument("--step-time", type=float, default=None, metavar="SECONDS",
                    help="--simulate: compute seconds per step (default: measured here)")
    ap.add_argument("--call-time", type=float, default=None, metavar="SECONDS",
                    help="--simulate: a compiled call's fixed seconds (default: measured; 0 "
                    "when --step-time is given)")
    ap.add_argument("--gradient-time", type=float, default=None, metavar="SECONDS",
                    help="--simulate: seconds of a gradient step outside a window (AR-SGD)")
    ap.add_argument("--service-time", type=float, default=None, metavar="SECONDS",
                    help="--simulate: parameter-server seconds per commit (default: measured)")
    ap.add_argument("--stragglers", default="none",
                    help="--simulate: none, lognormal:SIGMA or slow:FACTOR:FRACTION")
    ap.add_argument("--cores", type=int, default=None,
                    help="--simulate: cores the workers share (default: one each); this "
                    "machine's, to compare with runs on it")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--lr", action="append", default=[], metavar="ALGORITHM=RATE",
                    help="a learning rate for one algorithm (e.g. adag=0.003); repeatable")
    ap.add_argument("--lr-scaling", default="auto", choices=["auto", *LEARNING_RATE_SCALINGS],
                    help="how every algorithm's learning rate grows with the workers (auto: "
                         "each trainer's own, the trainers' learning_rate_scaling)")
    ap.add_argument("--target", type=float, default=0.99,
                    help="target accuracy as a fraction of the best single-worker accuracy")
    ap.add_argument("--out", required=True, help="directory for runs.jsonl, report.md, PNGs")
    ap.add_argument("--report-only", action="store_true", help="only redraw the report")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    add_spark_args(ap)
    return ap.parse_args(argv)


def _model(name: str | None, dataset: str | None):
    if name is None:
        return "digits_mlp" if dataset == "digits" else "hlf"
    if ":" in name:
        import importlib

        module, function = name.split(":", 1)
        return getattr(importlib.import_module(module), function)
    return name


def main(argv=None) -> int:
    args = parse_args(argv)
    from distkeras.pipeline.cli import setup_logging
    from distkeras.study import Study, load_runs, write_report

    setup_logging(args.log_level)
    rates = dict(item.split("=", 1) for item in args.lr)
    study = Study(model=_model(args.model, args.dataset), algorithms=args.algorithms,
                  slowmo=args.slowmo, num_workers=args.num_workers, windows=args.windows,
                  compression=args.compression, network=args.network,
                  repeats=args.repeats, epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.learning_rate,
                  learning_rates={k.lower(): float(v) for k, v in rates.items()},
                  lr_scaling=args.lr_scaling, target=args.target, out=args.out,
                  features_col=(args.features_col.split(",") if args.features_col and
                                "," in args.features_col else args.features_col),
                  label_col=args.label_col, verbose=not args.quiet,
                  simulate=args.network if args.simulate else None,
                  step_seconds=args.step_time, service_seconds=args.service_time,
                  call_seconds=args.call_time, gradient_seconds=args.gradient_time,
                  stragglers=args.stragglers, cores=args.cores)
    if not args.report_only:
        train, validation = _data(args, 2 if args.simulate else max(args.num_workers))
        study.run(train, validation)
    report = write_report(load_runs(study.runs_path), args.out, target=args.target)
    print(f"study report: {report}")
    return 0


def _data(args, num_workers: int):
    from distkeras.pipeline.cli import start_session

    spark = start_session(args.master, "distkeras-study", num_workers=num_workers,
                          environment=args.environment)
    if args.dataset == "digits":
        from distkeras.datasets.digits import digits_dataframe

        return digits_dataframe(spark).randomSplit([0.8, 0.2], seed=42)
    path = args.data
    if args.demo:
        from distkeras import pipeline

        sample, events = os.path.join(args.out, "sample"), os.path.join(args.out, "events.parquet")
        path = os.path.join(args.out, "features")
        if not os.path.exists(os.path.join(path, "train.parquet")):   # a resumed demo study
            pipeline.generate_sample(sample, args.demo_events)
            pipeline.ingest_sample(spark, pipeline.sample_labels(sample), events)
            pipeline.make_features(spark, events, path,
                                   hlf_only=args.model in (None, "hlf"))
    if path is None:
        raise SystemExit("give --data, --dataset digits or --demo")
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "train.parquet")):
        from distkeras.pipeline.data import load_split

        return load_split(spark, path)
    return spark.read.parquet(path), None


if __name__ == "__main__":
    sys.exit(main())
