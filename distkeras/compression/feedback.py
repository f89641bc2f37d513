"""Streams of vectors through a compressor, and how neither end loses what it drops.

- :class:`ErrorFeedback`, for a stream of *differences* (updates, gradients): the sender keeps
  the residual e, sends C(e + x) and keeps e ← e + x − D(C(e + x)) (Stich et al. 2018,
  Karimireddy et al. 2019): over steps, what was sent plus the residual is exactly what was
  given. The receiver just decodes.
- :class:`Mirror`, for a stream of *points* (a replica, a centre-bound θ): both ends keep x̂, the
  receiver's view of x, from the same start; the sender sends C(x − x̂) and both add its
  decoding to x̂ (CHOCO-SGD's public copies, Koloskova et al. 2019): the view follows x, and
  x − x̂ is what is still to send.

An algorithm says which its commits are (``Algorithm.commit_stream``); each end of an exchange
makes one stream per vector it sends or receives.

Example::

    sender, receiver = ErrorFeedback(compressor("topk:0.1")), ErrorFeedback(compressor("topk:0.1"))
    update = receiver.receive(sender.send(delta), delta.size)
"""
from __future__ import annotations

from typing import Optional

import numpy as np


class ErrorFeedback:
    """One end of a stream of differences: ``send`` keeps the residual, ``receive`` decodes."""

    def __init__(self, compressor, start: Optional[np.ndarray] = None):
        self.compressor = compressor
        self.residual: Optional[np.ndarray] = None

    def send(self, x: np.ndarray) -> np.ndarray:
        """The bytes for ``x`` plus what earlier sends dropped; keeps what this one drops."""
        total = np.asarray(x, np.float32) if self.residual is None else self.residual + x
        blob = self.compressor.encode(total)
        decoded, _ = self.compressor.decode(blob, total.size)
        self.residual = total - decoded
        return blob

    def receive(self, blob, size: int) -> np.ndarray:
        return self.compressor.decode(blob, size)[0]

    def ahead(self, adopted: np.ndarray) -> None:
        """Move ``adopted`` (the receiver's vector a sender continues from) by e, in place:
        where the receiver will be once e has arrived. A sender that adopted the receiver's
        vector without e would compute its next update from a point that lacks it and send the
        same progress twice (e grows window after window: ADAG with top-k 1 % lost 19 points
        of accuracy between epochs 3 and 5)."""
        if self.residual is not None:
            adopted += self.residual

    @property
    def norm(self) -> float:
        """‖e‖: what is still to send."""
        return 0.0 if self.residual is None else float(np.linalg.norm(self.residual))


class Mirror:
    """One end of a stream of points: both ends keep the view x̂, started at ``start``."""

    def __init__(self, compressor, start: np.ndarray):
        self.compressor = compressor
        self.view = np.array(start, dtype=np.float32, copy=True)
        self._norm = 0.0

    def send(self, x: np.ndarray) -> np.ndarray:
        """The bytes that move the receiver's view towards ``x`` (and this end's copy of it)."""
        blob = self.compressor.encode(x - self.view)
        self.view += self.compressor.decode(blob, self.view.size)[0]
        self._norm = float(np.linalg.norm(x - self.view))
        return blob

    def receive(self, blob, size: int) -> np.ndarray:
        """The view after ``blob`` (valid until the next ``receive``)."""
        if size != self.view.size:
            raise ValueError(f"{self.compressor.spec} vector of {size} values for a view of "
                             f"{self.view.size}")
        self.compressor.add_decoded(blob, self.view)
        return self.view

    def ahead(self, adopted: np.ndarray) -> None:
        """Nothing: a point stream's sender keeps its own x, which x − x̂ is measured from."""

    @property
    def norm(self) -> float:
        """‖x − x̂‖ after the last send: what is still to send."""
        return self._norm
