"""Does a model come back the same from what travels? :func:`verify_rebuild` compares a model
with its copy read back from its ``.keras`` archive (variables, values, outputs on a few rows)
and names what differs and how to fix it: a layer whose ``get_config()`` forgets an argument,
state its ``save_own_variables()`` loses, a subclassed model built from something else.

Example::

    verify_rebuild(model, PortableModel.of(model, check=False).build())   # or ModelError
"""
from __future__ import annotations

from typing import Any

import numpy as np

from distkeras.errors import ModelError
from distkeras.signature import layers, outputs, sample_inputs


SUBCLASSING_GUIDE = ("https://keras.io/guides/making_new_layers_and_models_via_subclassing/"
                     "#serialization")


def verify_rebuild(model, rebuilt) -> None:
    """Raise :class:`ModelError` unless ``rebuilt`` has ``model``'s variables (in order, with
    their shapes, dtypes, values and trainable flags) and computes its outputs on a few
    generated rows."""
    original, copy = model.weights, rebuilt.weights   # seed generators' states are not saved
    if len(original) != len(copy):
        raise ModelError(_variables_differ(model, rebuilt))
    for a, b in zip(original, copy):
        va, vb = np.asarray(a.numpy()), np.asarray(b.numpy())
        if va.shape != vb.shape or va.dtype != vb.dtype:
            raise ModelError(_variables_differ(model, rebuilt))
        if bool(a.trainable) != bool(b.trainable):
            raise ModelError(f"the variable {a.path} of {model.name!r} is "
                             f"{_trainable(a)} in your model but {_trainable(b)} when the model "
                             "is rebuilt from its config, so the executors would train another "
                             "model: its layer's get_config() must return the argument that "
                             f"decides it ({SUBCLASSING_GUIDE})")
        if not np.array_equal(va, vb, equal_nan=True):
            raise ModelError(f"the variable {a.path} of {model.name!r} comes back with other "
                             "values when the model is rebuilt from its .keras archive; its "
                             "layer's save_own_variables()/load_own_variables() lose it")
    inputs = sample_inputs(model)
    if inputs is None:
        return
    want, got = outputs(model, inputs), outputs(rebuilt, inputs)
    for a, b in zip(want, got):
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True):
            raise ModelError(_outputs_differ(model, rebuilt))


def _trainable(variable) -> str:
    return "trainable" if variable.trainable else "not trainable"


def _variables_differ(model, rebuilt) -> str:
    for layer, again in zip(layers(model), layers(rebuilt)):
        if [tuple(w.shape) for w in layer.weights] != [tuple(w.shape) for w in again.weights]:
            return (f"layer {layer.name!r} ({type(layer).__name__}) has weights "
                    f"{[tuple(w.shape) for w in layer.weights]} in your model but "
                    f"{[tuple(w.shape) for w in again.weights]} when rebuilt from its config: "
                    "its get_config() misses an argument that build() depends on")
    return (f"{model.name!r} has {len(model.weights)} variables but "
            f"{len(rebuilt.weights)} when rebuilt from its config: a custom layer's "
            "get_config() misses an argument, or it creates variables outside build()")


def _outputs_differ(model, rebuilt) -> str:
    for layer, again in zip(layers(model), layers(rebuilt)):
        try:
            same = layer.get_config() == again.get_config()
        except Exception:  # noqa: BLE001 - a layer whose config cannot even be read
            same = False
        if not same or type(layer) is not type(again):
            return (f"layer {layer.name!r} ({type(layer).__name__}) is rebuilt differently "
                    "from its config, so the executors would train another model: its "
                    "get_config() must return every __init__ argument")
        for name, value in _plain_attributes(layer).items():
            other = _plain_attributes(again).get(name)
            if other != value:
                return (f"layer {layer.name!r} ({type(layer).__name__}) has {name}={value!r} in "
                        f"your model but {name}={other!r} when rebuilt from its config, so the "
                        f"executors would train another model: add {name!r} to its "
                        f"get_config() ({SUBCLASSING_GUIDE})")
    return (f"{model.name!r} rebuilt from its .keras archive computes different outputs: a "
            "custom layer keeps something outside its config and variables (an attribute set "
            f"after construction?); give it a complete get_config() ({SUBCLASSING_GUIDE})")


def _plain_attributes(layer) -> dict[str, Any]:
    """A layer's public attributes of plain value types (what a get_config should return)."""
    plain = (int, float, str, bool, type(None))
    return {k: v for k, v in vars(layer).items() if not k.startswith("_")
            and (isinstance(v, plain) or (isinstance(v, tuple)
                                           and all(isinstance(i, plain) for i in v)))}


def not_serialisable(model, exc: BaseException) -> str:
    """What to say when Keras cannot serialise ``model`` (``exc``): which layer or subclassed
    model lacks a config, and the two ways out."""
    first = " ".join(str(exc).split())[:300]
    import keras

    culprit = next((layer for layer in layers(model, include_self=True)
                    if not (type(layer).__module__ or "").startswith("keras")
                    and _config_error(layer) is not None), model)
    kind = ("a subclassed keras.Model" if isinstance(culprit, keras.Model)
            else "a custom layer")
    return (f"{type(culprit).__name__} is {kind} that Keras cannot rebuild from its config, so "
            f"it cannot be sent to the executors ({first}). Give {type(culprit).__name__} a "
            "get_config() returning every __init__ argument (and from_config() for arguments "
            f"that are layers or other objects: {SUBCLASSING_GUIDE}), or build the model with "
            "the functional API")


def _config_error(layer) -> BaseException | None:
    try:
        layer.get_config()
    except NotImplementedError as exc:
        return exc
    return None
