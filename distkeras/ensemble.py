"""An ensemble as one Keras model: the members side by side on the same inputs, each output the
mean of the members' (what ``transform`` and ``predict`` of an ensemble compute). The members
are trained independently, so the mean of their *parameters* would be no model at all; this is
the model an :class:`~distkeras.trainers.EnsembleTrainer` returns as ``keras_model``.

Example::

    model = ensemble_model([member_0, member_1])
    model.predict(x)        # == mean(member_0.predict(x), member_1.predict(x))
    model.save("ensemble.keras")
"""
from __future__ import annotations

from distkeras.signature import input_shapes


def ensemble_model(members: list, name: str = "ensemble"):
    """One functional model whose outputs are the mean of ``members``' outputs (output names and
    structure kept: a dict of outputs stays a dict). The members are renamed ``member_<i>``
    (models read from one archive all share a name)."""
    import keras

    if len(members) == 1:
        return members[0]
    first = members[0]
    if getattr(first, "inputs", None):
        inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name.split(":")[0])
                  for t in first.inputs]
    else:
        inputs = [keras.Input(shape=s) for s in input_shapes(first)]
    x = inputs[0] if len(inputs) == 1 else inputs
    for i, member in enumerate(members):
        member.name = f"member_{i}"
    outputs = [member(x) for member in members]
    names = iter(list(getattr(first, "output_names", None) or []))

    def mean(*each):
        return keras.layers.Average(name=next(names, None))(list(each))

    return keras.Model(inputs, keras.tree.map_structure(mean, *outputs), name=name)
