"""The CPU cores of each worker task: how many TensorFlow threads it runs, and how Spark is
asked for them.

- On a local master the free cores are shared among the workers: ``local[4]`` gives each of 2
  workers 2 threads and a `SingleTrainer` all 4 (``cores_per_worker`` overrides the share).
- On a cluster, ``cores_per_worker`` is requested per task through stage-level scheduling (a
  ``TaskResourceProfile``: standalone, YARN and Kubernetes, pyspark >= 4), and the task runs as
  many threads as Spark gave it (``TaskContext.cpus()``, ``spark.task.cpus`` without a request).

TensorFlow (and JAX, and PyTorch) fix their thread pools when first imported in a Python worker,
Keras its backend, and Spark reuses Python workers from task to task. So each thread count and
Keras backend gets Python workers of its own: both travel in the task's environment
(``DISTKERAS_WORKER_THREADS``, ``KERAS_BACKEND``: the driver's), and Spark keeps one pool of
Python workers per environment. A fit with 2 threads never lands in a worker that imported
TensorFlow with 1, nor a JAX model in a worker whose Keras runs TensorFlow.

Spark Connect offers no per-function environment, so there a fit's workers run in the one pool
of Python workers and TensorFlow keeps the thread count of its first import in each (logged).

Example::

    cores = worker_cores(spark, num_workers=1, requested=None)
    cores.threads            # 2 on local[2]
    SparkJob(df, func, schema, cores=cores)
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, replace

from distkeras import backends
from distkeras.spark_api import local_cores, spark_api

log = logging.getLogger(__name__)
THREADS_VARIABLE = "DISTKERAS_WORKER_THREADS"


@dataclass(frozen=True)
class WorkerCores:
    """``threads``: intra-op threads per worker (None: the task's ``cpus()``);
    ``profile``: the ResourceProfile its stage requests (None: the cluster's default)."""

    threads: int | None
    profile: object | None = None
    pool: str = "1"          # the Python-worker pool this thread count runs in
    backend: str | None = None  # the driver's Keras backend, which every worker runs

    def environment(self) -> dict[str, str]:
        """The environment of the tasks' Python workers (one pool per distinct one)."""
        keras = backends.named(self.backend).environment() if self.backend else {}
        return {THREADS_VARIABLE: self.pool, **keras}


def worker_cores(spark, num_workers: int, requested: int | None) -> WorkerCores:
    """How many cores each of ``num_workers`` worker tasks gets on ``spark``'s master, and the
    driver's Keras backend, which they run."""
    backend, api = backends.current().name, spark_api(spark)
    executors = api.conf("spark.executorEnv.KERAS_BACKEND")
    if executors and executors != backend and api.is_connect:
        raise ValueError(f"this client's Keras runs {backend} but the Connect server's executors "
                         f"are set to {executors} (spark.executorEnv.KERAS_BACKEND): every worker "
                         f"runs the client's backend. Start the server with KERAS_BACKEND="
                         f"{backend}, or set KERAS_BACKEND={executors} here before importing Keras")
    return replace(_cores(spark, num_workers, requested), backend=backend)


def _cores(spark, num_workers: int, requested: int | None) -> WorkerCores:
    api = spark_api(spark)
    task_cpus = api.task_cpus
    cores = local_cores(api.master)
    if cores is not None:
        threads = requested or max(1, cores // num_workers)
        if threads * num_workers > cores:
            log.warning("%d workers x cores_per_worker=%d is more than the %d cores of %s: the "
                        "workers' threads compete for them", num_workers, threads, cores,
                        api.master)
        return WorkerCores(threads, None, str(threads))
    if requested is None or requested == task_cpus:
        return WorkerCores(None, None, str(task_cpus))
    executor_cores = api.conf("spark.executor.cores")
    if executor_cores is not None and requested > int(executor_cores):
        raise ValueError(f"cores_per_worker={requested} but each executor has "
                         f"spark.executor.cores={executor_cores}: no executor could ever run a "
                         "worker. Lower cores_per_worker or raise spark.executor.cores")
    return WorkerCores(None, _task_profile(requested), str(requested))


def _task_profile(cpus: int):
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests
    from pyspark.sql import DataFrame

    if "profile" not in inspect.signature(DataFrame.mapInArrow).parameters:
        raise ValueError(f"cores_per_worker={cpus} on a cluster needs stage-level scheduling of "
                         "DataFrame stages (pyspark >= 4.0); on this pyspark set "
                         f"spark.task.cpus={cpus} for the session instead")
    return ResourceProfileBuilder().require(TaskResourceRequests().cpus(cpus)).build
