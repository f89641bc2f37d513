"""A Keras model's inputs and outputs, from the model itself: the shapes of its inputs (its
``Input``s, else the shapes it was built or first called with), the names and shapes of its
outputs, a few deterministic rows to call it on, and its layers. Works for functional,
Sequential and subclassed models alike.

Example::

    input_shapes(model)          # [(14,)]
    output_specs(model)          # [("output", (3,))]
    outputs(model, sample_inputs(model))
"""
from __future__ import annotations

import numpy as np


def layers(model, include_self: bool = False) -> list:
    """Every layer of ``model``, nested ones included."""
    return list(model._flatten_layers(include_self=include_self, recursive=True))


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


def output_specs(model, shapes: list[tuple[int, ...]] | None = None
                 ) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, per-example shape)`` of each output, in Keras' order (outputs returned as a
    dict come sorted by name, as ``model.outputs`` and Keras' losses take them): from the
    model's outputs when it has them (functional, Sequential), else by calling it on a few
    rows of ``shapes``."""
    tensors = getattr(model, "outputs", None)
    if tensors:
        names = list(getattr(model, "output_names", None) or [])
        if len(names) != len(tensors):
            names = [f"output_{i}" for i in range(len(tensors))]
        return [(n, tuple(int(d) for d in t.shape[1:])) for n, t in zip(names, tensors)]
    from keras import tree

    out = _call(model, shapes or input_shapes(model))
    if isinstance(out, dict):
        named = [(".".join(str(p) for p in path), o) for path, o in tree.flatten_with_path(out)]
    else:
        named = [(f"output_{i}", o) for i, o in enumerate(output_list(out))]
    return [(n, tuple(o.shape[1:])) for n, o in named]


def outputs_by_name(model, shapes: list[tuple[int, ...]] | None = None) -> bool:
    """Whether ``model`` returns its outputs as a dict (named, not ordered by the user)."""
    struct = getattr(model, "_outputs_struct", None)      # functional models
    if getattr(model, "outputs", None):
        return isinstance(struct, dict)
    return isinstance(_call(model, shapes or input_shapes(model)), dict)


def _call(model, shapes: list[tuple[int, ...]]):
    inputs = sample_inputs(model, 2, shapes)
    return model(inputs[0] if len(inputs) == 1 else inputs, training=False)


def output_list(out) -> list:
    """A model's output as a flat list, in Keras' order (``keras.tree.flatten``, as
    ``model.outputs`` and its losses take them: a dict's values sorted by name)."""
    from keras import tree

    return list(tree.flatten(out))


def sample_inputs(model, rows: int = 4, shapes: list[tuple[int, ...]] | None = None
                  ) -> list[np.ndarray] | None:
    """A few deterministic rows for each input of ``model`` (uniform in [0, 1): valid indices
    for an Embedding too), or None when the input shapes are not known (``shapes``: given
    where the model does not say)."""
    shapes = shapes or input_shapes(model)
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


def outputs(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """``model``'s outputs on ``inputs`` (float64 arrays, in Keras' order)."""
    import keras

    out = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
    return [np.asarray(keras.ops.convert_to_numpy(o), dtype=np.float64)
            for o in output_list(out)]
