"""Keras on TensorFlow: a window of local steps is one ``tf.function`` (XLA by default), with
loading the start weights and reading the weights after fused into the same call; the flat
vector is read and written by compiled graphs on the model's own variables.

When XLA compiles a window (one program per window length, about a second each on CPU):

- ``jit_compile=True``: the first length a replica runs (λ) at once; any other (the shorter
  last window of an epoch, SwarmSGD's pieces) once it ran ``XLA_AFTER_STEPS`` steps as a plain
  ``tf.function`` graph, traced once for every length.
- ``"auto"``: the same, but a fit that plans fewer than ``XLA_PLAN_STEPS`` steps runs its
  first length as a graph too, and a graph is compiled only while the plan leaves at least
  ``XLA_AFTER_STEPS`` more steps to run. XLA's first window costs 0.1-0.4 s more than the
  graph's, and saves 0.5 ms per step on the Fashion-shaped MLP (it pays after 190 steps) but
  0.12 ms on the HLF classifier (3,500 steps; ``benchmarks/xla_windows.py``, one thread):
  the rule keeps a short fit from paying for a compilation it cannot earn back, and loses
  at most about 0.4 s where it guesses wrong (the Fashion-shaped MLP at 1,023 steps). A
  model with a recurrent layer is compiled at once (XLA runs the GRU classifier's time loop
  2.7x faster: it pays after 7 steps).

Each rule counts steps, not seconds, so a run is the same run every time."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from distkeras.backends.base import (Backend, FlatWeights, Steps, compilation_cache,
                                     structure, warn_uncompiled)
from distkeras.feed import ALIGNMENT


XLA_AFTER_STEPS = 512   # steps a window length runs as a graph before XLA compiles it
XLA_PLAN_STEPS = 1024   # "auto": a fit planning fewer steps starts without XLA


class TensorFlow(Backend):
    name = "tensorflow"
    module = "tensorflow"
    extra = "cpu"

    def _configure(self, threads):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        cache, flags = compilation_cache(), os.environ.get("TF_XLA_FLAGS", "")
        if cache and "tf_xla_persistent_cache_directory" not in flags:
            os.environ["TF_XLA_FLAGS"] = f"{flags} --tf_xla_persistent_cache_directory={cache}"

    def _set_threads(self, threads: int) -> int:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
            return threads
        except RuntimeError:  # TF already ran ops in this process: its pools are fixed
            return tf.config.threading.get_intra_op_parallelism_threads() or -1

    def threads(self) -> int:
        import tensorflow as tf

        return tf.config.threading.get_intra_op_parallelism_threads() or super().threads()

    def accelerators(self) -> list[str]:
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]

    def flat_weights(self, model, layout=None) -> FlatWeights:
        return TFFlatWeights(model, layout)

    def steps(self, model, weights, jit_compile: bool) -> Steps:
        return TFSteps(model, weights, jit_compile)


class TFFlatWeights(FlatWeights):
    """The flat vector read and written by two compiled graphs."""

    def __init__(self, model, layout=None):
        import tensorflow as tf

        super().__init__(model, layout)
        variables = [v.value if hasattr(v, "value") else v for v in self.keras_variables]
        shapes, sizes = self.shapes, self.sizes

        @tf.function(autograph=False)
        def _get():
            if not variables:
                return tf.zeros([0], tf.float32)
            return tf.concat([tf.reshape(tf.cast(v, tf.float32), [-1]) for v in variables], 0)

        @tf.function(autograph=False)
        def _set(vector):
            parts = tf.split(vector, sizes) if variables else []
            for v, p, s in zip(variables, parts, shapes):
                v.assign(tf.cast(tf.reshape(p, s), v.dtype))
            return tf.constant(0)

        self._get, self._set = _get, _set

    def get(self) -> np.ndarray:
        return self._get().numpy()

    def set(self, vector: np.ndarray) -> None:
        self.check(vector)
        self._set(np.ascontiguousarray(vector, dtype=np.float32))


@dataclass
class Schedule:
    """What a fit's windows counted to decide when XLA compiles them (the module's rule)."""

    uncompiled: dict = field(default_factory=dict)   # window length -> its steps run as a graph
    compiled: set = field(default_factory=set)       # window lengths XLA runs in this fit
    defer_first: bool = False     # "auto" and a short plan: the first length waits too
    left: int | None = None       # steps the fit's plan has left (None: not known)


class TFSteps(Steps):
    def __init__(self, model, weights: TFFlatWeights, jit_compile: bool):
        import keras
        import tensorflow as tf

        super().__init__(model, weights, jit_compile)

        def run_steps(xs, ys, sample_weight, start, index=None):
            """Steps ``xs[i]`` (or, given ``index``, rows ``index[i]`` of the partition
            ``xs``) for every step ``i``, from the flat weights ``start``."""
            weights._set.python_function(start)
            steps = tf.shape(xs[0] if index is None else index)[0]
            pick = ((lambda t, i: t[i]) if index is None
                    else (lambda t, i: tf.gather(t, index[i])))
            for i in tf.range(steps):
                x = structure([pick(t, i) for t in xs])
                y = structure([pick(t, i) for t in ys])
                model.train_step((x, y) if sample_weight is None
                                 else (x, y, pick(sample_weight, i)))
            return weights._get.python_function()

        self._run_steps = tf.function(run_steps, reduce_retracing=True, jit_compile=jit_compile)
        self._traced = tf.function(run_steps, reduce_retracing=True) if jit_compile else None
        self.schedule = Schedule()
        self._recurrent = any(isinstance(layer, keras.layers.RNN)
                              for layer in model._flatten_layers())
        self._windows, self._xla_ran = 0, False
        self._accelerated = bool(tf.config.list_logical_devices("GPU"))
        self._gradient = None
        self._concrete: dict = {}

    def _call(self, function, *args):
        """``function(*args)`` through the concrete function it traced for these arguments'
        shapes and dtypes: the same program, without ``tf.function``'s dispatch on every call
        (0.3 of the 0.9 ms a window of the HLF classifier costs beyond its steps)."""
        key = (function,) + tuple(_signature(a) for a in args)
        call = self._concrete.get(key)
        if call is None:
            call = self._concrete[key] = function.get_concrete_function(*args)
        return call(*args)

    def window(self, xs, ys, sample_weight, start, index=None):
        steps = int(xs[0].shape[0]) if index is None else len(index)
        return self._window(steps, xs, ys, sample_weight, start, index)

    def holds_partitions(self):
        return not self._accelerated

    def tensor(self, array):
        """In place (DLPack) where TensorFlow can take the memory as it is: C-contiguous,
        writable, 64-byte aligned (``feed.aligned_empty``); else copied."""
        import tensorflow as tf

        if (array.flags.c_contiguous and array.flags.writeable and array.size
                and array.dtype.kind in "fiu" and array.ctypes.data % ALIGNMENT == 0):
            return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
        return tf.convert_to_tensor(array)

    def _window(self, k: int, *args):
        run = self._for_length(k)
        if not (self.jit_compile and run is not self._traced and self._windows
                and not self._xla_ran):
            out = self._call(run, *args)   # a first call's failure: the Replica's
        else:
            try:                    # XLA's first program, after windows that ran as graphs
                out = self._call(run, *args)
            except Exception as exc:  # noqa: BLE001 - the compiler's error, before any step ran
                warn_uncompiled(TensorFlow.compiler, exc)
                self.jit_compile, self._run_steps, self._traced = False, self._traced, None
                run = self._run_steps
                out = self._call(run, *args)
        self._windows += 1
        self._xla_ran = self._xla_ran or (self.jit_compile and run is not self._traced)
        return out.numpy()

    def plan(self, steps: int | None) -> None:
        self.schedule.left = steps
        self.schedule.defer_first = (not self._recurrent and steps is not None
                                     and steps < XLA_PLAN_STEPS)

    def restart(self) -> None:
        self.schedule = Schedule()          # a reused replica runs as a new one

    def _for_length(self, k: int):
        """XLA or the graph for a window of ``k`` steps, by the module's rule."""
        s = self.schedule
        left = s.left = None if s.left is None else s.left - k
        if self._traced is None or k in s.compiled:
            return self._run_steps
        done = s.uncompiled.get(k, 0)
        first = not s.uncompiled and not s.compiled
        if (first and not s.defer_first) or (
                done >= XLA_AFTER_STEPS and (left is None or left >= XLA_AFTER_STEPS)):
            s.compiled.add(k)
            return self._run_steps
        s.uncompiled[k] = done + k
        return self._traced

    # -- gradient steps (AR-SGD: the gradient is exchanged between computing and applying it) --
    def _compile_gradient_steps(self):
        import tensorflow as tf
        from keras.src.losses import loss as loss_module

        model, weights = self.model, self.weights
        trainable = model.trainable_weights
        sizes = [int(np.prod(v.shape)) for v in trainable]
        shapes = [tuple(v.shape) for v in trainable]

        def gradient(xs, ys, sample_weight, start, load):
            if load:
                weights._set.python_function(start)
            x, y = structure(list(xs)), structure(list(ys))
            with tf.GradientTape() as tape:
                y_pred = model(x, training=True)
                loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                           training=True)
                model._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss),
                                                 sample_weight=tf.shape(xs[0])[0])
                loss = model.optimizer.scale_loss(loss)
            grads = tape.gradient(loss, trainable)
            model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
            return tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in grads], 0)

        def apply(flat):
            parts = tf.split(flat, sizes)
            grads = [tf.cast(tf.reshape(p, s), v.dtype) for p, s, v in zip(parts, shapes, trainable)]
            model.optimizer.apply_gradients(zip(grads, trainable))
            return tf.constant(0)

        jit = self.jit_compile

        def compiled(load: bool):
            return tf.function(lambda x, y, w, s: gradient(x, y, w, s, load),
                               jit_compile=jit, reduce_retracing=True)

        self._gradient = {load: compiled(load) for load in (False, True)}
        self._apply = tf.function(apply, jit_compile=jit)

    def gradient(self, x, y, sample_weight, start):
        if self._gradient is None:
            self._compile_gradient_steps()
        load = start is not None
        vector = start if load else np.zeros(self.weights.size, np.float32)
        return self._call(self._gradient[load], x, y, sample_weight, vector).numpy()

    def apply(self, gradient):
        self._call(self._apply, gradient)


def _signature(arg):
    """What a traced call depends on of one argument: shapes and dtypes (None, arrays, lists)."""
    if isinstance(arg, (list, tuple)):
        return tuple(_signature(a) for a in arg)
    return None if arg is None else (tuple(arg.shape), str(arg.dtype))
