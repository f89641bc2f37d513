"""The driver's end of per-epoch trial reports: the pruning channel of a search.

A trial task reports every epoch's logs to this service (``messages.EPOCH_REPORT`` over the
authenticated frame transport, JSON only, never pickle) and learns whether to go on: the
search's ``decide(trial, epoch, logs) -> bool`` (True = prune) answers from the driver, where the
pruner sees every trial (an Optuna pruner, ASHA's rungs). The executor end is
:class:`distkeras.tuning.trial.EpochReporter`.

Example::

    with ReportService(lambda trial, epoch, logs: logs["val_loss"] > 1.0) as reports:
        spec["report"] = reports.contact()      # shipped to the trial tasks in the closure
        ...
        reports.live()                          # {trial: epochs reported so far}
"""
from __future__ import annotations

import logging
import math
import secrets
import threading
from typing import Callable

from distkeras import messages
from distkeras.transport import FrameServer, Reply

log = logging.getLogger(__name__)

Decide = Callable[[int, int, dict], bool]
MAX_EPOCHS = 1_000_000


def clean_logs(logs) -> dict[str, float]:
    """The numeric entries of a wire epoch log (names are strings, values finite or NaN);
    anything else is an error naming the entry."""
    if not isinstance(logs, dict):
        raise ValueError(f"epoch logs must be a JSON object, got {type(logs).__name__}")
    out = {}
    for key, value in logs.items():
        if not isinstance(key, str) or isinstance(value, bool) \
                or not isinstance(value, (int, float)):
            raise ValueError(f"epoch log entry {key!r}: {value!r} is not a number")
        out[key] = float(value)
    return out


class ReportService:
    """Authenticated server for trials' epoch reports; a context manager.

    Args:
        decide: ``decide(trial, epoch, logs) -> bool``, True stops the trial after that epoch.
            Called from the server's threads, one at a time.
        host: the address executors reach the driver at.
    """

    def __init__(self, decide: Decide, host: str = "127.0.0.1"):
        self.decide = decide
        self.secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._epochs: dict[int, int] = {}
        self._server = FrameServer(self._handle, self.secret, host=host, port=0,
                                   max_payload=1 << 20)

    def __enter__(self) -> "ReportService":
        self._server.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        self._server.close()
        return False

    def contact(self) -> dict:
        """What a trial task needs to report here (travels in the task closure)."""
        host, port = self._server.address
        return {"host": host, "port": port, "secret": self.secret.hex()}

    def live(self) -> dict[int, int]:
        """Epochs reported so far, per trial."""
        with self._lock:
            return dict(self._epochs)

    def _handle(self, conn, frame) -> Reply:
        if frame.op != messages.EPOCH_REPORT:
            raise ValueError(f"unexpected op {frame.op} on the search's report service")
        payload = frame.payload if isinstance(frame.payload, dict) else {}
        epoch, trial = payload.get("epoch"), int(frame.aux)
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < MAX_EPOCHS:
            raise ValueError(f"trial {trial}: epoch must be a non-negative integer, got {epoch!r}")
        if conn.worker_id != trial:
            raise ValueError(f"a connection for trial {conn.worker_id} reported for trial {trial}")
        logs = clean_logs(payload.get("logs"))
        with self._lock:
            self._epochs[trial] = epoch + 1
            try:
                prune = bool(self.decide(trial, epoch, logs))
            except Exception:  # noqa: BLE001 - a pruner bug must not kill the trial silently
                log.exception("pruner failed on trial %d epoch %d; the trial goes on", trial, epoch)
                prune = False
        return Reply(frame.op, flags=messages.FLAG_STOP if prune else 0)


def metric_value(logs: dict[str, float], metric: str) -> float:
    """``logs[metric]``, NaN when the epoch did not log it."""
    value = logs.get(metric, math.nan)
    return float(value)
