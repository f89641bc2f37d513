"""Driver program run against the standalone cluster by test_cluster.py (its own process: one
SparkContext per process). Trains each trainer named on the command line (default ADAG) and
prints one JSON line per trainer with what the test checks.

``DISTKERAS_TEST_SPARK_CONF``: extra Spark settings (JSON); ``DISTKERAS_TEST_ROWS``: training
rows (default 3000). ``DISTKERAS_TEST_EPOCHS`` and
``DISTKERAS_TEST_EPOCH_PAUSE``: epochs, and seconds the driver waits at each epoch end (it
prints ``EPOCH k [pids of the workers still training]`` then, so that the test can kill the
executor of a worker mid-training). ``DISTKERAS_TEST_ENVIRONMENT``: a packed environment the
executors run from (``PYTHON [...]`` tells where each executor's Python and distkeras came
from). A failed fit prints its error in the RESULT line."""
import json
import os
import sys
import time

import keras

import distkeras as dk
from distkeras.driver.job import TrainingError
from distkeras.spark import session
from tests.data import blobs, blobs_df, mlp

spark = session(sys.argv[1], app_name="distkeras-cluster-test",
                conf={"spark.executor.cores": "1", "spark.cores.max": "2",
                      "spark.executor.memory": "1g", "spark.task.maxFailures": "2",
                      **json.loads(os.environ.get("DISTKERAS_TEST_SPARK_CONF", "{}"))},
                environment=os.environ.get("DISTKERAS_TEST_ENVIRONMENT"))
print(f"APP {spark.sparkContext.applicationId}", flush=True)


def where_python(_):
    import importlib
    import sys

    import keras

    import distkeras

    framework = importlib.import_module(keras.backend.backend())   # tensorflow, jax or torch
    return {"executable": sys.executable, "prefix": sys.prefix, "distkeras": distkeras.__file__,
            "framework": framework.__file__, "backend": keras.backend.backend()}


if os.environ.get("DISTKERAS_TEST_ENVIRONMENT"):
    print("PYTHON " + json.dumps(spark.sparkContext.parallelize(range(2), 2).map(where_python)
                                 .collect()), flush=True)
train = blobs_df(spark, int(os.environ.get("DISTKERAS_TEST_ROWS", "3000")), seed=0).cache()
x, y = blobs(1000, seed=1)
SETTINGS = {"ADAG": dict(learning_rate=0.03)}
# per trainer, e.g. {"DPSGD": {"compression": "int8"}}
EXTRA = json.loads(os.environ.get("DISTKERAS_TEST_TRAINER_SETTINGS", "{}"))
EPOCHS = int(os.environ.get("DISTKERAS_TEST_EPOCHS", "3"))
PAUSE = float(os.environ.get("DISTKERAS_TEST_EPOCH_PAUSE", "0"))


RUNNING = {}      # the trainer being fitted: its coordinator knows the workers' pids


def mark(epoch, logs):
    """``EPOCH k [pids of the workers still training, least advanced first]``, then the
    pause."""
    workers = RUNNING["trainer"].coordinator.stats()["workers"].values()
    training = [w["pid"] for w in sorted(workers, key=lambda w: w["epochs_completed"])
                if w["pid"] and not w["done"]]
    print(f"EPOCH {epoch} {json.dumps(training)}", flush=True)
    time.sleep(PAUSE)


for name in (sys.argv[2].split(",") if len(sys.argv) > 2 else ["ADAG"]):
    callbacks = [keras.callbacks.LambdaCallback(on_epoch_end=mark)] if PAUSE else []
    t0 = time.monotonic()
    RUNNING["trainer"] = getattr(dk.trainers, name)(
        mlp(), loss="categorical_crossentropy", num_workers=2, batch_size=32, epochs=EPOCHS,
        verbose=False, callbacks=callbacks, **SETTINGS.get(name, dict(learning_rate=0.01)),
        **EXTRA.get(name, {}))
    try:
        fitted = RUNNING["trainer"].fit(train)
    except TrainingError as exc:
        print("RESULT " + json.dumps({"trainer": name, "error": str(exc),
                                      "seconds": time.monotonic() - t0}), flush=True)
        continue
    scored = fitted.transform(blobs_df(spark, 500, seed=2)).select("prediction").count()
    print("RESULT " + json.dumps({
        "trainer": name,
        "accuracy": float((fitted.predict([x]).argmax(1) == y).mean()),
        "executor_pids": sorted({w["pid"] for w in fitted.history.workers}),
        "driver_pid": os.getpid(),
        "exchanges": [w["exchanges"] for w in fitted.history.workers],
        "peers": [w["peers"] for w in fitted.history.workers],
        "bytes_sent": [w["bytes_sent"] for w in fitted.history.workers],
        "raw_bytes_sent": [w["raw_bytes_sent"] for w in fitted.history.workers],
        # where the workers' peer endpoints listened (decentralised algorithms)
        "endpoints": sorted(w.get("endpoint") or "" for w in
                            fitted.history.ps_stats["workers"].values()),
        "attempts": [w["attempt"] for w in fitted.history.workers],
        "lost": [w["lost_connections"] for w in fitted.history.ps_stats["workers"].values()],
        "epochs": [w["epochs"] for w in fitted.history.workers],
        "history_epochs": len(fitted.history["loss"]),
        "scored": scored,
        "seconds": time.monotonic() - t0,
        "executors": spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1,
    }), flush=True)
spark.stop()
