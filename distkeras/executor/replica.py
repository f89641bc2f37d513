"""A Keras model replica inside an executor: TensorFlow set-up, flat weight vectors, and local
steps run as one compiled graph call per communication window.

Everything here imports TensorFlow, so it is only ever imported inside Spark tasks (or by the
driver when it needs a model).
"""
from __future__ import annotations

import logging
import os

import numpy as np

from distkeras.executor.feed import model_inputs

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


def build_model(model_json: str, loss, optimizer: dict | None, metrics, weights=None):
    """Rebuild a compiled Keras model from its JSON config (never from a pickle)."""
    import keras

    model = keras.models.model_from_json(model_json)
    if weights is not None:
        if isinstance(weights, np.ndarray):
            FlatWeights(model).set(weights)
        else:
            model.set_weights(weights)
    if loss is not None:
        opt = keras.optimizers.deserialize(optimizer) if optimizer else "adam"
        model.compile(optimizer=opt, loss=_deserialize_loss(loss), metrics=list(metrics or []))
    return model


def _deserialize_loss(loss):
    import keras

    return keras.losses.deserialize(loss) if isinstance(loss, dict) else loss


class FlatWeights:
    """View a model's weights as one flat float32 vector (the parameter server's currency)."""

    def __init__(self, model):
        import tensorflow as tf

        self.variables = [w.value if hasattr(w, "value") else w for w in model.weights]
        self.shapes = [tuple(v.shape) for v in self.variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.size = int(sum(self.sizes))
        variables, shapes, sizes = self.variables, self.shapes, self.sizes

        @tf.function(autograph=False)
        def _get():
            return tf.concat([tf.reshape(tf.cast(v, tf.float32), [-1]) for v in variables], 0)

        @tf.function(autograph=False)
        def _set(vector):
            parts = tf.split(vector, sizes)
            for v, p, s in zip(variables, parts, shapes):
                v.assign(tf.cast(tf.reshape(p, s), v.dtype))
            return tf.constant(0)

        self._get, self._set = _get, _set

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

    def __init__(self, model, jit_compile: bool | str = "auto"):
        self.model = model
        self.weights = FlatWeights(model)
        self.theta = self.weights.get()      # the replica's weights after its last window
        self._built = False
        self._called = False
        self.jit_compile = supports_xla(model) if jit_compile == "auto" else bool(jit_compile)
        self._run_steps = self._compile(self.jit_compile)

    def _compile(self, jit_compile: bool):
        import tensorflow as tf

        model, weights, multi = self.model, self.weights, len(self.model.inputs) > 1

        def run_steps(xs, y, start):
            weights._set.python_function(start)
            for i in tf.range(tf.shape(y)[0]):
                x = [t[i] for t in xs] if multi else xs[0][i]
                model.train_step((x, y[i]))
            return weights._get.python_function()

        return tf.function(run_steps, reduce_retracing=True, jit_compile=jit_compile)

    def train(self, xs: list[np.ndarray], y: np.ndarray,
              start: np.ndarray | None = None) -> np.ndarray:
        """Run ``len(y)`` local steps from ``start`` (default: where the last window ended) and
        return the flat weights after them; ``xs[j]`` has shape ``(steps, batch, *input_shape)``.
        """
        if not self._built:
            batch = (model_inputs([x[0] for x in xs]), y[0])
            self.model._symbolic_build(data_batch=batch)  # builds optimizer + metric variables
            self._built = True
        vector = np.ascontiguousarray(self.theta if start is None else start, dtype=np.float32)
        try:
            out = self._run_steps(xs, y, vector)
        except Exception as exc:  # noqa: BLE001 - only XLA's compile errors, on the first call
            if not self.jit_compile or self._called:
                raise
            log.warning("XLA could not compile the training step (%s: %s); training without "
                        "XLA (pass jit_compile=False to skip the attempt)", type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "")
            self.jit_compile = False
            self._run_steps = self._compile(False)
            out = self._run_steps(xs, y, vector)
        self._called = True
        self.theta = out.numpy()
        return self.theta

    # -- gradient steps (AR-SGD: the gradient is exchanged between computing and applying it) --
    def _compile_gradient_steps(self):
        import tensorflow as tf
        from keras.src.losses import loss as loss_module

        model, weights, multi = self.model, self.weights, len(self.model.inputs) > 1
        trainable = model.trainable_weights
        sizes = [int(np.prod(v.shape)) for v in trainable]
        shapes = [tuple(v.shape) for v in trainable]

        def gradient(x, y, start, load):
            if load:
                weights._set.python_function(start)
            x = list(x) if multi else x[0]
            with tf.GradientTape() as tape:
                y_pred = model(x, training=True)
                loss = model._compute_loss(x=x, y=y, y_pred=y_pred, training=True)
                model._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss),
                                                 sample_weight=tf.shape(y)[0])
                loss = model.optimizer.scale_loss(loss)
            grads = tape.gradient(loss, trainable)
            model.compute_metrics(x, y, y_pred, sample_weight=None)
            return tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in grads], 0)

        def apply(flat):
            parts = tf.split(flat, sizes)
            grads = [tf.cast(tf.reshape(p, s), v.dtype) for p, s, v in zip(parts, shapes, trainable)]
            model.optimizer.apply_gradients(zip(grads, trainable))
            return tf.constant(0)

        jit = self.jit_compile
        self._gradient = {load: tf.function(lambda x, y, s, load=load: gradient(x, y, s, load),
                                            jit_compile=jit, reduce_retracing=True)
                          for load in (False, True)}
        self._apply = tf.function(apply, jit_compile=jit)

    def gradient(self, xs: list[np.ndarray], y: np.ndarray,
                 start: np.ndarray | None = None) -> np.ndarray:
        """The flat gradient (trainable weights, float32) of one batch at ``start`` (default:
        the current weights); updates the loss and metrics like a training step."""
        if not self._built:
            self.model._symbolic_build(data_batch=(model_inputs(xs), y))
            self._built = True
        if getattr(self, "_gradient", None) is None:
            self._compile_gradient_steps()
        load = start is not None
        vector = np.ascontiguousarray(start if load else self.theta, dtype=np.float32)
        return self._gradient[load](list(xs), y, vector).numpy()

    def apply_gradient(self, gradient: np.ndarray) -> None:
        """One optimizer step with ``gradient`` (as returned by :meth:`gradient`)."""
        self._apply(np.ascontiguousarray(gradient, dtype=np.float32))

    def read(self) -> np.ndarray:
        """The replica's current flat weights (after gradient steps)."""
        self.theta = self.weights.get()
        return self.theta

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
