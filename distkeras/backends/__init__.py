"""Keras 3's backends: the user's choice (``KERAS_BACKEND``) runs on the driver and in every
worker. One file per backend (``tensorflow.py``, ``jax.py``, ``torch.py``), registered by the
name ``keras.backend.backend()`` gives it; the seam is :mod:`distkeras.backends.base`.

Example::

    from distkeras import backends
    backends.current().name            # "jax" when the driver runs KERAS_BACKEND=jax
    backend = backends.prepare("jax")  # in a Python worker, before Keras is imported
"""
from __future__ import annotations

import importlib
import os
import sys

from distkeras.backends.base import REGISTRY, Backend, FlatWeights, Steps, structure

__all__ = ["Backend", "BackendMismatch", "FlatWeights", "Steps", "configured", "current", "named",
           "prepare", "structure"]
_INSTANCES: dict[str, Backend] = {}


class BackendMismatch(RuntimeError):
    """A Python worker whose Keras already runs another backend than the driver's."""


def named(name: str) -> Backend:
    """The backend called ``name`` (one instance per process); ``ValueError`` for a name no
    file of this package implements."""
    if name not in _INSTANCES:
        if name not in REGISTRY:
            try:
                importlib.import_module(f"distkeras.backends.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"distkeras.backends.{name}":
                    raise
        if name not in REGISTRY:
            raise ValueError(f"Keras backend {name!r} is not supported by distkeras (it "
                             f"supports {sorted(_known())}); set KERAS_BACKEND to one of them")
        _INSTANCES[name] = REGISTRY[name]()
    return _INSTANCES[name]


def current() -> Backend:
    """The backend this process's Keras runs (imports Keras)."""
    import keras

    return named(keras.backend.backend())


def configured() -> str:
    """The backend Keras runs, or will run when imported, in this process (Keras' own order:
    ``KERAS_BACKEND``, then ``~/.keras/keras.json``, then TensorFlow); imports nothing."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        return keras.backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    import json

    config = os.path.join(os.environ.get("KERAS_HOME") or os.path.expanduser("~/.keras"),
                          "keras.json")
    try:
        with open(config) as fh:
            return json.load(fh).get("backend") or "tensorflow"
    except (OSError, ValueError):
        return "tensorflow"


def prepare(name: str, threads: int | None = None, gpus: list[str] | None = None,
            strict: bool = True) -> Backend:
    """Set up backend ``name`` in this Python worker before Keras is imported (the worker's
    environment normally carries ``KERAS_BACKEND`` already: ``Backend.environment``); a worker
    whose Keras already runs another backend is a :class:`BackendMismatch` that says the fix
    (``strict=False``: that backend is set up instead, for work whose result does not depend
    on the backend, like a prediction from a saved model)."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        running = keras.backend.backend()
        if running != name and not strict:
            name = running
        elif running != name:
            raise BackendMismatch(
                f"this Python worker already runs Keras on {running}, the driver's model on "
                f"{name}: every worker must run the driver's backend. Set KERAS_BACKEND={name} "
                f"in the executors' environment before their first task (spark.executorEnv."
                f"KERAS_BACKEND={name} on a cluster; on Spark Connect, in the server's "
                "environment), or restart the session's Python workers")
    else:
        os.environ["KERAS_BACKEND"] = name
    backend = named(name)
    backend.setup(threads, gpus)
    return backend


def _known() -> set[str]:
    here = os.path.dirname(__file__)
    return {f[:-3] for f in os.listdir(here) if f.endswith(".py") and f[0] != "_"} - {"base"}
