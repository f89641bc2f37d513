"""The seam of compressed exchanges: a :class:`Compressor` turns one float32 vector into bytes
on the wire and back.

Each compressor says what it is good for, and every exchange asks before it takes one
(``Exchange.refusal``):

- ``dense``: the error is bounded relative to each value (casts, int8), so it may carry whole
  vectors (replicas in pairwise gossip) and partial sums re-encoded hop by hop in a ring;
- ``feedback``: biased (top-k, PowerSGD); the part it drops must be fed back into the next
  vector of the same stream (:class:`~distkeras.compression.feedback.ErrorFeedback`);
- ``collective``: an all-reduce of its own (PowerSGD), not an encoding of one vector.

On the wire a vector is a :data:`HEADER` (magic, codec, values, body bytes) and the codec's
body. Decoding checks all of it: a frame that does not decode to the expected number of finite
values is an error naming what was wrong, never a wrong vector.

Example (a new compressor is one file and one ``@register``)::

    @register
    class Sign(Compressor):
        name, codec, dense, feedback = "sign", 9, False, True
        def encode_body(self, x): ...            # bytes of the body
        def decode_body(self, body, size): ...   # the float32 vector
"""
from __future__ import annotations

import struct
from typing import Optional

import numpy as np

from distkeras.vectors import all_finite

MAGIC = b"DKC1"
HEADER = struct.Struct("<4sB3xQQ")      # magic | codec u8 | values u64 | body bytes u64
_F32 = np.dtype("<f4")


class Compressor:
    """Base: how one float32 vector travels. Subclasses set the class attributes and implement
    :meth:`encode_body` / :meth:`decode_body` (or, when ``collective``, ``all_reduce``)."""

    name: str = ""          # the spec's name: "int8" in "int8:stochastic"
    codec: int = 0          # its id on the wire
    dense = True            # bounded error on each value: whole vectors and hop-by-hop sums
    feedback = False        # biased: needs error feedback
    collective = False      # an all-reduce of its own (ring only)
    consensus_step = 1.0    # CHOCO gossip's γ that suits it (D-PSGD's consensus_step=None)

    def __init__(self, argument: Optional[str] = None, seed: int = 0):
        if argument is not None:
            raise ValueError(f"compression {self.name!r} takes no argument (got {argument!r})")
        self.argument = argument

    @property
    def spec(self) -> str:
        """The string that names this compressor (``compression=`` takes it back)."""
        return self.name if self.argument is None else f"{self.name}:{self.argument}"

    def __repr__(self) -> str:
        return f"compression {self.spec!r}"

    # -- one vector ------------------------------------------------------------------------------
    def encode(self, x: np.ndarray) -> np.ndarray:
        """The bytes (a uint8 array) that carry the finite float32 vector ``x``."""
        x = np.ascontiguousarray(x, dtype=_F32).ravel()
        if not all_finite(x):
            raise ValueError(f"compression {self.spec!r}: the vector to send has "
                             f"{int(np.count_nonzero(~np.isfinite(x)))} non-finite values "
                             "(NaN/inf): the worker's loss diverged; lower the learning rate "
                             "or clip gradients")
        body = self.encode_body(x)
        blob = np.empty(HEADER.size + body.nbytes, np.uint8)
        HEADER.pack_into(blob, 0, MAGIC, self.codec, x.size, body.nbytes)
        blob[HEADER.size:] = np.frombuffer(body, np.uint8) if isinstance(body, bytes) else \
            body.view(np.uint8).ravel()
        return blob

    def decode(self, blob, size: int) -> tuple[np.ndarray, int]:
        """The vector of ``size`` values at the start of ``blob`` and the bytes it took; a blob
        that is not such a vector (another codec, size or length, non-finite values) raises
        ``ValueError``."""
        body, end = self.body(blob, size)
        x = self.decode_body(body, size)
        if x.shape != (size,) or not np.isfinite(x).all():
            raise ValueError(f"{self.spec} vector with non-finite or misplaced values refused")
        return x, end

    def body(self, blob, size: int) -> tuple[np.ndarray, int]:
        """The body bytes of the vector of ``size`` values at the start of ``blob``, and where
        it ends (its header checked)."""
        data = memoryview(blob).cast("B")
        if len(data) < HEADER.size:
            raise ValueError(f"compressed vector of {len(data)} bytes: shorter than its header")
        magic, codec, values, length = HEADER.unpack_from(data, 0)
        if magic != MAGIC or codec != self.codec:
            raise ValueError(f"not a {self.spec} vector (magic {bytes(magic)!r}, codec {codec})")
        if values != size:
            raise ValueError(f"{self.spec} vector of {values} values, expected {size}")
        end = HEADER.size + length
        if end > len(data):
            raise ValueError(f"{self.spec} vector declares {length} body bytes, "
                             f"{len(data) - HEADER.size} arrived")
        return np.frombuffer(data[HEADER.size:end], np.uint8), end

    def encode_body(self, x: np.ndarray) -> np.ndarray:
        """The codec's body for ``x`` (any array whose bytes are the body)."""
        raise NotImplementedError

    def decode_body(self, body: np.ndarray, size: int) -> np.ndarray:
        """The float32 vector of ``size`` values from the body bytes (raise on a bad body)."""
        raise NotImplementedError

    def add_decoded(self, blob, out: np.ndarray) -> int:
        """``out += decode(blob)``; the bytes it took (sparse codecs add only what they carry)."""
        x, used = self.decode(blob, out.size)
        out += x
        return used

    def wire_bytes(self, size: int) -> int:
        """Bytes on the wire for a vector of ``size`` values (header included)."""
        return HEADER.size + self.body_bytes(size)

    def body_bytes(self, size: int) -> int:
        raise NotImplementedError


def body_view(body: np.ndarray, offset: int, dtype, count: int, what: str) -> np.ndarray:
    """``count`` values of ``dtype`` at ``offset`` bytes into ``body`` (a copy, aligned), or a
    ``ValueError`` naming ``what`` is missing."""
    dtype = np.dtype(dtype)
    end = offset + count * dtype.itemsize
    if end > body.size:
        raise ValueError(f"compressed body too short for its {what}")
    return body[offset:end].copy().view(dtype)
