"""Compressed exchanges: fewer bytes per exchange, nothing lost.

- the seam, :class:`Compressor` (``base``), and the registry of names (``registry``);
- the compressors: ``fp16``/``bf16`` (``casts``), ``int8`` (``int8``), ``topk:<fraction>``
  (``topk``), ``powersgd:<rank>`` (``powersgd``);
- streams that keep what a compressor drops: :class:`ErrorFeedback` and :class:`Mirror`
  (``feedback``).

Every trainer takes ``compression=`` (a Param); each exchange uses a compressor where it keeps
its rule right, and refuses one it cannot take before any task starts
(``Exchange.refusal``). Nothing here imports TensorFlow or Spark.

Example::

    from distkeras.compression import compressor
    int8 = compressor("int8")
    blob = int8.encode(update)                 # ~3.9x fewer bytes than update.nbytes
    again, _ = int8.decode(blob, update.size)  # |again - update| <= scale/2 per value
"""
from distkeras.compression.base import Compressor
from distkeras.compression.feedback import ErrorFeedback, Mirror
from distkeras.compression.registry import canonical, compressor, names, register

__all__ = ["Compressor", "ErrorFeedback", "Mirror", "canonical", "compressor", "names",
           "register"]
