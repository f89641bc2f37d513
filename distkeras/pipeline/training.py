"""Pipeline training step: a topology classifier by name, trained with a distkeras trainer by name
(`train`) or with plain ``model.fit`` in this process (`train_keras`, the single-machine
baseline), timed, and saved with its history and training curves (`save_run`).

Example::

    run = train(train_df, "hlf", "ADAG", num_workers=2, epochs=5, validation_df=test_df)
    save_run(run, "out/models/adag")        # model + history.json + training.json + history.png
    again = load_run("out/models/adag")
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, fields
from typing import Any

from distkeras.driver.warm_up import warm_up_workers  # noqa: F401 - part of the pipeline API
from distkeras.pipeline.data import LABEL_COL

log = logging.getLogger(__name__)

# model name -> (builder in distkeras.models, feature columns in input order, needs the LLF)
MODELS: dict[str, tuple[str, str | list[str], bool]] = {
    "hlf": ("hlf_classifier", "hlf", False),
    "particle_sequence": ("particle_sequence_classifier", "llf", True),
    "inclusive": ("inclusive_classifier", ["llf", "hlf"], True),
}
LOSS = "categorical_crossentropy"
KERAS = "keras"     # trainer name for the plain model.fit baseline


@dataclass
class Run:
    """One trained model and its cost (``samples`` = training rows × epochs, ``seconds`` = the
    wall time of ``fit``)."""

    name: str
    trainer: str
    model_name: str
    workers: int
    epochs: int
    batch_size: int
    seconds: float
    samples: int
    model: Any = field(repr=False, default=None)     # a distkeras.model.KerasModel

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def info(self) -> dict[str, Any]:
        """The run as JSON-able values (no model)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        return {**d, "samples_per_s": self.samples_per_s}


def trainer_names() -> list[str]:
    """Names accepted by `make_trainer` (``ADAG``, ``SingleTrainer``, ...)."""
    from distkeras import trainers

    return [n for n in trainers.__all__ if n != "Trainer"]


def workers_of(trainer: str, num_workers: int) -> int:
    """The workers a run of ``trainer`` trains with: none for ``keras`` (the driver's
    ``model.fit``), the trainer's fixed count (SingleTrainer: 1), else ``num_workers``."""
    if trainer.lower() == KERAS:
        return 0
    return int(_trainer_class(trainer).fixed.get("num_workers", num_workers))


def _trainer_class(trainer: str) -> type:
    """The `distkeras.trainers` class named ``trainer`` (case-insensitive)."""
    from distkeras import trainers

    names = {n.lower(): n for n in trainer_names()}
    if trainer.lower() not in names:
        raise ValueError(f"unknown trainer {trainer!r}; choose from {trainer_names()}")
    return getattr(trainers, names[trainer.lower()])


def build_model(name: str, learning_rate: float | None = None, compile: bool = True):
    """A topology classifier by name: ``hlf``, ``particle_sequence`` or ``inclusive``.

    >>> build_model("hlf").count_params()  # doctest: +SKIP
    2013
    """
    from distkeras import models

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return getattr(models, MODELS[name][0])(compile=compile, learning_rate=learning_rate)


def make_trainer(trainer: str, model, features_col, *, num_workers: int = 2, batch_size: int = 32,
                 epochs: int = 5, learning_rate: float | None = None,
                 worker_optimizer: str | None = None, communication_window: int | None = None,
                 verbose: bool = True, **params):
    """A `distkeras.trainers` trainer by case-insensitive name, e.g.
    ``make_trainer("adag", build_model("hlf"), "hlf", num_workers=4)``; ``None`` options keep the
    trainer's defaults."""
    cls = _trainer_class(trainer)
    kwargs: dict[str, Any] = dict(loss=LOSS, num_workers=num_workers, batch_size=batch_size,
                                  epochs=epochs, features_col=features_col,
                                  label_col=LABEL_COL, verbose=verbose, **params)
    for key, value in (("worker_optimizer", worker_optimizer), ("learning_rate", learning_rate),
                       ("communication_window", communication_window)):
        if value is not None:
            kwargs[key] = value
    for key in cls.fixed:       # SingleTrainer: one worker, whatever the run's count
        kwargs.pop(key, None)
    return cls(model, **kwargs)


def train(train_df, model_name: str = "hlf", trainer: str = "ADAG", *, num_workers: int = 2,
          epochs: int = 5, batch_size: int = 32, learning_rate: float | None = None,
          worker_optimizer: str | None = None, communication_window: int | None = None,
          validation_df=None, name: str | None = None, verbose: bool = True,
          **params) -> Run:
    """Train ``model_name`` with a distkeras trainer (or ``trainer="keras"``: `train_keras`).

    ``validation_df`` is evaluated on the centre variable after every epoch (``val_*`` curves);
    ``params`` are further trainer Params (the rule's own, ``mlflow=True``, ...).
    """
    if trainer.lower() == KERAS:
        if params.get("mlflow"):
            log.warning("mlflow= applies to distkeras trainers; for the plain Keras baseline "
                        "call mlflow.keras.autolog() first")
        return train_keras(train_df, model_name, epochs=epochs, batch_size=batch_size,
                           learning_rate=learning_rate, validation_df=validation_df,
                           **({"name": name} if name else {}))
    model = build_model(model_name)
    est = make_trainer(trainer, model, MODELS[model_name][1], num_workers=num_workers,
                       batch_size=batch_size, epochs=epochs, learning_rate=learning_rate,
                       worker_optimizer=worker_optimizer, communication_window=communication_window,
                       verbose=verbose, **params)
    rows = train_df.count()
    log.info("training %s with %r on %d rows", model_name, est, rows)
    t0 = time.perf_counter()
    fitted = est.fit(train_df, validation_data=validation_df)
    seconds = time.perf_counter() - t0
    done = len(fitted.history.get("loss", [])) or epochs
    run = Run(name or f"{type(est).__name__} x{est.getNumWorkers()}", type(est).__name__, model_name,
              est.getNumWorkers(), done, batch_size, seconds, rows * done, fitted)
    log.info("%s: %.1f s, %.0f samples/s", run.name, seconds, run.samples_per_s)
    return run


def train_keras(train_df, model_name: str = "hlf", *, epochs: int = 5, batch_size: int = 32,
                learning_rate: float | None = None, validation_df=None, seed: int = 42,
                name: str = "Keras model.fit (driver)", verbose: int = 2) -> Run:
    """The single-machine baseline: ``model.fit`` in this process on the same rows (collected
    through Arrow) and epochs. ``seconds`` is ``fit``'s wall time (data collection excluded);
    the fitted model is wrapped in a `KerasModel`, so it scores DataFrames like the others."""
    import keras

    from distkeras.driver.data import collect_arrays
    from distkeras.feed import feed_spec_for, model_inputs
    from distkeras.model import KerasModel, describe_output

    keras.utils.set_random_seed(seed)
    model = build_model(model_name, learning_rate=learning_rate)
    feed = feed_spec_for(model, MODELS[model_name][1], LABEL_COL, LOSS)
    x, y = collect_arrays(train_df, feed, "training data")
    val = None
    if validation_df is not None:
        vx, vy = collect_arrays(validation_df, feed)
        val = (model_inputs(vx), vy)
    starts: list[float] = []
    seconds_per_epoch: list[float] = []
    clock = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: starts.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: seconds_per_epoch.append(time.perf_counter() - starts[-1]))
    log.info("training %s with keras model.fit in the driver on %d rows", model_name, len(y))
    t0 = time.perf_counter()
    hist = model.fit(model_inputs(x), y, batch_size=batch_size, epochs=epochs,
                     validation_data=val, verbose=verbose, callbacks=[clock], shuffle=True)
    seconds = time.perf_counter() - t0
    history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
    history["epoch_seconds"] = seconds_per_epoch
    fitted = KerasModel(model, history=history, feed=feed, output=describe_output(model, LOSS))
    run = Run(name, KERAS, model_name, 1, epochs, batch_size, seconds, len(y) * epochs, fitted)
    log.info("%s: %.1f s, %.0f samples/s", run.name, seconds, run.samples_per_s)
    return run


def save_run(run: Run, out_dir: str, history_png: str | None = None) -> dict[str, str]:
    """Write the model (``distkeras.load_model(out_dir)`` reads it), ``history.json`` (with the
    parameter-server statistics), ``training.json`` and the training curves (``history_png``,
    default ``out_dir/history.png``). Returns the paths."""
    from distkeras.evaluation import plot_history

    run.model.save(out_dir, overwrite=True)      # a rerun of a job replaces its output
    hist = run.model.history
    payload = {"history": dict(hist), "ps_stats": getattr(hist, "ps_stats", None),
               "workers": getattr(hist, "workers", None)}
    paths = {"model": out_dir, "history": os.path.join(out_dir, "history.json"),
             "training": os.path.join(out_dir, "training.json"),
             "history_png": history_png or os.path.join(out_dir, "history.png")}
    with open(paths["history"], "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, default=str)
    with open(paths["training"], "w", encoding="utf-8") as fh:
        json.dump(run.info(), fh, indent=1)
    plot_history(hist, paths["history_png"], title=run.name)
    log.info("saved %s to %s", run.name, out_dir)
    return paths


def load_run(path: str) -> Run:
    """A `Run` from a directory written by `save_run` (a bare saved model works too)."""
    from distkeras.model import load_model

    model = load_model(path)
    info_path = os.path.join(path, "training.json")
    if not os.path.exists(info_path):
        name = os.path.basename(os.path.normpath(path))
        return Run(name, "?", "?", 0, len(model.history.get("loss", [])), 0, 0.0, 0, model)
    with open(info_path, encoding="utf-8") as fh:
        info = json.load(fh)
    info.pop("samples_per_s", None)
    return Run(**info, model=model)
