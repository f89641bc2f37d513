"""One trial inside a Spark task: build the model with the user's ``build_fn``, compile it with
the trial's optimizer / learning rate / loss, train on the broadcast data (k folds or a
hold-out split) and return a plain JSON-able dict. Any exception, including a NaN loss, is
caught and returned as a failed trial, so one bad configuration never stops a search.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import time
import traceback
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)


def make_optimizer(optimizer: Any, learning_rate: float | None):
    """A fresh Keras optimizer from a name or config dict, with ``learning_rate`` applied."""
    import keras

    if isinstance(optimizer, str):
        optimizer = keras.optimizers.serialize(keras.optimizers.get(optimizer))
    elif not isinstance(optimizer, dict):
        optimizer = keras.optimizers.serialize(optimizer)
    config = {**optimizer, "config": dict(optimizer.get("config", {}))}
    if learning_rate is not None:
        config["config"]["learning_rate"] = float(learning_rate)
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


def _fit_split(build_fn, spec, data, train_idx, val_idx, seed) -> dict:
    import keras

    from distkeras.executor.feed import feed_spec_for
    from distkeras.executor.feed import model_inputs
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
    history = model.fit(model_inputs([x[train_idx] for x in xs]), y[train_idx],
                        validation_data=(model_inputs([x[val_idx] for x in xs]), y[val_idx]),
                        epochs=int(spec["epochs"]), batch_size=int(spec["batch_size"]),
                        shuffle=True, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()])
    logs = history.history
    for epoch, value in enumerate(logs.get("loss", [])):
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} in epoch {epoch + 1}; lower the "
                                     "learning rate or check the data")
    return {k: float(v[-1]) for k, v in logs.items() if v}


def run_trial(spec: dict, build_fn: Callable, data: dict, threads: int = 1) -> dict:
    """Train one configuration; never raises. Returns metrics (mean over folds) and status."""
    started = time.perf_counter()
    result = {"trial": spec["trial"], "status": "ok", "error": None, "metrics": {},
              "epochs": int(spec["epochs"]), "host": socket.gethostname(), "pid": os.getpid()}
    try:
        from distkeras.executor.replica import setup_tensorflow
        from distkeras.tuning.folds import splits

        setup_tensorflow(threads)
        per_fold = []
        for fold, (train_idx, val_idx) in enumerate(
                splits(data["rows"], spec.get("folds"), spec["validation_fraction"],
                       spec["split_seed"])):
            per_fold.append(_fit_split(build_fn, spec, data, train_idx, val_idx,
                                       int(spec["seed"]) + 1000 * fold))
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
