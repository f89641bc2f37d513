"""Keras on JAX: the model's state lives in JAX arrays on the device between windows, and a
window is one ``jax.jit`` of a ``lax.scan`` over Keras' own stateless ``train_step`` (the start
weights loaded and the weights after read inside the same call). The model's variables are
brought up to date only when something reads them (metrics, the learning rate, a save).
"""
from __future__ import annotations

import os

import numpy as np

from distkeras.backends.base import Backend, FlatWeights, Steps, compilation_cache, structure


class JAX(Backend):
    name = "jax"
    module = "jax"
    extra = "jax"

    def _configure(self, threads):
        cache = compilation_cache()
        if cache:
            os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
            os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        if threads == 1:   # XLA's CPU client otherwise runs a thread per core
            flags = os.environ.get("XLA_FLAGS", "")
            if "xla_cpu_multi_thread_eigen" not in flags:
                os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                           "intra_op_parallelism_threads=1").strip()

    def _set_threads(self, threads: int) -> int:
        flags = os.environ.get("XLA_FLAGS", "")
        return 1 if "intra_op_parallelism_threads=1" in flags else (os.cpu_count() or threads)

    def accelerators(self) -> list[str]:
        import jax

        return [str(d) for d in jax.devices() if d.platform != "cpu"]

    def steps(self, model, weights, jit_compile: bool) -> Steps:
        return JAXSteps(model, weights, jit_compile)


class JAXSteps(Steps):
    """``state = (trainable, non-trainable, optimizer, metrics)`` arrays, as Keras' JAX trainer
    keeps them; ``slots`` says where each variable of the flat vector sits in it."""

    def __init__(self, model, weights: FlatWeights, jit_compile: bool):
        import jax

        super().__init__(model, weights, jit_compile)
        where = {id(v): (0, i) for i, v in enumerate(model.trainable_variables)}
        where.update({id(v): (1, i) for i, v in enumerate(model.non_trainable_variables)})
        slots = [where[id(v)] for v in weights.keras_variables]
        self._state = None
        self._synced = True
        jit = jax.jit if jit_compile else (lambda f, **kw: f)

        def load(state, start):
            tv, ntv, ov, mv = (list(part) for part in state)
            for (kind, i), part in zip(slots, weights.split(start)):
                target = tv if kind == 0 else ntv
                target[i] = part.astype(target[i].dtype)
            return tv, ntv, ov, mv

        def flat(state):
            if not slots:
                return jax.numpy.zeros(0, jax.numpy.float32)
            return jax.numpy.concatenate([state[kind][i].astype("float32").ravel()
                                          for kind, i in slots])

        def step(state, batch):
            x, y, w = batch
            data = (structure(x), structure(y)) if w is None else (structure(x), structure(y), w)
            _, state = model.train_step(state, data)
            return state

        def window(state, start, xs, ys, sample_weight, index=None):
            """Steps ``xs[i]`` (or, given ``index``, rows ``index[i]`` of the partition
            ``xs``) for every step ``i``, from the flat weights ``start``."""
            state = load(state, start)
            if index is None:
                steps, batch = (xs, ys, sample_weight), (lambda b: b)
            else:
                steps, batch = index, (lambda rows: _rows(xs, ys, sample_weight, rows))
            if jit_compile:
                state, _ = jax.lax.scan(lambda s, b: (step(s, batch(b)), None), state, steps)
            else:        # eager, one step at a time (jit_compile=False: for debugging)
                for i in range(len(xs[0]) if index is None else len(index)):
                    state = step(state, batch(jax.tree_util.tree_map(lambda t: t[i], steps)))
            return state, flat(state)

        def gradient(state, start, x, y, sample_weight):
            tv, ntv, ov, mv = state if start is None else load(state, start)
            (_, aux), grads = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)(
                tv, ntv, mv, structure(x), structure(y), sample_weight, training=True,
                optimizer_variables=ov)
            unscaled, y_pred, ntv, mv = aux
            _, mv = model._update_metrics_variables(mv, unscaled, structure(x), structure(y),
                                                    y_pred, sample_weight)
            vector = jax.numpy.concatenate([g.astype("float32").ravel() for g in grads])
            return (tv, ntv, ov, mv), vector

        def apply(state, vector):
            tv, ntv, ov, mv = state
            grads, offset = [], 0
            for v in tv:
                n = int(np.prod(v.shape))
                grads.append(vector[offset:offset + n].reshape(v.shape).astype(v.dtype))
                offset += n
            tv, ov = model.optimizer.stateless_apply(ov, grads, tv)
            return tv, ntv, ov, mv

        self._window, self._flat = jit(window), jit(flat)
        self._gradient, self._apply = jit(gradient), jit(apply)

    def _current(self):
        if self._state is None:
            model = self.model
            self._state = ([v.value for v in model.trainable_variables],
                           [v.value for v in model.non_trainable_variables],
                           [v.value for v in model.optimizer.variables],
                           [v.value for v in model.metrics_variables])
        return self._state

    def window(self, xs, ys, sample_weight, start, index=None):
        self._state, vector = self._window(self._current(), start, xs, ys, sample_weight,
                                           index)
        self._synced = False
        return np.asarray(vector)

    def holds_partitions(self):
        import jax

        return jax.default_backend() == "cpu"

    def tensor(self, array):
        """In place (DLPack) where it can: C-contiguous, writable, numeric; else copied."""
        import jax

        if array.flags.c_contiguous and array.flags.writeable and array.dtype.kind in "fiu":
            return jax.dlpack.from_dlpack(array)
        return jax.numpy.asarray(array)

    def gradient(self, x, y, sample_weight, start):
        self._state, vector = self._gradient(self._current(), start, x, y, sample_weight)
        self._synced = False
        return np.asarray(vector)

    def apply(self, gradient):
        self._state = self._apply(self._current(), gradient)
        self._synced = False

    def read(self):
        return np.asarray(self._flat(self._current()))

    def sync(self):
        if self._state is None or self._synced:
            return
        model = self.model
        for refs, values in zip((model.trainable_variables, model.non_trainable_variables,
                                 model.optimizer.variables, model.metrics_variables), self._state):
            for ref, value in zip(refs, values):
                ref.assign(value)
        self._synced = True

    def refresh(self):
        self._state = None          # read again from the model's variables at the next call
        self._synced = True


def _rows(xs, ys, sample_weight, rows):
    """Rows ``rows`` of a partition's arrays: one step's ``(xs, ys, sample_weight)``."""
    import jax

    take = lambda t: jax.numpy.take(t, rows, axis=0)  # noqa: E731
    return ([take(x) for x in xs], [take(y) for y in ys],
            None if sample_weight is None else take(sample_weight))
