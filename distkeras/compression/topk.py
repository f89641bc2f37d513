"""``topk:<fraction>``: only the k = ⌈fraction·n⌉ values of largest magnitude travel, as
(index u32, value f32) pairs: 8k bytes for 4n (``topk:0.01``: 50× fewer). Biased: what it drops
is kept by the sender and added to its next vector (error feedback; Stich et al. 2018, BytePS'
top-k), so nothing is lost, only delayed. Meant for differences (updates, gradients, CHOCO's
x − x̂), never for a whole replica.

Example::

    topk = compressor("topk:0.01")
    blob = topk.encode(update)       # the 1 % largest |values| of the update
"""
from __future__ import annotations

import math

import numpy as np

from distkeras.compression.base import Compressor, body_view
from distkeras.compression.registry import register


@register
class TopK(Compressor):
    name, codec = "topk", 4
    dense = False
    feedback = True
    consensus_step = 0.1    # γ = 1 lets the public copies run away (measured on a ring of 4)

    def __init__(self, argument=None, seed: int = 0):
        try:
            fraction = float(argument)
        except (TypeError, ValueError):
            fraction = float("nan")
        if not 0 < fraction <= 1:
            raise ValueError(f"compression 'topk:{argument}': give the fraction of values "
                             "kept, 0 < fraction <= 1 (e.g. 'topk:0.01')")
        self.argument, self.fraction = argument, fraction

    def k(self, size: int) -> int:
        return min(size, max(1, math.ceil(self.fraction * size))) if size else 0

    def encode_body(self, x):
        k = self.k(x.size)
        if k == x.size:
            index = np.arange(x.size, dtype=np.uint32)
        else:
            index = np.sort(np.argpartition(np.abs(x), x.size - k)[x.size - k:]).astype(np.uint32)
        return np.concatenate([index.astype("<u4").view(np.uint8),
                               x[index].astype("<f4").view(np.uint8)])

    def _pairs(self, body, size):
        k = self.k(size)
        if body.size != 8 * k:
            raise ValueError(f"topk vector of {body.size} body bytes, expected {8 * k}")
        index = body_view(body, 0, "<u4", k, "indices")
        if k and (int(index[-1]) >= size or (k > 1 and (np.diff(index.astype(np.int64)) <= 0)
                                              .any())):
            raise ValueError(f"topk vector with indices out of range or not increasing "
                             f"(size {size}) refused")
        value = body_view(body, 4 * k, "<f4", k, "values")
        if not np.isfinite(value).all():
            raise ValueError("topk vector with non-finite values refused")
        return index, value

    def decode_body(self, body, size):
        out = np.zeros(size, np.float32)
        index, value = self._pairs(body, size)
        out[index] = value
        return out

    def add_decoded(self, blob, out):
        body, end = self.body(blob, out.size)
        index, value = self._pairs(body, out.size)
        out[index] += value
        return end

    def body_bytes(self, size):
        return 8 * self.k(size)
