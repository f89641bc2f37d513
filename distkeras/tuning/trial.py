"""One trial inside a Spark task: build the model with the user's ``build_fn``, compile it with
the trial's optimizer / learning rate / loss, train on the broadcast data (k folds or a
hold-out split) and return a plain JSON-able dict. Any exception, including a NaN loss, is
caught and returned as a failed trial, so one bad configuration never stops a search.

When the search prunes (``spec["report"]``), :func:`epoch_reporter` sends every epoch's logs of
the first fold to the driver's :class:`~distkeras.tuning.reports.ReportService` and stops
training when the driver says so: the trial ends as ``"pruned"`` after fewer epochs.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import socket
import time
import traceback
from typing import Any, Callable

import numpy as np

from distkeras.portable import learning_rate_config

log = logging.getLogger(__name__)


def make_optimizer(optimizer: Any, learning_rate: float | None):
    """A fresh Keras optimizer from a name or config dict, with ``learning_rate`` applied."""
    import keras

    if isinstance(optimizer, str):
        optimizer = keras.optimizers.serialize(keras.optimizers.get(optimizer))
    elif not isinstance(optimizer, dict):
        optimizer = keras.optimizers.serialize(optimizer)
    config = copy.deepcopy(optimizer)
    if learning_rate is not None:      # a LossScaleOptimizer's: its inner optimizer's
        learning_rate_config(config)["learning_rate"] = float(learning_rate)
    return keras.optimizers.deserialize(config)


def compile_model(model, spec: dict):
    """Compile ``model`` with the trial's settings (falling back to the model's own compile)."""
    compiled = getattr(model, "optimizer", None) is not None and getattr(model, "loss", None)
    loss = spec.get("loss") or (model.loss if compiled else None)
    if loss is None:
        raise ValueError("no loss: pass loss= to the search, put 'loss' in the space, or "
                         "compile the model in build_fn")
    optimizer = spec.get("optimizer") or (model.optimizer if compiled else "adam")
    model.compile(optimizer=make_optimizer(optimizer, spec.get("learning_rate")), loss=loss,
                  metrics=list(spec.get("metrics") or []),
                  steps_per_execution=int(spec.get("steps_per_execution") or 1))
    return loss


def epoch_reporter(contact: dict, trial: int, connect_timeout: float = 30.0):
    """A Keras callback that, after each epoch, reports the numeric logs to the search's
    :class:`~distkeras.tuning.reports.ReportService` and stops training when it answers "prune"
    (then ``pruned_at`` is the number of epochs trained). Call ``close()`` when done."""
    import keras

    from distkeras import messages
    from distkeras.transport import Client

    class EpochReporter(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.pruned_at: int | None = None
            self._client = None

        def on_epoch_end(self, epoch, logs=None):
            if self._client is None:
                self._client = Client(contact["host"], int(contact["port"]),
                                      bytes.fromhex(contact["secret"]), int(trial),
                                      connect_timeout=connect_timeout, io_timeout=60.0,
                                      role="the search's report service on the driver")
            numbers = {k: float(v) for k, v in (logs or {}).items()
                       if isinstance(v, (int, float, np.floating, np.integer))}
            reply = self._client.request(messages.EPOCH_REPORT, aux=int(trial),
                                         payload={"epoch": int(epoch), "logs": numbers})
            if reply.flags & messages.FLAG_STOP:
                self.pruned_at = epoch + 1
                self.model.stop_training = True

        def close(self):
            if self._client is not None:
                self._client.close()
                self._client = None

    return EpochReporter()


def _fit_split(build_fn, spec, data, train_idx, val_idx, seed, reporter=None
               ) -> tuple[dict, int]:
    """One fold: (the last epoch's metrics, the epochs trained)."""
    import keras

    from distkeras.feed import feed_spec_for, model_inputs
    from distkeras.tuning.data import worker_arrays

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build_fn(spec["params"])
    if not isinstance(model, keras.Model):
        raise TypeError(f"build_fn returned {type(model).__name__}, not a keras.Model")
    loss = compile_model(model, spec)
    feed = feed_spec_for(model, spec["features_col"], spec["label_col"], loss,
                         spec.get("input_shapes"))
    xs, y = worker_arrays(data["search_id"], data["broadcast"], feed)
    callbacks = [keras.callbacks.TerminateOnNaN()] + ([reporter] if reporter is not None else [])
    history = model.fit(model_inputs([x[train_idx] for x in xs]), y[train_idx],
                        validation_data=(model_inputs([x[val_idx] for x in xs]), y[val_idx]),
                        epochs=int(spec["epochs"]), batch_size=int(spec["batch_size"]),
                        shuffle=True, verbose=0, callbacks=callbacks)
    logs = history.history
    for epoch, value in enumerate(logs.get("loss", [])):
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} in epoch {epoch + 1}; lower the "
                                     "learning rate or check the data")
    return {k: float(v[-1]) for k, v in logs.items() if v}, len(logs.get("loss", []))


def run_trial(spec: dict, build_fn: Callable, data: dict, threads: int = 1) -> dict:
    """Train one configuration; never raises. Returns metrics (mean over folds) and status."""
    started = time.perf_counter()
    result = {"trial": spec["trial"], "status": "ok", "error": None, "metrics": {},
              "epochs": int(spec["epochs"]), "host": socket.gethostname(), "pid": os.getpid()}
    try:
        from distkeras import backends
        from distkeras.tuning.folds import splits

        backends.prepare(spec.get("backend") or backends.configured(), threads)
        per_fold = []
        for fold, (train_idx, val_idx) in enumerate(
                splits(data["rows"], spec.get("folds"), spec["validation_fraction"],
                       spec["split_seed"])):
            # the first fold's epochs are reported: a pruned trial skips its other folds
            reporter = (epoch_reporter(spec["report"], spec["trial"])
                        if fold == 0 and spec.get("report") else None)
            try:
                metrics, result["epochs"] = _fit_split(build_fn, spec, data, train_idx, val_idx,
                                                       int(spec["seed"]) + 1000 * fold, reporter)
            finally:
                if reporter is not None:
                    reporter.close()
            per_fold.append(metrics)
            if reporter is not None and reporter.pruned_at is not None:
                result["status"] = "pruned"
                break
        keys = set.intersection(*(set(m) for m in per_fold))
        result["metrics"] = {k: float(np.mean([m[k] for m in per_fold])) for k in sorted(keys)}
        if len(per_fold) > 1:
            result["metrics"].update({f"{k}_std": float(np.std([m[k] for m in per_fold]))
                                      for k in sorted(keys)})
    except Exception as exc:  # noqa: BLE001 - a failed trial is a result, not a crash
        result["status"] = "failed"
        result["error"] = f"{type(exc).__name__}: {exc}"
        log.info("trial %s failed:\n%s", spec["trial"], traceback.format_exc())
    finally:
        try:
            import keras

            keras.backend.clear_session()
        except Exception:  # noqa: BLE001
            pass
    result["seconds"] = time.perf_counter() - started
    return result
