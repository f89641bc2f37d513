"""A Keras model replica inside an executor: TensorFlow set-up, flat weight vectors, and local
steps run as one compiled graph call per communication window.

Everything here imports TensorFlow, so it is only ever imported inside Spark tasks (or by the
driver when it needs a model).
"""
from __future__ import annotations

import logging
import os

import numpy as np

log = logging.getLogger(__name__)
_TF_THREADS: int | None = None


def setup_tensorflow(threads: int | None = None, gpus: list[str] | None = None):
    """Import TensorFlow once per Python worker, pinned to the task's GPUs and CPU share.

    ``gpus`` (from ``TaskContext.resources()["gpu"]``) become ``CUDA_VISIBLE_DEVICES`` before the
    import; an empty list hides all GPUs. Threads are set once: a reused worker keeps them.
    """
    global _TF_THREADS
    import sys

    if "tensorflow" not in sys.modules:
        if gpus is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    elif gpus is not None and os.environ.get("CUDA_VISIBLE_DEVICES") != ",".join(gpus):
        log.warning("TensorFlow already initialised in this Python worker with "
                    "CUDA_VISIBLE_DEVICES=%s; task asked for GPUs %s",
                    os.environ.get("CUDA_VISIBLE_DEVICES"), gpus)
    import tensorflow as tf

    if threads and _TF_THREADS is None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
            _TF_THREADS = threads
        except RuntimeError:  # TF already ran ops in this process: its pools are fixed
            _TF_THREADS = tf.config.threading.get_intra_op_parallelism_threads() or -1
    if threads and _TF_THREADS not in (threads, None):
        log.warning("this Python worker's TensorFlow already runs %s intra-op threads; the task "
                    "asked for %d (each thread count has its own Python workers: see "
                    "distkeras.driver.resources)", _TF_THREADS if _TF_THREADS > 0 else "default",
                    threads)
    return tf


def build_model(portable, loss=None, optimizer: dict | None = None, metrics=None,
                loss_weights=None):
    """The user's model rebuilt from its :class:`~distkeras.portable.PortableModel` (never
    from a pickle), compiled with ``loss``/``optimizer``/``metrics`` when a loss is given."""
    model = portable.build()
    if loss is not None:
        portable.compile(model, loss, optimizer, metrics, loss_weights)
    return model


class FlatWeights:
    """View a model's exchanged state as one flat float32 vector, the currency of every
    exchange: ``[parameters | statistics]`` of its :class:`~distkeras.state.StateLayout`
    (the fixed state is never read nor written here)."""

    def __init__(self, model, layout=None):
        import tensorflow as tf

        from distkeras.state import StateLayout

        self.layout = layout if layout is not None else StateLayout.of(model)
        weights = list(model.weights)
        self.variables = [weights[i].value if hasattr(weights[i], "value") else weights[i]
                          for i in self.layout.order]
        self.shapes = [tuple(v.shape) for v in self.variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.size = int(sum(self.sizes))
        if self.size != self.layout.size:
            raise ValueError(f"the model has {self.size} floats to exchange, the run's layout "
                             f"{self.layout.size}: it is not the model the driver sent")
        variables, shapes, sizes = self.variables, self.shapes, self.sizes

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

    @property
    def params(self) -> int:
        """Where the statistics start in the vector."""
        return self.layout.params

    def get(self) -> np.ndarray:
        return self._get().numpy()

    def set(self, vector: np.ndarray) -> None:
        if vector.size != self.size:
            raise ValueError(f"weight vector of {vector.size} values for a model of {self.size}")
        self._set(np.ascontiguousarray(vector, dtype=np.float32))


def supports_xla(model) -> bool:
    """Whether XLA can compile ``model``'s training step: Keras' own test (every layer
    ``supports_jit``, op determinism off)."""
    try:
        from keras.src.trainers.trainer import model_supports_jit
    except ImportError:  # a Keras without the helper: ask the layers
        return all(getattr(layer, "supports_jit", True) for layer in model._flatten_layers())
    return bool(model_supports_jit(model))


class Replica:
    """A compiled model whose local steps run ``k`` batches per graph call.

    Loading the replica's weights before the steps and reading them after are fused into the
    same graph call, so an exchange every λ steps costs no extra TensorFlow dispatch (and one
    compiled program serves every window of the same length).

    ``jit_compile``: compile the window with XLA. ``"auto"`` uses it whenever the model supports
    it, on CPU too (Keras' own "auto" skips XLA on CPU-only machines; for a window of steps it
    measured 2.6x faster per step for the HLF classifier and 3x for the GRU sequence model on
    CPU, for about one second of compilation). If XLA cannot compile the model, the replica
    logs a warning and trains without it.
    """

    def __init__(self, model, jit_compile: bool | str = "auto", layout=None):
        self.model = model
        self.weights = FlatWeights(model, layout)
        self.theta = self.weights.get()      # the replica's weights after its last window
        self._built = False
        self._called = False
        self.jit_compile = supports_xla(model) if jit_compile == "auto" else bool(jit_compile)
        self._run_steps = self._compile(self.jit_compile)

    def _compile(self, jit_compile: bool):
        import tensorflow as tf

        model, weights = self.model, self.weights

        def run_steps(xs, ys, sample_weight, start):
            weights._set.python_function(start)
            for i in tf.range(tf.shape(xs[0])[0]):
                x = _structure([t[i] for t in xs])
                y = _structure([t[i] for t in ys])
                model.train_step((x, y) if sample_weight is None
                                 else (x, y, sample_weight[i]))
            return weights._get.python_function()

        return tf.function(run_steps, reduce_retracing=True, jit_compile=jit_compile)

    def _build(self, window) -> None:
        if not self._built:
            x, y, _ = window.batch(0)
            self.model._symbolic_build(data_batch=(x, y))  # builds optimizer + metric variables
            self._built = True

    def train(self, window, start: np.ndarray | None = None) -> np.ndarray:
        """Run ``len(window)`` local steps from ``start`` (default: where the last window
        ended) and return the flat weights after them (``window``: an
        :class:`~distkeras.feed.Window` with a step axis)."""
        self._build(window)
        vector = np.ascontiguousarray(self.theta if start is None else start, dtype=np.float32)
        args = (list(window.xs), list(window.ys), window.sample_weight, vector)
        try:
            out = self._run_steps(*args)
        except Exception as exc:  # noqa: BLE001 - only XLA's compile errors, on the first call
            if not self.jit_compile or self._called:
                raise
            log.warning("XLA could not compile the training step (%s: %s); training without "
                        "XLA (pass jit_compile=False to skip the attempt)", type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "")
            self.jit_compile = False
            self._run_steps = self._compile(False)
            out = self._run_steps(*args)
        self._called = True
        self.theta = out.numpy()
        return self.theta

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
            x, y = _structure(list(xs)), _structure(list(ys))
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
        self._gradient = {load: tf.function(lambda x, y, w, s, load=load: gradient(x, y, w, s,
                                                                                   load),
                                            jit_compile=jit, reduce_retracing=True)
                          for load in (False, True)}
        self._apply = tf.function(apply, jit_compile=jit)

    def gradient(self, window, step: int, start: np.ndarray | None = None) -> np.ndarray:
        """The flat gradient (trainable weights, float32) of mini-batch ``step`` of ``window``
        at ``start`` (default: the current weights); updates the loss and metrics like a
        training step."""
        self._build(window)
        if getattr(self, "_gradient", None) is None:
            self._compile_gradient_steps()
        load = start is not None
        vector = np.ascontiguousarray(start if load else self.theta, dtype=np.float32)
        weight = None if window.sample_weight is None else window.sample_weight[step]
        return self._gradient[load]([x[step] for x in window.xs], [y[step] for y in window.ys],
                                    weight, vector).numpy()

    def apply_gradient(self, gradient: np.ndarray) -> None:
        """One optimizer step with ``gradient`` (as returned by :meth:`gradient`)."""
        self._apply(np.ascontiguousarray(gradient, dtype=np.float32))

    def read(self) -> np.ndarray:
        """The replica's current flat weights (after gradient steps)."""
        self.theta = self.weights.get()
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
        return float(np.asarray(self.model.optimizer.learning_rate))

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        # assigns the optimizer's variable: the compiled windows read the new value
        self.model.optimizer.learning_rate = float(value)

    def metrics(self) -> dict[str, float]:
        result = self.model.get_metrics_result()
        return {k: float(np.asarray(v)) for k, v in result.items() if np.asarray(v).ndim == 0}

    def reset_metrics(self) -> None:
        self.model.reset_metrics()


def _structure(tensors: list):
    """One tensor for one input (or output), the list for several, as Keras' steps take them."""
    return tensors[0] if len(tensors) == 1 else list(tensors)
