"""Driver program run against the standalone cluster by test_cluster.py (its own process: one
SparkContext per process). Trains each trainer named on the command line (default ADAG) and
prints one JSON line per trainer with what the test checks."""
import json
import os
import sys

import distkeras as dk
from distkeras.spark import session
from tests.data import blobs, blobs_df, mlp

spark = session(sys.argv[1], app_name="distkeras-cluster-test",
                conf={"spark.executor.cores": "1", "spark.cores.max": "2",
                      "spark.executor.memory": "1g", "spark.task.maxFailures": "2",
                      **json.loads(os.environ.get("DISTKERAS_TEST_SPARK_CONF", "{}"))})
train = blobs_df(spark, 3000, seed=0).cache()
x, y = blobs(1000, seed=1)
SETTINGS = {"ADAG": dict(learning_rate=0.03)}
for name in (sys.argv[2].split(",") if len(sys.argv) > 2 else ["ADAG"]):
    fitted = getattr(dk.trainers, name)(mlp(), loss="categorical_crossentropy", num_workers=2,
                                        batch_size=32, num_epoch=3, verbose=False,
                                        **SETTINGS.get(name, dict(learning_rate=0.01))).fit(train)
    scored = fitted.transform(blobs_df(spark, 500, seed=2)).select("prediction").count()
    print("RESULT " + json.dumps({
        "trainer": name,
        "accuracy": float((fitted.predict([x]).argmax(1) == y).mean()),
        "executor_pids": sorted({w["pid"] for w in fitted.history.workers}),
        "driver_pid": os.getpid(),
        "exchanges": [w["exchanges"] for w in fitted.history.workers],
        "peers": [w["peers"] for w in fitted.history.workers],
        "scored": scored,
        "executors": spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1,
    }), flush=True)
spark.stop()
