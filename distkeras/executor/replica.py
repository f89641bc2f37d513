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
        except RuntimeError:  # TF already ran ops in this process
            pass
        _TF_THREADS = threads
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


class Replica:
    """A compiled model whose local steps run ``k`` batches per graph call.

    Setting the replica's weights before the steps and reading them after are fused into the
    same graph call, so an exchange every λ steps costs no extra TensorFlow dispatch.
    """

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        self.weights = FlatWeights(model)
        self._built = False
        multi = len(model.inputs) > 1
        weights = self.weights

        @tf.function(reduce_retracing=True)
        def run_steps(xs, y, start, assign: bool, fetch: bool):
            if assign:
                weights._set.python_function(start)
            for i in tf.range(tf.shape(y)[0]):
                x = [t[i] for t in xs] if multi else xs[0][i]
                model.train_step((x, y[i]))
            return weights._get.python_function() if fetch else tf.constant(0.0)

        self._run_steps = run_steps

    def train(self, xs: list[np.ndarray], y: np.ndarray, start: np.ndarray | None = None,
              fetch: bool = False) -> np.ndarray | None:
        """Run ``len(y)`` local steps; ``xs[j]`` has shape ``(steps, batch, *input_shape)``.

        ``start``: flat weights to load first; ``fetch``: return the flat weights afterwards.
        """
        if not self._built:
            batch = (model_inputs([x[0] for x in xs]), y[0])
            self.model._symbolic_build(data_batch=batch)  # builds optimizer + metric variables
            self._built = True
        assign = start is not None
        vector = np.ascontiguousarray(start, dtype=np.float32) if assign else np.zeros(1, np.float32)
        out = self._run_steps(xs, y, vector, assign, fetch)
        return out.numpy() if fetch else None

    def metrics(self) -> dict[str, float]:
        result = self.model.get_metrics_result()
        return {k: float(np.asarray(v)) for k, v in result.items() if np.asarray(v).ndim == 0}

    def reset_metrics(self) -> None:
        self.model.reset_metrics()
