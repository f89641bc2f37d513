"""Custom objects: what reading a model back needs beyond Keras (the classes of its layers, a
subclassed model's own class, and whatever its config and its loss, metric and optimizer
configs name by module), and how they travel: by value on Spark's channel when they are the
user's own code, by reference when installed.

Example::

    objects = find_custom_objects(model, {"Scaled": Scaled})
    ship_by_value(objects.values())      # then they travel in the task closure
"""
from __future__ import annotations

import os
import sys
import sysconfig
from typing import Any

from distkeras.errors import ModelError
from distkeras.rebuild import not_serialisable
from distkeras.signature import layers


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
    for layer in layers(model, include_self=True):
        cls = type(layer)
        if not module_of(cls).startswith("keras"):
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
        raise ModelError(not_serialisable(model, exc)) from None


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


def module_of(obj) -> str:
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
            name = module_of(item)
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

