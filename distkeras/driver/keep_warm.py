"""Keeping a fit's Python workers alive until the next fit. Spark stops a Python worker that has
been idle for a minute, and with it the Keras import and the compiled replica it kept
(``executor.replica_cache``): a notebook's next fit would start cold again (measured on 2 cores,
SingleTrainer on a small MLP: 0.9 s warm, 10.4 s after 75 s idle). After a fit, a daemon thread
runs a tiny job in the same pool of Python workers every ``INTERVAL`` seconds, for
``DISTKERAS_KEEP_WARM`` seconds (default ``KEEP_WARM_SECONDS``; 0: off; off by default under
dynamic allocation, which should get idle executors back) after the last fit; a fit stops it
first, so that its own tasks find the workers idle. ``now=True`` (``warm_up_workers(...,
wait=False)``, before the first fit) runs its first job at once: the workers import Keras while
the user prepares data, and a fit that starts meanwhile waits for that import rather than
cancel it.

Example::

    KEEP_WARM.stop()                            # before a fit's job
    KEEP_WARM.start(spark, cores, 2)            # after it
"""
from __future__ import annotations

import logging
import os
import threading
import time

from distkeras.driver.resources import WorkerCores
from distkeras.driver.warm_up import warm_up

log = logging.getLogger(__name__)

INTERVAL = 20.0              # Spark stops Python workers idle for 60 s
KEEP_WARM_SECONDS = 1800.0
IMPORT_WAIT = 60.0           # seconds a fit waits for a first import in flight (then cancels it)


def keep_warm_seconds(spark=None) -> float:
    """How long after a fit its Python workers are kept: ``DISTKERAS_KEEP_WARM``, else the
    default, except under dynamic allocation (0: the keep-alive jobs would hold executors that
    the cluster should get back when idle)."""
    if "DISTKERAS_KEEP_WARM" not in os.environ and spark is not None:
        from distkeras.spark_api import spark_api

        if str(spark_api(spark).conf("spark.dynamicAllocation.enabled", "false")).lower() \
                == "true":
            return 0.0
    try:
        return float(os.environ.get("DISTKERAS_KEEP_WARM", KEEP_WARM_SECONDS))
    except ValueError:
        log.warning("DISTKERAS_KEEP_WARM=%r is not a number of seconds; using %g",
                    os.environ["DISTKERAS_KEEP_WARM"], KEEP_WARM_SECONDS)
        return KEEP_WARM_SECONDS


class KeepWarm:
    """The keep-alive of the last fit's Python workers (one pool at a time)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Lock()       # held while a keep-alive job runs
        self._job = None
        self.kept: list[int] = []              # pids of the Python workers the last job kept
        self._importing = False                # the job in flight is a first import (now=True)

    def start(self, spark, cores: WorkerCores, num_workers: int, now: bool = False) -> None:
        """Keep ``num_workers`` Python workers of ``cores``' pool alive; ``now``: import Keras in
        them at once, not after ``INTERVAL`` seconds."""
        self.stop()
        seconds = keep_warm_seconds(spark)
        if seconds <= 0 and not now:
            return
        stop = self._stop = threading.Event()
        started = threading.Event()

        def job(importing: bool) -> bool:
            """One keep-alive job (the first import when ``importing``); False: stop."""
            with self._running:
                self._importing = importing
                started.set()
                if stop.is_set():
                    return False
                try:
                    job = self._job = warm_up(spark, cores, num_workers)
                    if job is None:            # tasks with GPUs: not kept
                        return False
                    self.kept = [int(row["pid"]) for row in job.result()]
                    return True
                except Exception as exc:  # noqa: BLE001 - the session ended: nothing to keep
                    log.debug("keep-warm job failed (%s); stopped", exc)
                    return False
                finally:
                    self._importing = False

        def run() -> None:
            until = time.monotonic() + seconds
            if now and not job(importing=True):
                return
            while not stop.wait(INTERVAL) and time.monotonic() < until:
                if not job(importing=False):
                    return

        threading.Thread(target=run, daemon=True, name="distkeras-keep-warm").start()
        if now:
            started.wait(5.0)      # a fit right after this finds the import in flight

    def stop(self, wait: float = 2.0) -> None:
        """No keep-alive job runs once this returns: one in flight finishes first, or is
        cancelled after ``wait`` seconds (waiting for task slots another job holds); a first
        import (``now=True``) gets ``IMPORT_WAIT`` seconds, since the fit is about to use it."""
        self._stop.set()
        if self._importing:
            wait = max(wait, IMPORT_WAIT)
        if not self._running.acquire(timeout=wait):
            job = self._job
            if job is not None:
                job.cancel()
            self._running.acquire()
        self._running.release()


KEEP_WARM = KeepWarm()
