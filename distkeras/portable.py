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

import copy
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from distkeras.custom_objects import find_custom_objects, ship_by_value
from distkeras.errors import ModelError
from distkeras.rebuild import not_serialisable, verify_rebuild
from distkeras.signature import layers


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

    def architecture(self) -> str:
        """A digest of everything that makes the model's computation, none of its weights: the
        archive's config (layers, their settings and dtype policies, a Lambda's code), its
        assets (a lookup layer's vocabulary) and the code of the custom objects. Two models
        with the same digest compile to the same training step."""
        return self._digest(weights=False)

    def content(self) -> str:
        """A digest of all the model is, but when its archive was saved: the architecture with
        the layers' names, and the weights. Two models with the same digest predict the same.

        Example::

            PortableModel.of(model).content() == PortableModel.of(model).content()   # True
        """
        return self._digest(weights=True)

    def _digest(self, weights: bool) -> str:
        import hashlib
        import io
        import zipfile

        from pyspark import cloudpickle

        with zipfile.ZipFile(io.BytesIO(self.archive)) as archive:
            config = json.loads(archive.read("config.json"))
            digest = hashlib.sha256((json.dumps(config, sort_keys=True) if weights
                                     else _without_names(config)).encode())
            for member in sorted(archive.namelist()):     # assets: an adapted vocabulary
                if member not in ("config.json", "metadata.json") and (
                        weights or member != "model.weights.h5"):
                    digest.update(member.encode() + archive.read(member))
        for name in sorted(self.custom_objects):
            digest.update(name.encode() + cloudpickle.dumps(self.custom_objects[name]))
        digest.update(b"loss_scaling" if self.loss_scaling else b"")
        return digest.hexdigest()

    def compile(self, model, loss, optimizer, metrics=None, loss_weights=None,
                weighted_metrics=None) -> None:
        """``model.compile`` as Keras' ``fit`` would have it for this model: the optimizer
        wrapped for loss scaling under ``mixed_float16``."""
        import keras

        with keras.saving.custom_object_scope(self.custom_objects):
            opt = deserialize(keras.optimizers, optimizer) if isinstance(optimizer, dict) \
                else keras.optimizers.get(optimizer or "adam")
            if self.loss_scaling and not isinstance(opt, keras.optimizers.LossScaleOptimizer):
                opt = keras.optimizers.LossScaleOptimizer(opt)
            model.compile(optimizer=opt, loss=deserialize_structure(loss, keras.losses),
                          metrics=deserialize_structure(metrics or [], keras.metrics),
                          loss_weights=loss_weights,
                          weighted_metrics=None if weighted_metrics is None else
                          deserialize_structure(weighted_metrics, keras.metrics))


def register(objects: dict[str, Any]) -> None:
    """Make ``objects`` known to Keras in this process (an executor's Python worker), so that
    configs naming them deserialise anywhere in it, not only inside a scope."""
    if objects:
        import keras

        keras.saving.get_custom_objects().update(objects)


#: what a replica is compiled with: the keyword arguments of :meth:`PortableModel.compile`
#: (``CompileSettings.arguments()`` gives them, the task carries them)
COMPILE_ARGUMENTS = ("loss", "optimizer", "metrics", "loss_weights", "weighted_metrics")


def learning_rate_config(config: dict) -> dict:
    """The config holding the learning rate (a LossScaleOptimizer's inner optimizer's)."""
    inner = config["config"].get("inner_optimizer")
    return inner["config"] if isinstance(inner, dict) else config["config"]


def deserialize(module, config: dict):
    """``module.deserialize(config)`` (``keras.optimizers``, ``keras.losses``...) on a copy:
    some ``from_config`` consume their config (``LossScaleOptimizer`` pops its inner
    optimizer), and the same config builds the driver's model and then every replica."""
    return module.deserialize(copy.deepcopy(config))


def deserialize_structure(value, module):
    """A loss or metric as ``compile`` takes it, from its serialised form: a name, a Keras
    config dict, or a list / dict per output of those."""
    if isinstance(value, dict) and "class_name" in value:
        return deserialize(module, value)
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
            raise ModelError(not_serialisable(model, exc)) from None
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


IGNORED = ("shared_object_id",     # an object's address
           "compile_config")      # the loss, optimizer and metrics: the fit's own, keyed apart


def _without_names(config: dict) -> str:
    """A model's config as JSON with the names of its layers (those of every ``layers`` list,
    nested models' included, and the model's own) replaced by their order of appearance, and
    what is not the model's computation left out (``IGNORED``): a model built again in a notebook
    gets new names (``dense_7``), not a new computation. Any other difference stays."""
    names: list[str] = []

    def name_of(entry) -> str | None:
        inner = entry.get("config") if isinstance(entry, dict) else None
        name = inner.get("name") if isinstance(inner, dict) else None
        return name if isinstance(name, str) else None

    def walk(node):
        if isinstance(node, dict):
            for entry in node.get("layers") if isinstance(node.get("layers"), list) else ():
                if name_of(entry) is not None:
                    names.append(name_of(entry))
            return {k: walk(v) for k, v in node.items() if k not in IGNORED}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    if name_of(config) is not None:
        names.append(name_of(config))
    text = json.dumps(walk(config), sort_keys=True)
    for k, name in enumerate(dict.fromkeys(names)):
        text = text.replace(json.dumps(name), f'"#layer{k}"')
    return text


def _require_built(model) -> None:
    if not model.built or not model.weights:
        raise ModelError(
            f"the Keras model {model.name!r} has no weights yet: give it an Input (functional or "
            "Sequential), or call it once on a batch of data (model(x[:1])) or "
            "model.build(input_shape), so that its weights exist before training")


def _uses_loss_scaling(model) -> bool:
    names = {getattr(model.dtype_policy, "name", "")} | {
        getattr(getattr(layer, "dtype_policy", None), "name", "") for layer in layers(model)}
    return "mixed_float16" in names
