"""A user's Keras model as it travels: to the executors, into a trainer's copy, to disk.

Keras can rebuild a model exactly only from its own saving format: the ``.keras`` archive holds
the config, every variable (trainable weights, BatchNorm moving statistics, an adapted
``Normalization``'s mean and variance, counters) and the assets that are not variables at all
(the vocabulary of an adapted ``StringLookup``). A JSON config plus ``get_weights()`` loses the
last two. So a model travels as its archive's bytes, plus the **custom objects** it needs
(layers, losses, metrics, activations, initializers, a subclassed model's own class) defined
where the executors cannot import them: a notebook, a ``__main__`` script, a test module. Those
go by value on Spark's own channel (cloudpickle in the task closure), never on distkeras'
sockets, and are registered in the executor before the archive is read.

Before a run, :meth:`PortableModel.of` rebuilds the model from what will travel and checks that
the copy has the same variables, values and outputs as the user's model: a model that would be
rebuilt differently (a custom layer whose ``get_config`` misses an argument, a subclassed model
Keras cannot serialise) is refused at once, naming the layer and the fix, instead of training
something else.

Example::

    portable = PortableModel.of(model, custom_objects={"Scaled": Scaled})
    again = portable.build()          # in an executor: the same model, state and outputs
"""
from __future__ import annotations

import os
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class ModelError(ValueError):
    """The Keras model cannot travel as it is; the message says why and what to change."""


SUBCLASSING_GUIDE = ("https://keras.io/guides/making_new_layers_and_models_via_subclassing/"
                     "#serialization")


@dataclass
class PortableModel:
    """A Keras model's ``.keras`` archive and the custom objects needed to read it back.

    ``loss_scaling``: the model computes in ``mixed_float16``, so its optimizer must scale the
    loss (Keras wraps it in a ``LossScaleOptimizer`` at ``compile``; a model read back from its
    archive does not remember the global policy it was built under, so the flag travels here).
    """

    archive: bytes
    custom_objects: dict[str, Any] = field(default_factory=dict)
    loss_scaling: bool = False

    @classmethod
    def of(cls, model, custom_objects: dict[str, Any] | None = None,
           extra_configs: tuple = (), check: bool = True) -> "PortableModel":
        """The portable form of ``model``; with ``check``, rebuilt once here and compared with
        ``model`` (variables, values, outputs on a few generated rows). ``extra_configs``: the
        serialised loss, metrics and optimizer, whose custom objects travel too."""
        _require_built(model)
        objects = find_custom_objects(model, custom_objects, extra_configs)
        ship_by_value(objects.values())
        portable = cls(_save(model), objects, _uses_loss_scaling(model))
        if check:
            verify_rebuild(model, portable.build())
        return portable

    def build(self):
        """The model, read back from the archive (not compiled)."""
        import keras

        register(self.custom_objects)
        with keras.saving.custom_object_scope(self.custom_objects):
            return _load(self.archive)

    def compile(self, model, loss, optimizer, metrics=None, loss_weights=None) -> None:
        """``model.compile`` as Keras' ``fit`` would have it for this model: the optimizer
        wrapped for loss scaling under ``mixed_float16``."""
        import keras

        with keras.saving.custom_object_scope(self.custom_objects):
            opt = keras.optimizers.deserialize(optimizer) if isinstance(optimizer, dict) \
                else keras.optimizers.get(optimizer or "adam")
            if self.loss_scaling and not isinstance(opt, keras.optimizers.LossScaleOptimizer):
                opt = keras.optimizers.LossScaleOptimizer(opt)
            model.compile(optimizer=opt, loss=deserialize_structure(loss, keras.losses),
                          metrics=deserialize_structure(metrics or [], keras.metrics),
                          loss_weights=loss_weights)


def register(objects: dict[str, Any]) -> None:
    """Make ``objects`` known to Keras in this process (an executor's Python worker), so that
    configs naming them deserialise anywhere in it, not only inside a scope."""
    if objects:
        import keras

        keras.saving.get_custom_objects().update(objects)


def deserialize_structure(value, module):
    """A loss or metric as ``compile`` takes it, from its serialised form: a name, a Keras
    config dict, or a list / dict per output of those."""
    if isinstance(value, dict) and "class_name" in value:
        return module.deserialize(value)
    if isinstance(value, dict):
        return {k: deserialize_structure(v, module) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [deserialize_structure(v, module) for v in value]
    return value


def serialize_structure(value, module):
    """The inverse of :func:`deserialize_structure`: objects become Keras config dicts."""
    if value is None or isinstance(value, str) or (isinstance(value, dict)
                                                   and "class_name" in value):
        return value
    if isinstance(value, dict):
        return {k: serialize_structure(v, module) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [serialize_structure(v, module) for v in value]
    return module.serialize(value)


# -- the archive -------------------------------------------------------------------------------
def _save(model) -> bytes:
    with tempfile.TemporaryDirectory(prefix="distkeras-") as tmp:
        path = os.path.join(tmp, "model.keras")
        try:
            model.save(path)
        except NotImplementedError as exc:
            raise ModelError(_not_serialisable(model, exc)) from None
        with open(path, "rb") as fh:
            return fh.read()


def _load(archive: bytes):
    import keras

    with tempfile.TemporaryDirectory(prefix="distkeras-") as tmp:
        path = os.path.join(tmp, "model.keras")
        with open(path, "wb") as fh:
            fh.write(archive)
        # safe_mode off: the archive is the user's own model from their own session (a Lambda
        # layer's code included), sent on Spark's channel, not a file from elsewhere
        return keras.saving.load_model(path, compile=False, safe_mode=False)


def _not_serialisable(model, exc: BaseException) -> str:
    first = " ".join(str(exc).split())[:300]
    import keras

    culprit = next((layer for layer in _layers(model, include_self=True)
                    if not _module_of(type(layer)).startswith("keras")
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


def _require_built(model) -> None:
    if not model.built or not model.weights:
        raise ModelError(
            f"the Keras model {model.name!r} has no weights yet: give it an Input (functional or "
            "Sequential), or call it once on a batch of data (model(x[:1])) or "
            "model.build(input_shape), so that its weights exist before training")


def _uses_loss_scaling(model) -> bool:
    names = {getattr(model.dtype_policy, "name", "")} | {
        getattr(getattr(layer, "dtype_policy", None), "name", "") for layer in _layers(model)}
    return "mixed_float16" in names


def _layers(model, include_self: bool = False) -> list:
    return list(model._flatten_layers(include_self=include_self, recursive=True))


# -- custom objects ------------------------------------------------------------------------------
def find_custom_objects(model, given: dict[str, Any] | None = None,
                        extra_configs: tuple = ()) -> dict[str, Any]:
    """Every object outside Keras that reading ``model`` back needs, by the name Keras looks
    up: the classes of its layers (and of the model itself when subclassed), and whatever its
    config, and the loss / metric / optimizer configs in ``extra_configs``, name by module
    (activations, initializers, regularizers, losses, ...), plus ``given``."""
    import keras
    from keras.saving import get_registered_name

    registry = keras.saving.get_custom_objects()
    found: dict[str, Any] = {}
    for layer in _layers(model, include_self=True):
        cls = type(layer)
        if not _module_of(cls).startswith("keras"):
            found[get_registered_name(cls)] = cls
    configs = [_model_config(model), *extra_configs]
    for node in _config_nodes(configs):
        registered = node.get("registered_name")
        if isinstance(registered, str) and registered in registry:
            found[registered] = registry[registered]
            continue
        module = node.get("module")
        if isinstance(module, str) and (module == "keras" or module.startswith(("keras.",
                                                                                "builtins"))):
            continue
        name = node["config"] if node.get("class_name") == "function" else node.get("class_name")
        obj = _resolve(module or "__main__", name)
        if obj is not None:
            found[registered if isinstance(registered, str) else name] = obj
    found.update(given or {})
    return found


def _model_config(model) -> dict:
    from keras.saving import serialize_keras_object

    try:
        return serialize_keras_object(model)
    except NotImplementedError as exc:
        raise ModelError(_not_serialisable(model, exc)) from None


def _config_nodes(value):
    """Every dict of a serialised config that names an object (``class_name``)."""
    if isinstance(value, dict):
        if isinstance(value.get("class_name"), str):
            yield value
        for item in value.values():
            yield from _config_nodes(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _config_nodes(item)


def _resolve(module: str, name) -> Any:
    target = sys.modules.get(module)
    return getattr(target, name, None) if target is not None and isinstance(name, str) else None


def _module_of(obj) -> str:
    return getattr(obj, "__module__", None) or ""


def ship_by_value(objects) -> None:
    """Send the code of ``objects`` (classes, functions, rules) by value in Spark's task
    closures when it is the user's own code (a notebook, a script, a module beside it), which
    the executors may not be able to import; installed packages and distkeras travel by
    reference, as usual."""
    from pyspark import cloudpickle

    for obj in objects:
        if isinstance(obj, type):
            items = obj.__mro__                   # a class and the classes it builds on
        elif callable(obj) and hasattr(obj, "__code__"):
            items = (obj,)                        # a function
        else:
            items = type(obj).__mro__             # an instance (a rule, a loss object)
        for item in items:
            name = _module_of(item)
            module = sys.modules.get(name)
            if module is None or name in ("__main__", "builtins") or not _is_user_code(module):
                continue        # __main__ goes by value anyway; installed code by reference
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:  # registered already, or not a plain module
                pass


_INSTALLED = tuple(p for p in {sysconfig.get_paths()[k] for k in ("purelib", "platlib",
                                                                    "stdlib", "platstdlib")})


def _is_user_code(module) -> bool:
    """A module of the user's own (not installed, not the standard library, not distkeras)."""
    path = getattr(module, "__file__", None)
    return module.__name__.split(".")[0] != "distkeras" and path is not None \
        and is_user_file(path)


_DISTKERAS = os.path.dirname(os.path.abspath(__file__)) + os.sep


def is_user_file(path: str) -> bool:
    """A source file of the user's own: not in Python, an installed package or distkeras
    (a notebook cell's ``<ipython-input-…>`` counts as the user's)."""
    path = os.path.abspath(path) if not path.startswith("<") else path
    if path.startswith("<"):
        return "ipython-input" in path or path.startswith("<stdin")
    return not path.startswith(_DISTKERAS) and not any(
        path.startswith(os.path.abspath(p) + os.sep) for p in _INSTALLED)


# -- the check ---------------------------------------------------------------------------------
def verify_rebuild(model, rebuilt) -> None:
    """Raise :class:`ModelError` unless ``rebuilt`` has ``model``'s variables (paths, shapes,
    values) and computes its outputs on a few generated rows."""
    original, copy = model.weights, rebuilt.weights   # seed generators' states are not saved
    if len(original) != len(copy):
        raise ModelError(_variables_differ(model, rebuilt))
    for a, b in zip(original, copy):
        va, vb = np.asarray(a.numpy()), np.asarray(b.numpy())
        if va.shape != vb.shape or va.dtype != vb.dtype:
            raise ModelError(_variables_differ(model, rebuilt))
        if not np.array_equal(va, vb, equal_nan=True):
            raise ModelError(f"the variable {a.path} of {model.name!r} comes back with other "
                             "values when the model is rebuilt from its .keras archive; its "
                             "layer's save_own_variables()/load_own_variables() lose it")
    inputs = sample_inputs(model)
    if inputs is None:
        return
    want, got = _outputs(model, inputs), _outputs(rebuilt, inputs)
    for a, b in zip(want, got):
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True):
            raise ModelError(_outputs_differ(model, rebuilt))


def sample_inputs(model, rows: int = 4) -> list[np.ndarray] | None:
    """A few deterministic rows for each input of ``model`` (uniform in [0, 1): valid indices
    for an Embedding too), or None when the input shapes are not known."""
    shapes = input_shapes(model)
    if shapes is None:
        return None
    rng = np.random.default_rng(0)
    dtypes = [str(getattr(t, "dtype", "float32")) for t in (getattr(model, "inputs", None)
                                                          or [None] * len(shapes))]
    out = []
    for shape, dtype in zip(shapes, dtypes):
        values = rng.random((rows,) + tuple(shape))
        out.append(values.astype("int32" if "int" in dtype else "float32"))
    return out


def input_shapes(model) -> list[tuple[int, ...]] | None:
    """Per-example shape of each input: from the model's ``Input``s, else from the shapes it
    was built or first called with; None when unknown."""
    tensors = getattr(model, "inputs", None)
    if tensors:
        shapes = [tuple(t.shape[1:]) for t in tensors]
    else:
        config = model.get_build_config() if hasattr(model, "get_build_config") else None
        shape = (config or {}).get("input_shape")
        if shape is None:
            return None
        nested = isinstance(shape, (list, tuple)) and shape and isinstance(shape[0],
                                                                          (list, tuple))
        shapes = [tuple(s[1:]) for s in (shape if nested else [shape])]
    if any(d is None for s in shapes for d in s):
        return None
    return [tuple(int(d) for d in s) for s in shapes]


def _outputs(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    out = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
    items = out if isinstance(out, (list, tuple)) else (list(out.values())
                                                        if isinstance(out, dict) else [out])
    return [np.asarray(o, dtype=np.float64) for o in items]


def _variables_differ(model, rebuilt) -> str:
    for layer, again in zip(_layers(model), _layers(rebuilt)):
        if [tuple(w.shape) for w in layer.weights] != [tuple(w.shape) for w in again.weights]:
            return (f"layer {layer.name!r} ({type(layer).__name__}) has weights "
                    f"{[tuple(w.shape) for w in layer.weights]} in your model but "
                    f"{[tuple(w.shape) for w in again.weights]} when rebuilt from its config: "
                    "its get_config() misses an argument that build() depends on")
    return (f"{model.name!r} has {len(model.weights)} variables but "
            f"{len(rebuilt.weights)} when rebuilt from its config: a custom layer's "
            "get_config() misses an argument, or it creates variables outside build()")


def _outputs_differ(model, rebuilt) -> str:
    for layer, again in zip(_layers(model), _layers(rebuilt)):
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


def output_specs(model, shapes: list[tuple[int, ...]] | None = None
                 ) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, per-example shape)`` of each output: from the model's outputs when it has
    them (functional, Sequential), else by calling it on a few rows of ``shapes``."""
    tensors = getattr(model, "outputs", None)
    if tensors:
        names = list(getattr(model, "output_names", None) or [])
        if len(names) != len(tensors):
            names = [f"output_{i}" for i in range(len(tensors))]
        return [(n, tuple(int(d) for d in t.shape[1:])) for n, t in zip(names, tensors)]
    shapes = shapes or input_shapes(model)
    rng = np.random.default_rng(0)
    inputs = [rng.random((2,) + tuple(s)).astype("float32") for s in shapes]
    outs = _outputs(model, inputs)
    return [(f"output_{i}", tuple(o.shape[1:])) for i, o in enumerate(outs)]
