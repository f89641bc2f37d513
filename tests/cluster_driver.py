"""Driver program run against the standalone cluster by test_cluster.py (its own process: one
SparkContext per process). Prints one JSON line with what the test checks."""
import json
import sys

import numpy as np

import distkeras as dk
from distkeras.spark import session
from tests.data import blobs, blobs_df, mlp

spark = session(sys.argv[1], app_name="distkeras-cluster-test",
                conf={"spark.executor.cores": "1", "spark.cores.max": "2",
                      "spark.executor.memory": "1g", "spark.task.maxFailures": "2"})
train = blobs_df(spark, 3000, seed=0)
fitted = dk.trainers.ADAG(mlp(), loss="categorical_crossentropy", num_workers=2, batch_size=32,
                          num_epoch=3, learning_rate=0.03, verbose=False).fit(train)
x, y = blobs(1000, seed=1)
scored = fitted.transform(blobs_df(spark, 500, seed=2)).select("prediction").count()
print("RESULT " + json.dumps({
    "accuracy": float((fitted.predict([x]).argmax(1) == y).mean()),
    "executor_pids": sorted({w["pid"] for w in fitted.history.workers}),
    "driver_pid": __import__("os").getpid(),
    "commits": [w["commits"] for w in fitted.history.ps_stats["workers"].values()],
    "scored": scored,
    "executors": spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1,
}))
spark.stop()
