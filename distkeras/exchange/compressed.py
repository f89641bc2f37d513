"""Compressed means over the ring: one stream of vectors (gradients every step, or replicas
every window) averaged over the workers with a compressor (``distkeras.compression``).

How each kind of compressor travels, and why the mean is still identical on every worker:

- ``collective`` (PowerSGD): its own all-reduce of two small float32 factors over the ring;
- ``dense`` (fp16, bf16, int8): the ring's reduce-scatter and all-gather, every chunk
  compressed (``RingAllReduce.sum_encoded``); the owner of a chunk keeps what it sent;
- otherwise (top-k): an all-gather of every worker's compressed vector, with error feedback,
  each worker decoding all of them in worker order (a sparse sum does not add hop by hop).

A stream of replicas is averaged as differences from a ``reference`` every worker holds (the
last mean; the common start before the first): x̄ = ref + mean(xᵢ − ref), so a compressor
built for differences (top-k) never sees a whole replica.

Example::

    mean = CompressedMean(ring, compressor("int8"), stats, seed=0)
    g = mean(gradient)                        # identical on every worker
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from distkeras.compression import ErrorFeedback
from distkeras.exchange.base import ExchangeStats


class CompressedMean:
    """The mean over the workers of one stream of vectors, compressed on the ring."""

    def __init__(self, ring, compressor, stats: ExchangeStats, seed: int,
                 reference: Optional[np.ndarray] = None):
        self.ring, self.compressor, self.stats, self.seed = ring, compressor, stats, seed
        self.reference = None if reference is None else np.array(reference, np.float32)
        self.feedback = ErrorFeedback(compressor)
        self.state = None            # a collective compressor's stream (PowerSGD's Q, residual)

    def __call__(self, vector: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        x = np.asarray(vector, np.float32).ravel()
        if self.reference is not None:
            x = x - self.reference
        mean = self._mean(x)
        if self.reference is not None:
            mean += self.reference
            np.copyto(self.reference, mean)
        if out is None:
            return mean
        np.copyto(out, mean)
        return out

    def _mean(self, x: np.ndarray) -> np.ndarray:
        ring, c, n = self.ring, self.compressor, self.ring.n
        if n == 1:
            return x.copy()
        self.stats.raw_bytes_sent += 2 * (n - 1) * x.nbytes // n   # the float32 ring's bytes
        if c.collective:
            if self.state is None:
                self.state = c.stream(x.size, self.seed)
            mean = c.all_reduce(x, self.state, ring.sum, n)
            self.stats.feedback_norm = self.state.norm
        elif c.dense:
            mean = ring.sum_encoded(x, c, scale=1.0 / n)
        else:
            blobs = ring.gather_encoded(self.feedback.send(x))
            mean = np.zeros_like(x)
            for blob in blobs:             # worker order: the same sum on every worker
                c.add_decoded(blob, mean)
            mean *= np.float32(1.0 / n)
            self.stats.feedback_norm = self.feedback.norm
        return mean
