"""A Keras model replica inside an executor: the user's model rebuilt, its flat weight vector,
and local steps run as one compiled call per communication window, on the Keras backend the
driver runs (``distkeras.backends``).

Only ever imported inside Spark tasks (or by the driver when it needs a model).
"""
from __future__ import annotations

import numpy as np

from distkeras import backends
from distkeras.backends.base import warn_uncompiled


def build_model(portable, loss=None, optimizer: dict | None = None, metrics=None,
                loss_weights=None, weighted_metrics=None):
    """The user's model rebuilt from its :class:`~distkeras.portable.PortableModel` (never
    from a pickle), compiled with ``loss``/``optimizer``/``metrics``... when a loss is given
    (``build_model(portable, **compiled.arguments())``)."""
    model = portable.build()
    if loss is not None:
        portable.compile(model, loss, optimizer, metrics, loss_weights, weighted_metrics)
    return model


class Replica:
    """A compiled model whose local steps run ``k`` batches per compiled call, on any Keras
    backend (its :class:`~distkeras.backends.Steps`).

    Loading the replica's weights before the steps and reading them after are part of the same
    call, so an exchange every λ steps costs no extra dispatch (and one compiled program serves
    every window of the same length).

    ``jit_compile``: compile the window with the backend's compiler (XLA on TensorFlow and
    JAX). ``"auto"`` uses it whenever the model supports it, on CPU too (Keras' own "auto"
    skips XLA on CPU-only machines; for a window of steps it measured 3.2x faster per step for
    the HLF classifier and 2.7x for the GRU sequence model on CPU), and lets the backend skip
    it for a fit too short to earn the compilation back (:meth:`plan`; TensorFlow). If the
    compiler cannot compile the model, the replica logs a warning and trains without it.

    Example::

        replica = Replica(model, backends.current(), "auto", layout)
        theta = replica.train(window, start=theta)     # λ = len(window) steps
    """

    def __init__(self, model, backend=None, jit_compile: bool | str = "auto", layout=None):
        if isinstance(backend, (bool, str)):       # Replica(model, jit_compile)
            backend, jit_compile = None, backend
        backend = backend if backend is not None else backends.current()
        self.model, self.backend = model, backend
        self.weights = backend.flat_weights(model, layout)
        self.theta = self.weights.get()      # the replica's weights after its last window
        self._built = False
        self._called = False
        self.jit_compile = (backend.supports_jit(model) if jit_compile == "auto"
                            else bool(jit_compile))
        self._auto = jit_compile == "auto"
        self._steps = None

    @property
    def steps(self):
        if self._steps is None:
            self._steps = self.backend.steps(self.model, self.weights, self.jit_compile)
        return self._steps

    def plan(self, steps: int | None) -> None:
        """The coming fit runs about ``steps`` local steps on this replica (None: not known).
        With ``jit_compile="auto"`` the backend may then skip compiling a fit too short to pay
        for it (TensorFlow: :mod:`distkeras.backends.tensorflow`)."""
        if self._auto:      # (calls remade without the compiler have nothing to plan)
            self.steps.plan(None if steps is None else int(steps))

    def _build(self, window) -> None:
        if not self._built:
            x, y, _ = window.batch(0)
            self.model._symbolic_build(data_batch=(x, y))  # builds optimizer + metric variables
            self._built = True
            self._first_state = [_values(v) for v in self._training_state()]

    def _training_state(self) -> list:
        """The variables training creates beside the model's: the optimizer's and metrics'."""
        return list(self.model.optimizer.variables) + list(self.model.metrics_variables)

    def restart(self, source) -> None:
        """Make this replica what a new one built from ``source`` (the next fit's model, read
        from its archive under the worker's seed) would be, keeping only its compiled calls:
        every variable of ``source`` (weights, fixed state, random seed generators), and the
        optimizer's and metrics' state as they were first built. Raises ValueError when
        ``source`` is not a model of the same architecture."""
        targets, values = self.model.variables, source.variables
        if len(targets) != len(values) or any(
                tuple(t.shape) != tuple(v.shape) or str(t.dtype) != str(v.dtype)
                for t, v in zip(targets, values)):
            raise ValueError("the model's variables differ from the compiled replica's")
        for target, value in zip(targets, values):
            target.assign(_values(value))
        if self._built:
            for target, value in zip(self._training_state(), self._first_state):
                target.assign(value)
        self.steps.refresh()
        self.steps.restart()
        self.theta = self.weights.get()

    def _first(self, call):
        """``call()``, and on the first call only, once more without the compiler if it could
        not compile the model."""
        try:
            out = call()
        except Exception as exc:  # noqa: BLE001 - only the compiler's errors, on the first call
            if not self.jit_compile or self._called:
                raise
            warn_uncompiled(self.backend.compiler, exc)
            self.jit_compile = False
            self._steps = None
            out = call()
        self._called = True
        return out

    def train(self, window, start: np.ndarray | None = None) -> np.ndarray:
        """Run ``len(window)`` local steps from ``start`` (default: where the last window
        ended) and return the flat weights after them (``window``: an
        :class:`~distkeras.feed.Window` with a step axis, or an
        :class:`~distkeras.feed.IndexedWindow` of a partition held whole)."""
        self._build(window)
        vector = np.ascontiguousarray(self.theta if start is None else start, dtype=np.float32)
        self.theta = self._first(lambda: window.run(self.steps, vector))
        return self.theta

    def gradient(self, window, step: int, start: np.ndarray | None = None) -> np.ndarray:
        """The flat gradient (trainable weights, float32) of mini-batch ``step`` of ``window``
        at ``start`` (default: the current weights); updates the loss and metrics like a
        training step."""
        self._build(window)
        vector = None if start is None else np.ascontiguousarray(start, dtype=np.float32)
        xs, ys, weight = window.step(step)
        return self._first(lambda: self.steps.gradient(xs, ys, weight, vector))

    def release(self) -> None:
        """Let go of the partition the last fit's windows were gathered from (a replica kept
        for the next fit must not keep its data)."""
        if self._steps is not None:
            self._steps.release()

    def apply_gradient(self, gradient: np.ndarray) -> None:
        """One optimizer step with ``gradient`` (as returned by :meth:`gradient`)."""
        self.steps.apply(np.ascontiguousarray(gradient, dtype=np.float32))

    def read(self) -> np.ndarray:
        """The replica's current flat weights (after gradient steps)."""
        self.theta = self.steps.read()
        return self.theta

    @property
    def loss_scaling(self) -> bool:
        """Whether the optimizer scales the loss (mixed_float16): a non-finite gradient is then
        an overflow the optimizer handles by skipping the step, not a divergence."""
        import keras

        return isinstance(self.model.optimizer, keras.optimizers.LossScaleOptimizer)

    @property
    def learning_rate(self) -> float:
        """The optimizer's learning rate now."""
        self.steps.sync()
        return float(np.asarray(self.model.optimizer.learning_rate))

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        # assigns the optimizer's variable: the compiled windows read the new value
        self.steps.sync()
        self.model.optimizer.learning_rate = float(value)
        self.steps.refresh()

    def metrics(self) -> dict[str, float]:
        self.steps.sync()
        result = self.model.get_metrics_result()
        return {k: float(np.asarray(v)) for k, v in result.items() if np.asarray(v).ndim == 0}

    def reset_metrics(self) -> None:
        self.steps.sync()
        self.model.reset_metrics()
        self.steps.refresh()


def _values(variable) -> np.ndarray:
    """A Keras variable's values in host memory, on any backend."""
    import keras

    return keras.ops.convert_to_numpy(variable.value)
