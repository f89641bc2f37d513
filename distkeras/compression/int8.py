"""``int8``: 8-bit integers with one float32 scale per chunk of :data:`CHUNK` values,
s = max|x|/127 over the chunk, q = round(x/s). About 3.9× fewer bytes.

- ``int8`` rounds to nearest: |x − s·q| ≤ s/2 for every value;
- ``int8:stochastic`` rounds up with probability frac(x/s): unbiased, E[s·q] = x, and
  |x − s·q| < s (QSGD's rounding; no error feedback needed).

Example::

    int8 = compressor("int8")
    blob = int8.encode(x)            # 24 + 4·⌈n/256⌉ + n bytes
"""
from __future__ import annotations

import numpy as np

from distkeras.compression.base import Compressor, body_view
from distkeras.compression.registry import register

CHUNK = 256


@register
class Int8(Compressor):
    name, codec = "int8", 3

    def __init__(self, argument=None, seed: int = 0):
        if argument not in (None, "stochastic", "nearest"):
            raise ValueError(f"compression 'int8:{argument}': use 'int8' (round to nearest) or "
                             "'int8:stochastic' (unbiased stochastic rounding)")
        self.argument = argument
        self.stochastic = argument == "stochastic"
        self.rng = np.random.default_rng([seed % 2 ** 32, 8])

    def _chunks(self, x: np.ndarray) -> np.ndarray:
        rows = -(-x.size // CHUNK)
        padded = np.zeros(rows * CHUNK, np.float32)
        padded[:x.size] = x
        return padded.reshape(rows, CHUNK)

    def encode_body(self, x):
        chunks = self._chunks(x)
        scale = (np.max(np.abs(chunks), axis=1) / np.float32(127)).astype(np.float32)
        safe = np.where(scale > 0, scale, np.float32(1))[:, None]
        q = chunks / safe
        if self.stochastic:
            q = np.floor(q + self.rng.random(q.shape, dtype=np.float32))
        else:
            q = np.rint(q)
        q = np.clip(q, -127, 127).astype(np.int8).ravel()[:x.size]
        return np.concatenate([scale.astype("<f4").view(np.uint8), q.view(np.uint8)])

    def decode_body(self, body, size):
        rows = -(-size // CHUNK)
        scale = body_view(body, 0, "<f4", rows, "scales")
        if not np.isfinite(scale).all() or (scale < 0).any():
            raise ValueError("int8 vector with a negative or non-finite scale refused")
        q = body_view(body, 4 * rows, np.int8, size, "values")
        out = np.zeros(rows * CHUNK, np.float32)
        out[:size] = q
        out = out.reshape(rows, CHUNK)
        out *= scale[:, None]
        return out.ravel()[:size]

    def body_bytes(self, size):
        return 4 * -(-size // CHUNK) + size
