"""AR-SGD: synchronous data parallelism with gradients all-reduced every step.

Every step each worker computes the gradient gᵢ of its own mini-batch, the workers average
them with a ring all-reduce, ḡ = (1/n) Σᵢ gᵢ, and every worker applies the same optimizer step
x ← x − η·opt(ḡ), so the replicas stay identical. With plain SGD this is single-worker SGD on
the concatenated batch of n·B examples (the test checks it to float tolerance). It cannot be
fused into a λ-step XLA window: each step is a gradient call, an all-reduce and an apply call.
"""
from __future__ import annotations

import numpy as np

from distkeras.algorithms.base import Algorithm
from distkeras.algorithms.registry import TrainerSpec, register
from distkeras.exchange import RingExchange, check_finite


class GradientRing(RingExchange):
    """The ring, used on gradients inside the window; nothing to do after it. The averaged
    gradient lands in one reused buffer: it is applied before the next step's exchange."""

    _buffer = None
    averages_replicas = False     # gradients: compressed as they are, with error feedback

    def mean(self, vector, out=None, check=True):
        if self._buffer is None or self._buffer.shape != vector.shape:
            self._buffer = np.empty(vector.shape, np.float32)
        return super().mean(vector, self._buffer if out is None else out, check)

    def after_window(self, theta, steps):
        return None


@register
class ARSGD(Algorithm):
    """All-reduce SGD: per step, ḡ = mean of the workers' gradients (ring), x ← x − η·opt(ḡ)."""

    name = "arsgd"
    synchronous = True
    windowed = False             # gradients are exchanged every step, whatever λ
    default_window = 32          # steps per data read; the gradients are exchanged every step
    exchange_type = GradientRing
    trainers = (TrainerSpec("ARSGD", "arsgd", """All-reduce SGD: every step the workers'
    gradients are averaged with a ring all-reduce and every replica takes the same optimizer
    step (the synchronous large-batch baseline).

    Example::

        ARSGD(model, loss="categorical_crossentropy", num_workers=4, batch_size=128).fit(df)
    """),)

    def local_steps(self, replica, exchange, window, start):
        for i in range(len(window)):
            gradient = replica.gradient(window, i, start=start)
            start = None
            # before the all-reduce: one diverged worker must not poison every replica (under
            # loss scaling an overflow is expected: every replica then skips the same step)
            overflow_skips = replica.loss_scaling
            if not overflow_skips:
                check_finite(gradient, "gradient",
                             f"worker {exchange.worker.worker}, AR-SGD step")
            replica.apply_gradient(exchange.mean(gradient, check=not overflow_skips))
        return replica.read()

    def model_refusal(self, model):
        owner = _train_step_owner(model)
        if owner is None:
            return None
        return (f"{owner} overrides train_step, which AR-SGD would not run: it computes each "
                "step's gradient itself, from the model's loss (compute_loss), then applies the "
                "mean of the workers' gradients. Train this model with a trainer that runs "
                "train_step (LocalSGD with communication_window=1 averages the replicas after "
                "every step; ADAG, AveragingTrainer), or move what train_step adds into "
                "compute_loss")

    def worker_send(self, theta, anchor):
        raise NotImplementedError("AR-SGD exchanges gradients, not weights")


def _train_step_owner(model) -> str | None:
    """The user's class that defines the ``train_step`` ``model`` runs (None: Keras' own)."""
    for cls in type(model).__mro__:
        if "train_step" in vars(cls):
            return None if cls.__module__.split(".")[0] == "keras" else cls.__name__
    return None
