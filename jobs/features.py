"""Compute the topology-classifier features of an events Parquet (from jobs/ingest.py): lepton
selection, HLF (14) and LLF (801x19), a seeded train/test split, and preprocessing fitted on the
training split. Writes OUTPUT/train.parquet, OUTPUT/test.parquet, OUTPUT/preprocessing (a Spark
PipelineModel: apply it to new data with PipelineModel.load) and OUTPUT/features.json.

Examples::

    spark-submit jobs/features.py --input out/events.parquet --output out/features
    python jobs/features.py --input out/events.parquet --output out/hlf --hlf-only --master local[4]
"""
from __future__ import annotations

import argparse
import json
import sys


def parse_args(argv=None) -> argparse.Namespace:
    from distkeras.pipeline.cli import add_spark_args

    ap = argparse.ArgumentParser(prog="features.py", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="events Parquet (Delphes branches + label)")
    ap.add_argument("--output", required=True, help="output directory (replaced if it exists)")
    ap.add_argument("--test-fraction", type=float, default=0.2,
                    help="fraction of the selected events in the test split (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=42, help="split seed (default: %(default)s)")
    ap.add_argument("--hlf-only", action="store_true",
                    help="skip the 801x19 LLF (enough for the hlf model; much smaller output)")
    ap.add_argument("--hlf-scaling", choices=("standard", "minmax", "none"), default="standard",
                    help="HLF scaling fitted on the training split (default: %(default)s)")
    ap.add_argument("--muon", default="MuonTight",
                    help="muon collection name, 'Muon' in some samples (default: %(default)s)")
    add_spark_args(ap)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from distkeras import pipeline
    from distkeras.pipeline.cli import setup_logging, start_session

    setup_logging(args.log_level)
    spark = start_session(args.master, "distkeras-features",
                          environment=args.environment)
    try:
        info = pipeline.make_features(spark, args.input, args.output,
                                      test_fraction=args.test_fraction, seed=args.seed,
                                      hlf_only=args.hlf_only, hlf_scaling=args.hlf_scaling,
                                      muon=args.muon)
    finally:
        spark.stop()
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
