"""What of a Keras model's state the workers exchange, and how each part is treated.

A model's weights fall into three parts, and every algorithm treats each the same way:

- **parameters** (``model.trainable_weights``): what SGD moves. The update rules work on them
  alone: DOWNPOUR's Δ, AGN's Δ/λ, ADAG's staleness scaling, EASGD's elastic force, SlowMo's
  slow momentum, the all-reduce of gradients.
- **statistics**: non-trainable floating-point weights that the training step itself updates,
  BatchNormalization's moving mean and variance above all. They are never scaled or
  extrapolated by a rule (a moving variance pushed by slow momentum can turn negative); they are
  *averaged* into the run's model, as TF's MirroredStrategy aggregates them (mean): the parameter
  server's θ̃ carries the mean of every worker's latest statistics, a decentralised run's model
  the mean of the replicas. Each worker keeps its own between exchanges (as Horovod does), so
  its statistics describe the batches its own replica sees.
- **fixed**: state training does not change or that has no meaning as an average: the weights
  of frozen layers (``trainable=False``), preprocessing state set by ``adapt()``
  (``Normalization``'s mean and variance, lookup vocabularies), integer counters (a seed
  generator's state is not among a model's weights: each worker draws its own). It never leaves a worker, costs no bandwidth, and the run's model keeps the user's
  values bit for bit.

A flat vector of the run is ``[parameters | statistics]``, float32; ``params`` is where the
statistics start.

Example::

    layout = StateLayout.of(model)
    layout.params, layout.size          # floats in the parameters, in the whole vector
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})
PREPROCESSING = "keras.src.layers.preprocessing"   # adapt()-ed state: fixed


@dataclass(frozen=True)
class StateLayout:
    """Which of ``model.weights`` are parameters and statistics (by index, in the order of the
    flat vector) and how many floats each part holds; the rest is fixed."""

    parameters: tuple[int, ...]
    statistics: tuple[int, ...]
    params: int                     # floats of the parameters
    size: int                       # floats of parameters + statistics
    fixed: tuple[str, ...] = ()     # paths of the fixed weights (for logs and messages)

    @classmethod
    def of(cls, model) -> "StateLayout":
        weights = list(model.weights)
        fixed_ids = _fixed(model)
        parameters, statistics, fixed = [], [], []
        for i, w in enumerate(weights):
            floating = str(w.dtype) in FLOAT_DTYPES
            if not floating or id(w) in fixed_ids:
                fixed.append(w.path)
            elif w.trainable:
                parameters.append(i)
            else:
                statistics.append(i)
        count = [int(np.prod(w.shape)) for w in weights]
        params = sum(count[i] for i in parameters)
        return cls(tuple(parameters), tuple(statistics), params,
                   params + sum(count[i] for i in statistics), tuple(fixed))

    @property
    def order(self) -> tuple[int, ...]:
        """Indices into ``model.weights`` in the order of the flat vector."""
        return self.parameters + self.statistics

    def to_dict(self) -> dict:
        return {"parameters": list(self.parameters), "statistics": list(self.statistics),
                "params": self.params, "size": self.size, "fixed": list(self.fixed)}

    @classmethod
    def from_dict(cls, d: dict) -> "StateLayout":
        return cls(tuple(d["parameters"]), tuple(d["statistics"]), int(d["params"]),
                   int(d["size"]), tuple(d.get("fixed", ())))


def _fixed(model) -> set[int]:
    """ids of the weights of frozen layers and preprocessing layers."""
    out: set[int] = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not layer.trainable or type(layer).__module__.startswith(PREPROCESSING):
            out.update(id(w) for w in layer.weights)
    return out


def pace_statistics(model, num_workers: int) -> None:
    """Give a worker's moving statistics the horizon one worker on all the data would have.

    Each of n workers takes 1/n of an epoch's steps, so an exponential moving average with
    momentum m (BatchNormalization's moving mean and variance) would cover n times fewer samples
    per worker than in single-worker Keras and lag behind the model (its initial values decay
    as m^(steps/n)). On the workers' replicas m becomes mⁿ: every worker's statistics then span
    as many samples as Keras' would, and their mean (the run's model) is as current. The
    driver's model, which is returned, keeps the user's momentum. Not for an ensemble's
    members: each is a model of its own, whose statistics are never averaged.
    """
    import keras

    if num_workers <= 1:
        return
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            layer.momentum = float(layer.momentum) ** num_workers
