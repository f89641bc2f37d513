"""Importing Keras and its backend in the Python workers ahead of the training tasks: a job in the same
pool of Python workers (``distkeras.driver.resources``), so that the tasks that come after find
Keras imported: ``warm_up_workers`` (the user's, before a first fit), and during a fit's data
checks when ``distkeras.driver.fit.WARM_UP``.

Example::

    spark = distkeras.spark.session("local[2]")
    distkeras.warm_up_workers(spark, 2, wait=False)   # returns at once; Keras imports meanwhile
    df = spark.read.parquet("train.parquet").cache()  # the user's data preparation
    distkeras.trainers.ADAG(model, num_workers=2, ...).fit(df)   # finds Keras imported
"""
from __future__ import annotations

import logging
import time

from distkeras.driver import preflight
from distkeras.driver.data import collect_arrays
from distkeras.driver.job import SparkJob
from distkeras.driver.resources import WorkerCores, worker_cores
from distkeras.executor import remote
from distkeras.spark_api import spark_api

log = logging.getLogger(__name__)
CHECKS_WAIT = 30.0   # seconds warm_up_workers(wait=True) waits for the checks' warm-up at most


def warm_up_workers(spark, num_workers: int, cores_per_worker: int | None = None,
                    wait: bool = True) -> float:
    """Import Keras and its backend in the Python workers that a fit of ``num_workers``
    workers (``cores_per_worker`` as the trainer's) will run in: Spark reuses them, one pool
    per thread count (`distkeras.driver.resources`), so the fit's tasks skip the one-off import
    (3–12 s per worker); meanwhile the driver runs the data checks on a tiny frame, so that a
    fresh session's first fit does not pay the JVM's first run of them (about 1 s).
    ``wait=False`` returns at once: the import runs while the caller
    prepares data, and the workers are kept alive until the fit (``keep_warm``), which waits
    for an import still in flight. Returns the seconds waited.

    Example::

        distkeras.warm_up_workers(spark, 2, wait=False)
    """
    from distkeras.driver.keep_warm import KEEP_WARM

    t0 = time.perf_counter()
    checks = spark_api(spark).thread(lambda: _warm_up_checks(spark),   # the JVM's part,
                                     name="distkeras-warm-up-checks")    # meanwhile
    checks.start()
    cores = worker_cores(spark, num_workers, cores_per_worker)
    if not wait:
        KEEP_WARM.start(spark, cores, num_workers, now=True)
        return time.perf_counter() - t0
    job = warm_up(spark, cores, num_workers)
    if job is not None:
        job.result()
    checks.join(CHECKS_WAIT)
    seconds = time.perf_counter() - t0
    log.info("warmed up %d Python worker(s) (Keras import) in %.1f s", num_workers, seconds)
    return seconds


def warm_up_checks(spark) -> None:
    """Prepare a five-row frame as a fit prepares the user's (checked as merged, found
    unbalanced, repartitioned into a cache of its own and counted) and collect it as validation
    data, so that the JVM has loaded and compiled what that runs on before a fit's data checks:
    a fresh session's first fit of the demo spends 1.6 s in them, 0.6 s after this
    (``warm_up_workers`` runs it on a thread while the workers import Keras).

    Example::

        warm_up_checks(spark)
    """
    from distkeras.feed import FeedSpec, InputSpec, TargetSpec

    feed = FeedSpec([InputSpec(["features"], (2,))], [TargetSpec("label", 2, one_hot=True)])
    tiny = spark.createDataFrame([([0.0, 1.0], i % 2) for i in range(5)],
                                 "features array<float>, label bigint").repartition(3).cache()
    try:
        prepared, _, owned = preflight.prepare_training_data(tiny, feed, 2, 1, barrier=False,
                                                             array_values=False)
        if owned:
            prepared.unpersist()
        collect_arrays(tiny, feed)
    finally:
        tiny.unpersist()


def _warm_up_checks(spark) -> None:
    try:
        warm_up_checks(spark)
    except Exception as exc:  # noqa: BLE001 - only speed is at stake: the fit checks anyway
        log.debug("warming up the data checks failed (%s)", exc)


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
