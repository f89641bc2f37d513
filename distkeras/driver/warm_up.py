"""Importing Keras and its backend in the Python workers ahead of the training tasks: a job in the same
pool of Python workers (``distkeras.driver.resources``), so that the tasks that come after find
Keras imported (``pipeline.warm_up_workers``; during a fit's data checks when
``distkeras.driver.fit.WARM_UP``).

Example::

    job = warm_up(spark, worker_cores(spark, 2, None), 2)
    ...
    job.join(60)
"""
from __future__ import annotations

from distkeras.driver.job import SparkJob
from distkeras.driver.resources import WorkerCores
from distkeras.executor import remote
from distkeras.spark_api import spark_api


def warm_up(spark, cores: WorkerCores, num_workers: int):
    """Start importing Keras and its backend in the Python workers the training tasks will run
    in (same pool, see `distkeras.driver.resources`), so the import overlaps the driver's data
    checks. Skipped when tasks are given GPUs: a worker pins its GPUs when it imports its
    framework."""
    if spark_api(spark).gpus_per_task > 0:
        return None
    job = SparkJob(spark.range(0, num_workers, 1, num_workers), remote.warm_up_task(cores.threads,
                                                                       cores.backend),
                   "pid bigint", description="distkeras: import Keras in the workers",
                   cores=cores)
    return job.start()
