"""Running a Spark job in a background thread so the driver can serve, report and steer meanwhile.

The job gets its own job group (a job tag on Spark Connect) so an interrupt (Ctrl-C in a
notebook, an exception on the driver) cancels exactly its tasks. Errors raised in executors are
unwrapped from the Py4J/JVM stack into a one-line cause the user can act on.
"""
from __future__ import annotations

import logging
import re
import threading
import uuid

from distkeras.driver.resources import WorkerCores
from distkeras.spark_api import spark_api
from distkeras.transport import errors

log = logging.getLogger(__name__)

_TRANSPORT = {name for name, value in vars(errors).items()
              if isinstance(value, type) and issubclass(value, errors.TransportError)}
_CAUSE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$", re.MULTILINE)


class TrainingError(RuntimeError):
    """Training failed inside Spark; the message carries the executor-side cause."""


def executor_cause(exc: BaseException) -> str:
    """The most specific error line of a Python exception raised inside an executor."""
    text = "\n".join([str(exc)] + [str(a) for a in getattr(exc, "args", ())[1:]])
    found = [m for m in _CAUSE.finditer(text) if not m.group(1).startswith("Py4J")]
    python = [m for m in found if not m.group(0).lstrip().startswith(("org.", "java.", "scala."))]
    preferred = [m for m in python if "distkeras" in m.group(0) or m.group(1) in _TRANSPORT]
    match = (preferred or python or found or [None])[-1]
    if match is None:
        return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{match.group(1)}: {match.group(2).strip()}"


class SparkJob:
    """``df.mapInArrow(func, schema, barrier).collect()`` in a thread; ``result()`` re-raises."""

    def __init__(self, df, func, schema: str, barrier: bool = False, description: str = "",
                 cores: WorkerCores | None = None):
        self.group = f"distkeras-{uuid.uuid4().hex[:12]}"
        api = spark_api(df.sparkSession)
        self._scope = api.job_scope(self.group, description)
        self._rows = None
        self._error: BaseException | None = None
        cores = cores or WorkerCores(None)
        extra = {"profile": cores.profile} if cores.profile is not None else {}
        with api.worker_environment(cores.environment()):   # the tasks' Python-worker pool
            plan = df.mapInArrow(func, schema, barrier=barrier, **extra)

        self._done: list = []
        self._lock = threading.Lock()

        def target():
            self._scope.enter()
            try:
                self._rows = plan.collect()
            except BaseException as exc:  # noqa: BLE001 - re-raised in result()
                self._error = exc
            finally:
                with self._lock:
                    done, self._done = self._done, None
                for callback in done:
                    callback()

        self._thread = api.thread(target, name=self.group)

    def start(self) -> "SparkJob":
        self._thread.start()
        return self

    def add_done_callback(self, callback) -> None:
        """Call ``callback()`` when the job ends (now, if it has)."""
        with self._lock:
            if self._done is not None:
                self._done.append(callback)
                return
        callback()

    @property
    def finished(self) -> bool:
        """The job has ended (its result is ready)."""
        return self._done is None

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def cancel(self) -> None:
        log.warning("cancelling Spark jobs %s", self.group)
        self._scope.cancel()
        self._thread.join(30)

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise TrainingError(executor_cause(self._error)) from self._error
        return self._rows
