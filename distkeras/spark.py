"""Building and inspecting Spark sessions the way distkeras needs them.

`session()` returns a SparkSession configured for Keras workers: Python worker reuse (TensorFlow is
imported once per worker), Arrow on, executors on this interpreter, barrier stages that fail fast
instead of waiting ten minutes for slots. An existing session is reused untouched (``getOrCreate``).

Example::

    spark = distkeras.spark.session("local[2]")
"""
from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)
_WARNED: set[str] = set()

SESSION_CONF = {
    "spark.python.worker.reuse": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # Barrier stages with more tasks than slots: fail after seconds, not after ~10 minutes.
    "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": "1",
    "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": "2s",
}


def session(master: str = "local[2]", app_name: str = "distkeras", conf: dict | None = None):
    """Return a SparkSession for distkeras (created if none is active).

    ``master`` is any Spark master URL (``local[N]``, ``local[N,F]`` for task retries,
    ``spark://host:7077``). ``conf`` adds or overrides settings.
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(master).appName(app_name)
    settings = dict(SESSION_CONF)
    settings["spark.pyspark.python"] = os.environ["PYSPARK_PYTHON"]
    if master.startswith("local"):
        settings["spark.driver.host"] = os.environ["SPARK_LOCAL_IP"]
        settings["spark.driver.bindAddress"] = os.environ["SPARK_LOCAL_IP"]
    settings.update(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def warn_if_unauthenticated(spark) -> bool:
    """Warn once per application when a non-local master runs without Spark's own
    authentication and encryption. distkeras ships each run's secret in the task closure, so
    that channel is what keeps it secret: set ``spark.authenticate=true`` (with
    ``spark.authenticate.secret`` on standalone clusters, automatic on YARN/Kubernetes) and
    ``spark.network.crypto.enabled=true``. Returns True when it warned."""
    sc = spark.sparkContext
    if sc.master.startswith("local") or sc.applicationId in _WARNED:
        return False
    conf = sc.getConf()
    missing = [key for key in ("spark.authenticate", "spark.network.crypto.enabled")
               if conf.get(key, "false").lower() != "true"]
    if not missing:
        return False
    _WARNED.add(sc.applicationId)
    log.warning("master %s runs without %s: the run's secret travels to the executors in the "
                "task closure, readable by anyone on the network between them. Set "
                "spark.authenticate=true (and spark.authenticate.secret on a standalone "
                "cluster) and spark.network.crypto.enabled=true.", sc.master, " and ".join(missing))
    return True


def total_slots(spark) -> int:
    """Number of task slots (cores / spark.task.cpus) Spark can run at once right now."""
    sc = spark.sparkContext
    task_cpus = int(sc.getConf().get("spark.task.cpus", "1"))
    master = sc.master
    if master.startswith("local"):
        inner = master[master.find("[") + 1 : master.find("]")] if "[" in master else "1"
        cores = inner.split(",")[0].strip()
        n = (os.cpu_count() or 1) if cores == "*" else int(cores)
        return max(1, n // task_cpus)
    # Cluster: ask the tracker for live executors (driver excluded).
    status = sc._jsc.sc().getExecutorMemoryStatus()  # noqa: SLF001 - no public API for this
    executors = max(0, status.size() - 1)
    cores = int(sc.getConf().get("spark.executor.cores", "1"))
    return max(0, executors * cores // task_cpus)
