"""Saving and loading trainers and fitted models as pyspark.ml stages (MLWritable / MLReadable).

A saved stage is a directory, a local path or any Hadoop filesystem URI (``file://``,
``hdfs://``, ``s3a://``, ...)::

    metadata/part-00000   pyspark.ml's metadata: class, uid, Params as JSON (as DefaultParamsWriter)
    model.keras           the Keras model (θ̃ for parameter-server runs)
    member_<i>.keras      the members of an ensemble
    distkeras.json        a fitted model's feed (columns → inputs), output kind and history

The metadata is pyspark.ml's own format, so ``Pipeline``/``PipelineModel`` holding distkeras
stages save and load with pyspark.ml's Pipeline writer and reader, and
``distkeras.load_model(path)`` reads what ``KerasModel.save`` wrote. Nothing is pickled: Keras
models are ``.keras`` files, optimizers and losses their Keras configs, a user-defined update
algorithm its importable class name and constructor arguments.

A trainer's ``callbacks``, ``validation_data`` and ``custom_objects`` are live objects (a
DataFrame, callbacks with state, classes): they are not saved, and ``save`` logs which were left
out. Loading a model with custom layers needs their classes, as Keras' own ``load_model`` does:
registered in the loading process, or given as ``distkeras.load_model(path, custom_objects=)``.

Example::

    ADAG(model, num_workers=4).save("hdfs:///user/me/adag")
    trainer = ADAG.load("hdfs:///user/me/adag")
    PipelineModel.load("file:///tmp/pipeline").transform(df)
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import tempfile
import time
from typing import Any

import numpy as np
from pyspark.ml.util import MLReader, MLWriter

from distkeras.io.filesystem import filesystem

log = logging.getLogger(__name__)
FORMAT = 2      # 1: distkeras.json only (before the pyspark.ml metadata)


# -- the files ------------------------------------------------------------------------------------
def _spark():
    """The active SparkSession, or None (local paths need none)."""
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


def _fs(path: str):
    """A URI goes through the active session's filesystem (Hadoop's on a classic session,
    pyarrow's on Spark Connect or with no session); a plain path through Python."""
    return filesystem(_spark() if "://" in str(path) else None, path)


def write_metadata(instance, path: str, params: dict, extra: dict | None = None) -> None:
    """pyspark.ml's metadata of ``instance`` (JSON-able ``params``) under ``path/metadata``."""
    import pyspark

    defaults = {p.name: _jsonable(v) for p, v in instance._defaultParamMap.items()}
    meta = {"class": f"{type(instance).__module__}.{type(instance).__name__}",
            "timestamp": int(round(time.time() * 1000)), "sparkVersion": pyspark.__version__,
            "uid": instance.uid, "paramMap": params, "defaultParamMap": defaults,
            "language": "Python", **(extra or {})}
    fs = _fs(path)
    fs.write(fs.join("metadata", "part-00000"), (json.dumps(meta) + "\n").encode())


def read_metadata(path: str) -> dict | None:
    """The metadata ``write_metadata`` (or pyspark.ml's writer) left under ``path``."""
    fs = _fs(path)
    parts = sorted(f for f in _fs(fs.join("metadata")).list() if f.startswith("part-"))
    if not parts:
        return None
    text = fs.read(fs.join("metadata", parts[0])).decode().strip()
    return json.loads(text.splitlines()[0])


def write_keras(model, path: str, name: str) -> None:
    """``model`` as a ``.keras`` file ``path/name`` (local, or copied to a Hadoop URI)."""
    fs = _fs(path)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, name)
        model.save(local)
        with open(local, "rb") as fh:
            fs.write(fs.join(name), fh.read())


def read_keras(path: str, name: str):
    """The ``.keras`` file ``path/name``; custom objects as Keras finds them (registered, or
    in a ``keras.saving.custom_object_scope``: see :func:`distkeras.load_model`)."""
    import keras

    fs = _fs(path)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, name)
        with open(local, "wb") as fh:
            fh.write(fs.read(fs.join(name)))
        try:
            return keras.models.load_model(local)
        except TypeError as exc:
            if "Could not locate" not in str(exc) and "could not be deserialized" not in str(exc):
                raise
            raise TypeError(f"{path}/{name} needs a custom object this process does not know "
                            f"({' '.join(str(exc).split())[:300]}): import the module that "
                            "defines it (registered with keras.saving.register_keras_"
                            "serializable), or load with distkeras.load_model(path, "
                            "custom_objects={...})") from exc


def write_json(path: str, name: str, value: Any) -> None:
    fs = _fs(path)
    fs.write(fs.join(name), json.dumps(value, indent=1, default=_jsonable).encode())


def read_json(path: str, name: str, what: str = "stage") -> Any:
    fs = _fs(path)
    if not fs.exists(fs.join(name)):
        raise FileNotFoundError(f"{path} is not a saved distkeras {what} (no {name})")
    return json.loads(fs.read(fs.join(name)).decode())


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


# -- an algorithm as its class and constructor arguments -----------------------------------------
def encode_algorithm(algorithm) -> dict:
    """An algorithm (class or instance) as ``{"class": "module.Name", "config": {...}}``."""
    from distkeras.algorithms import Algorithm

    cls = algorithm if isinstance(algorithm, type) else type(algorithm)
    config = algorithm.get_config() if isinstance(algorithm, Algorithm) else None
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "config": _jsonable(config)}


def import_class(name: str) -> type:
    """The class a dotted ``module.Name`` names (ImportError or AttributeError if none)."""
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def decode_algorithm(encoded: dict):
    try:
        cls = import_class(encoded["class"])
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"the saved trainer's algorithm {encoded['class']} cannot be imported "
                          f"({exc}): install or import the module that defines it") from exc
    return cls if encoded.get("config") is None else cls(**encoded["config"])


# -- trainers -------------------------------------------------------------------------------------
def trainer_params_json(trainer) -> tuple[dict, list[str]]:
    """The trainer's set Params as JSON, and the names of those that cannot be saved."""
    import keras

    from distkeras.portable import serialize_structure

    params, skipped = {}, []
    for param, value in trainer._paramMap.items():
        name = param.name
        if name in ("callbacks", "validation_data", "custom_objects"):
            if value:
                skipped.append(name)
            continue
        if name == "loss":
            value = serialize_structure(value, keras.losses)
        elif name == "metrics":
            value = serialize_structure(value, keras.metrics)
        elif name == "worker_optimizer" and value is not None and not isinstance(value,
                                                                                (str, dict)):
            value = keras.optimizers.serialize(value)
        elif name == "algorithm" and value is not None:
            value = encode_algorithm(value)
        params[name] = _jsonable(value)
    json.dumps(params)      # fails here, naming nothing hidden, if a value is not JSON
    return params, skipped


class TrainerWriter(MLWriter):
    """Writes a trainer's Params and its Keras model (see the module docstring)."""

    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        trainer = self.instance
        params, skipped = trainer_params_json(trainer)
        if skipped:
            log.warning("%s.save(%s): %s not saved (live objects); set them again after "
                        "loading", type(trainer).__name__, path, " and ".join(skipped))
        write_metadata(trainer, path, params, {"distkeras": {"format": FORMAT}})
        if trainer.keras_model is not None:
            write_keras(trainer.keras_model, path, "model.keras")


class TrainerReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        meta = read_metadata(path)
        if meta is None:
            raise FileNotFoundError(f"{path} is not a saved distkeras trainer (no metadata/)")
        cls = _class(meta["class"], self.cls)
        fs = _fs(path)
        model = read_keras(path, "model.keras") if fs.exists(fs.join("model.keras")) else None
        trainer = cls(model)
        trainer._resetUid(meta["uid"])
        params = dict(meta["paramMap"])
        if params.get("algorithm") is not None:
            params["algorithm"] = decode_algorithm(params["algorithm"])
        for name, value in params.items():
            trainer._set(**{name: value})
        return trainer


# -- fitted models --------------------------------------------------------------------------------
class KerasModelWriter(MLWriter):
    """Writes a :class:`~distkeras.model.KerasModel`: metadata, ``.keras`` files, feed, history."""

    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        fitted = self.instance
        params = {p.name: _jsonable(v) for p, v in fitted._paramMap.items()}
        write_metadata(fitted, path, params, {"distkeras": {"format": FORMAT}})
        write_keras(fitted.keras_model, path, "model.keras")
        for i, member in enumerate(fitted.members):
            write_keras(member, path, f"member_{i}.keras")
        write_json(path, "distkeras.json", {
            "format": FORMAT, "feed": fitted.feed.to_dict() if fitted.feed else None,
            "members": len(fitted.members), "history": dict(fitted.history),
            "output": fitted.output, "prediction_col": fitted.getPredictionCol(),
            "batch_size": fitted.getBatchSize()})


class KerasModelReader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        from distkeras.feed import FeedSpec

        info = read_json(path, "distkeras.json", "model")
        if info.get("format") not in (1, FORMAT):
            raise ValueError(f"{path}: unsupported distkeras model format {info.get('format')}"
                             f" (this distkeras reads formats 1 and {FORMAT})")
        meta = read_metadata(path)
        cls = _class(meta["class"], self.cls) if meta else self.cls
        members = [read_keras(path, f"member_{i}.keras") for i in range(info["members"])]
        fitted = cls(read_keras(path, "model.keras"), history=info.get("history") or {},
                     feed=FeedSpec.from_dict(info["feed"]) if info.get("feed") else None,
                     members=members, output=info.get("output"))
        if meta is None:        # format 1: the columns were plain attributes
            fitted._set(prediction_col=info["prediction_col"],
                        batch_size=info.get("batch_size", 1024))
            return fitted
        fitted._resetUid(meta["uid"])
        for name, value in meta["paramMap"].items():
            fitted._set(**{name: value})
        return fitted


def _class(name: str, fallback: type) -> type:
    try:
        cls = import_class(name)
    except (ImportError, AttributeError):
        log.warning("saved class %s cannot be imported; loading as %s", name, fallback.__name__)
        return fallback
    if not issubclass(cls, fallback):
        raise TypeError(f"the stage saved there is a {name}, not a {fallback.__name__}: load "
                        f"it with {cls.__name__}.load")
    return cls


__all__ = ["TrainerWriter", "TrainerReader", "KerasModelWriter", "KerasModelReader"]
