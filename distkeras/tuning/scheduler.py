"""Spark as the trial scheduler: one trial = one single-task Spark job, at most
``concurrency`` of them running at once (slots // cores_per_trial), each in its own job group.

Submitting one job per trial (rather than one job with a task per trial) lets the driver see
every trial the moment it ends: the progress bar shows trials done, the best score so far and
an ETA, a crashed Python worker costs one trial (recorded as failed), and Ctrl-C cancels exactly
the running trials. The job overhead (~tens of ms) is small next to a training run.
"""
from __future__ import annotations

import json
import logging
import math
import time
from typing import Callable

import pyarrow as pa

from distkeras import backends
from distkeras.driver.job import SparkJob, TrainingError, executor_cause
from distkeras.driver.resources import WorkerCores

log = logging.getLogger(__name__)
RESULT_SCHEMA = pa.schema([("result", pa.string())])


def _task(spec: dict, build_fn: Callable, data: dict, threads: int):
    """The mapInArrow function of one trial (runs in an executor)."""

    def run(batches):
        for _ in batches:       # one dummy row; nothing to read
            pass
        from distkeras.tuning.trial import run_trial

        result = run_trial(spec, build_fn, data, threads)
        yield pa.RecordBatch.from_pydict({"result": [json.dumps(result)]}, schema=RESULT_SCHEMA)

    return run


def better(a: float, b: float, mode: str) -> bool:
    """Is score ``a`` better than ``b`` (NaN is never better)?"""
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return False
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return True
    return a > b if mode == "max" else a < b


class TrialRunner:
    """Runs trial specs on Spark with bounded concurrency and reports into a tqdm bar."""

    def __init__(self, spark, build_fn: Callable, data, concurrency: int, threads: int,
                 metric: str, mode: str, bar=None, poll: float = 0.1,
                 report: dict | None = None):
        self.spark = spark
        self.build_fn = build_fn
        self.data = {"search_id": data.search_id, "broadcast": data.broadcast, "rows": data.rows}
        self.concurrency = max(1, int(concurrency))
        self.threads = threads
        self.metric, self.mode = metric, mode
        self.bar = bar
        self.poll = poll
        self.report = report      # where trials report their epochs (searches that prune)
        self.backend = backends.current().name   # the driver's Keras backend: the trials' too
        self.best: float | None = None
        self.failed = 0
        self.pruned = 0

    def _submit(self, spec: dict) -> SparkJob:
        if self.report is not None:
            spec = {**spec, "report": self.report}
        spec = {**spec, "backend": self.backend}
        df = self.spark.range(0, 1, 1, 1)
        return SparkJob(df, _task(spec, self.build_fn, self.data, self.threads), "result string",
                        description=f"distkeras tuning trial {spec['trial']}",
                        cores=WorkerCores(self.threads, None, str(self.threads),
                                          self.backend)).start()

    def _finish(self, spec: dict, job: SparkJob, started: float) -> dict:
        try:
            rows = job.result()
            result = json.loads(rows[0]["result"])
        except TrainingError as exc:   # the Python worker died (OOM, segfault, ...)
            result = {"trial": spec["trial"], "status": "failed", "metrics": {},
                      "error": f"task failed: {executor_cause(exc.__cause__ or exc)}",
                      "epochs": int(spec["epochs"]), "seconds": time.perf_counter() - started}
        result["ended"] = time.time()      # wall clock: time-to-best curves
        score = result.get("metrics", {}).get(self.metric, float("nan"))
        result["score"] = score if result["status"] == "ok" else float("nan")
        if better(result["score"], self.best, self.mode):
            self.best = result["score"]
        self.failed += result["status"] == "failed"
        self.pruned += result["status"] == "pruned"
        if self.bar is not None:
            self.bar.update(1)
            post = {f"best {self.metric}": "-" if self.best is None else f"{self.best:.4f}"}
            if self.pruned:
                post["pruned"] = self.pruned
            if self.failed:
                post["failed"] = self.failed
            self.bar.set_postfix(post)
        log.debug("trial %s: %s %s", spec["trial"], result["status"], result.get("error") or "")
        return result

    def run(self, specs: list[dict]) -> list[dict]:
        """Run every spec; results in the order of ``specs``."""
        pending = list(specs)[::-1]
        results: dict[int, dict] = {}
        self.stream(lambda: pending.pop() if pending else None,
                    lambda spec, result: results.__setitem__(spec["trial"], result))
        return [results[s["trial"]] for s in specs]

    def stream(self, next_spec: Callable[[], dict | None],
               on_result: Callable[[dict, dict], None]) -> None:
        """Keep every slot busy: ask ``next_spec()`` for a trial whenever one is free (None: no
        more trials), call ``on_result(spec, result)`` as each ends (in the order they end)."""
        running: list[tuple[dict, SparkJob, float]] = []
        exhausted = False
        try:
            while True:
                while not exhausted and len(running) < self.concurrency:
                    spec = next_spec()
                    if spec is None:
                        exhausted = True
                        break
                    running.append((spec, self._submit(spec), time.perf_counter()))
                if not running:
                    return
                running[0][1].join(self.poll)
                still = []
                for spec, job, started in running:
                    if job.is_alive():
                        still.append((spec, job, started))
                    else:
                        on_result(spec, self._finish(spec, job, started))
                running = still
        except BaseException:
            for _, job, _ in running:
                job.cancel()
            raise
