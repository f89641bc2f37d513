"""Keras on PyTorch: a window is Keras' own eager ``train_step`` run λ times on the window's
batches, moved to the device once per window; the flat vector is copied in and out of the
model's parameters with ``torch.no_grad``. Eager measured faster than ``torch.compile`` for the
windows of distkeras' models on CPU (``benchmarks/backends.py``), so ``jit_compile`` is off
unless asked for."""
from __future__ import annotations

import numpy as np

from distkeras.backends.base import Backend, FlatWeights, Steps, structure


class Torch(Backend):
    name = "torch"
    module = "torch"
    extra = "torch"
    compiler = "torch.compile"

    def _set_threads(self, threads: int) -> int:
        import torch

        torch.set_num_threads(threads)
        return threads

    def threads(self) -> int:
        import torch

        return torch.get_num_threads()

    def accelerators(self) -> list[str]:
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]

    def supports_jit(self, model) -> bool:
        return False

    def flat_weights(self, model, layout=None) -> FlatWeights:
        return TorchFlatWeights(model, layout)

    def steps(self, model, weights, jit_compile: bool) -> Steps:
        return TorchSteps(model, weights, jit_compile)


class TorchFlatWeights(FlatWeights):
    """The flat vector copied in and out of the parameters' tensors."""

    def get(self) -> np.ndarray:
        import torch

        if not self.keras_variables:
            return np.zeros(0, np.float32)
        with torch.no_grad():
            return torch.cat([v.value.detach().reshape(-1).float()
                              for v in self.keras_variables]).cpu().numpy()

    def set(self, vector: np.ndarray) -> None:
        import torch

        self.check(vector)
        flat = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float32))
        with torch.no_grad():
            for v, part in zip(self.keras_variables, self.split(flat)):
                v.value.copy_(part)


class TorchSteps(Steps):
    def __init__(self, model, weights: TorchFlatWeights, jit_compile: bool):
        super().__init__(model, weights, jit_compile)
        step = model.train_step
        if jit_compile:
            import torch

            step = torch.compile(step)
        self._step = step

    def window(self, xs, ys, sample_weight, start, index=None):
        import torch
        from keras import ops

        if index is None:
            xs, ys = [ops.convert_to_tensor(x) for x in xs], [ops.convert_to_tensor(y) for y in ys]
            sw = None if sample_weight is None else ops.convert_to_tensor(sample_weight)
            return self._run(xs, ys, sw, start, int(xs[0].shape[0]), lambda t, i: t[i])
        rows = torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64))
        return self._run(xs, ys, sample_weight, start, len(index),
                         lambda t, i: t.index_select(0, rows[i]))

    def holds_partitions(self):
        from keras.src.backend.torch.core import get_device

        return get_device() == "cpu"

    def tensor(self, array):
        """In place (``torch.from_numpy``) where it can: writable and numeric; else copied."""
        import torch

        if array.flags.writeable and array.dtype.kind in "fiu":
            return torch.from_numpy(array)
        return super().tensor(array)

    def _run(self, xs, ys, sw, start, steps: int, pick):
        """``steps`` steps on ``pick(t, i)`` of each tensor, from the flat weights ``start``."""
        self.weights.set(start)
        for i in range(steps):
            x, y = structure([pick(t, i) for t in xs]), structure([pick(t, i) for t in ys])
            self._step((x, y) if sw is None else (x, y, pick(sw, i)))
        return self.weights.get()

    def gradient(self, x, y, sample_weight, start):
        import torch
        from keras import ops

        model = self.model
        if start is not None:
            self.weights.set(start)
        x = structure([ops.convert_to_tensor(t) for t in x])
        y = structure([ops.convert_to_tensor(t) for t in y])
        sw = None if sample_weight is None else ops.convert_to_tensor(sample_weight)
        y_pred = model(x, training=True)
        model.zero_grad()
        loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sw, training=True)
        first = x[0] if isinstance(x, list) else x
        model._loss_tracker.update_state(loss, sample_weight=first.shape[0])
        model.optimizer.scale_loss(loss).backward()
        trainable = model.trainable_weights
        with torch.no_grad():
            model.compute_metrics(x, y, y_pred, sample_weight=sw)
            grads = [v.value.grad if v.value.grad is not None else torch.zeros_like(v.value)
                     for v in trainable]
            return torch.cat([g.reshape(-1).float() for g in grads]).cpu().numpy()

    def apply(self, gradient):
        import torch

        trainable = self.model.trainable_weights
        flat = torch.from_numpy(gradient)
        grads, offset = [], 0
        for v in trainable:
            n = int(np.prod(v.shape))
            grads.append(flat[offset:offset + n].reshape(tuple(v.shape)).to(v.value.dtype))
            offset += n
        with torch.no_grad():
            self.model.optimizer.apply(grads, trainable)
