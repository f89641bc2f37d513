"""Casts to 16 bits: ``fp16`` (IEEE half: 11 significant bits, |x| ≤ 65504) and ``bf16``
(bfloat16: float32's range, 8 significant bits), both rounded to nearest. 2× fewer bytes; the
relative error of each value is at most 2⁻¹¹ (fp16) or 2⁻⁸ (bf16), so they carry whole replicas
and partial sums alike (Horovod's and DDP's fp16 compression).

Example::

    fp16 = compressor("fp16")
    x, _ = fp16.decode(fp16.encode(np.float32([1.0, 1 / 3])), 2)   # [1.0, 0.33325195]
"""
from __future__ import annotations

import numpy as np

from distkeras.compression.base import Compressor, body_view
from distkeras.compression.registry import register

FP16_MAX = float(np.finfo(np.float16).max)


@register
class FP16(Compressor):
    name, codec = "fp16", 1

    def encode_body(self, x):
        if x.size and float(np.max(np.abs(x))) > FP16_MAX:
            raise ValueError(f"compression 'fp16': a value of magnitude "
                             f"{float(np.max(np.abs(x))):.3g} is beyond float16's range "
                             f"(±{FP16_MAX:g}); use compression='bf16' (float32's range)")
        return x.astype("<f2")

    def decode_body(self, body, size):
        return body_view(body, 0, "<f2", size, "values").astype(np.float32)

    def body_bytes(self, size):
        return 2 * size


@register
class BF16(Compressor):
    name, codec = "bf16", 2

    def encode_body(self, x):
        bits = x.view(np.uint32)
        # round to nearest, ties to even, on the upper 16 bits
        rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
        return (rounded >> np.uint32(16)).astype("<u2")

    def decode_body(self, body, size):
        return (body_view(body, 0, "<u2", size, "values").astype(np.uint32)
                << np.uint32(16)).view(np.float32)

    def body_bytes(self, size):
        return 2 * size
