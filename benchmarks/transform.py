"""Prediction speed: ``KerasModel.transform`` in the executors (Arrow batches → Keras → the
classifier columns rawPrediction / probability / prediction) against ``keras_model.predict`` on
the same rows in the driver process, in rows/s per core, measured in one run.

The baseline predicts a numpy array already in memory with TensorFlow on every core; transform
reads a cached DataFrame, runs in ``local[N]`` task slots (one TensorFlow thread each) and
materialises every output column (``write.format("noop")``). Target: ≥ 0.8 per core.

The floor, measured in the same run: the same cached DataFrame through ``mapInArrow`` with a
function that returns its Arrow batches unchanged (no Keras, no output columns): what Spark's
Arrow round trip to the Python workers alone allows, per core, against the driver's predict.

    python benchmarks/transform.py [--rows 200000] [--models small,large] [--repeats 3]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer_overhead import MODELS, cached_frame, data, mlp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=14)
    parser.add_argument("--models", default="small,large")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from distkeras.feed import feed_spec_for
    from distkeras.model import KerasModel, describe_output
    from distkeras.spark import session, total_slots

    spark = session(args.master)
    slots, cores = total_slots(spark), os.cpu_count() or 1
    x, y = data(args.rows, args.dim)
    df = cached_frame(spark, x, y)
    print(f"rows={args.rows} master={args.master} ({slots} slots) driver cores={cores} "
          f"load={os.getloadavg()[0]:.2f}; best of {args.repeats}")

    def identity(batches):
        yield from batches

    floor = []
    for _ in range(args.repeats + 1):
        t0 = time.perf_counter()
        df.mapInArrow(identity, df.schema).write.format("noop").mode("overwrite").save()
        floor.append(args.rows / (time.perf_counter() - t0))
    floor = max(floor[1:])
    print(f"Spark's Arrow round trip alone (mapInArrow returning its batches): {floor:,.0f} "
          f"rows/s")
    print(f"{'model':6} {'params':>8} {'predict rows/s':>15} {'transform rows/s':>17} "
          f"{'per core':>9} {'floor per core':>15}  target >= 0.8")
    for kind in args.models.split(","):
        model = mlp(args.dim, *MODELS[kind][1:])
        loss = "categorical_crossentropy"
        fitted = KerasModel(model, feed=feed_spec_for(model, "features", "label", loss),
                            output=describe_output(model, loss), batch_size=args.batch_size)
        model.predict(x[:args.batch_size], batch_size=args.batch_size, verbose=0)   # warm
        out = fitted.transform(df)
        out.write.format("noop").mode("overwrite").save()                            # warm
        predict, transform = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model.predict(x, batch_size=args.batch_size, verbose=0)
            predict.append(args.rows / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            fitted.transform(df).write.format("noop").mode("overwrite").save()
            transform.append(args.rows / (time.perf_counter() - t0))
        base, ours = max(predict), max(transform)
        ratio = (ours / slots) / (base / cores)
        print(f"{kind:6} {model.count_params():>8} {base:>15,.0f} {ours:>17,.0f} "
              f"{ratio:>9.2f} {(floor / slots) / (base / cores):>15.2f}  "
              f"{'met' if ratio >= 0.8 else 'missed'}")
    spark.stop()


if __name__ == "__main__":
    main()
