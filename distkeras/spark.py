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


def session(master: str = "local[2]", app_name: str = "distkeras", conf: dict | None = None,
            environment: str | None = None):
    """Return a SparkSession for distkeras (created if none is active).

    ``master`` is any Spark master URL (``local[N]``, ``local[N,F]`` for task retries,
    ``spark://host:7077``). ``conf`` adds or overrides settings. ``environment`` is a packed
    Python environment for executors that do not share the driver's machine (a ``venv-pack``
    or ``conda-pack`` archive, local or on HDFS): Spark ships it to every executor
    (``spark.archives``, unpacked as ``./environment``) and runs the executors' Python from
    it (``spark.pyspark.python=./environment/bin/python``).

    Example::

        spark = session("spark://head:7077", conf={"spark.executor.cores": "4"},
                        environment="hdfs:///envs/distkeras-env.tar.gz")
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(master).appName(app_name)
    settings = dict(SESSION_CONF)
    settings["spark.pyspark.python"] = os.environ["PYSPARK_PYTHON"]
    if environment:
        settings.update(packed_environment(environment))
    if master.startswith("local"):
        settings["spark.driver.host"] = os.environ["SPARK_LOCAL_IP"]
        settings["spark.driver.bindAddress"] = os.environ["SPARK_LOCAL_IP"]
    settings.update(conf or {})
    # pyspark launches the executors' Python from this variable, not from the setting
    os.environ["PYSPARK_PYTHON"] = settings["spark.pyspark.python"]
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def packed_environment(archive: str, name: str = "environment") -> dict[str, str]:
    """The settings that run the executors' Python from a packed environment ``archive``
    (``.tar.gz``, ``.tgz`` or ``.zip`` from venv-pack or conda-pack)."""
    if archive.endswith(".tar"):
        raise ValueError(f"environment {archive!r}: Spark unpacks a plain .tar without file "
                         "modes or links (SPARK-38632), so its bin/python would not run; pack "
                         "it as .tar.gz (venv-pack -o env.tar.gz)")
    if not archive.endswith((".tar.gz", ".tgz", ".zip")):
        raise ValueError(f"environment {archive!r}: give a .tar.gz, .tgz or .zip archive made "
                         "by venv-pack or conda-pack")
    if "://" not in archive and not os.path.exists(archive):
        raise FileNotFoundError(f"environment archive {archive} does not exist; make it with "
                                "`venv-pack -o env.tar.gz` (or conda-pack) in the environment "
                                "that has distkeras installed")
    return {"spark.archives": f"{archive}#{name}", "spark.pyspark.python": f"./{name}/bin/python"}


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


def local_cores(master: str) -> int | None:
    """The cores of a ``local``/``local[N]``/``local[*]``/``local[N,F]`` master; None otherwise."""
    if master == "local":
        return 1
    if not master.startswith("local["):
        return None
    cores = master[len("local["):master.index("]")].split(",")[0].strip()
    return (os.cpu_count() or 1) if cores == "*" else int(cores)


def total_slots(spark, cores_per_task: int | None = None) -> int:
    """Number of task slots (cores / spark.task.cpus, or / ``cores_per_task`` on a cluster) Spark
    can run at once right now. A local master's workers share its cores instead of requesting
    them (see `distkeras.driver.resources`), so ``cores_per_task`` does not count there."""
    sc = spark.sparkContext
    task_cpus = int(sc.getConf().get("spark.task.cpus", "1"))
    cores = local_cores(sc.master)
    if cores is not None:
        return max(1, cores // task_cpus)
    # Cluster: ask the tracker for live executors (driver excluded).
    status = sc._jsc.sc().getExecutorMemoryStatus()  # noqa: SLF001 - no public API for this
    executors = max(0, status.size() - 1)
    cores = int(sc.getConf().get("spark.executor.cores", "1"))
    return max(0, executors * (cores // (cores_per_task or task_cpus)))
