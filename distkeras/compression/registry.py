"""Compressors by name: ``compressor("topk:0.01")`` makes one from its spec string.

A spec is ``<name>`` or ``<name>:<argument>`` (``fp16``, ``bf16``, ``int8``,
``int8:stochastic``, ``topk:0.01``, ``powersgd:4``); ``None`` or ``"none"`` is no compression.
"""
from __future__ import annotations

from typing import Optional, Union

COMPRESSORS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make a compressor reachable by its ``name``."""
    COMPRESSORS[cls.name] = cls
    return cls


def names() -> list[str]:
    """The registered compressors' names."""
    _load()
    return sorted(COMPRESSORS)


def compressor(spec: Union[str, "Compressor", None], seed: int = 0) -> Optional["Compressor"]:
    """The compressor a spec names (None for ``None``/``"none"``); an unknown name or a bad
    argument raises ``ValueError`` listing what exists."""
    from distkeras.compression.base import Compressor

    if spec is None or isinstance(spec, Compressor):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"compression={spec!r}: give a name such as 'int8' or 'topk:0.01'")
    text = spec.strip().lower()
    if text in ("", "none"):
        return None
    name, _, argument = text.partition(":")
    _load()
    if name not in COMPRESSORS:
        raise ValueError(f"compression={spec!r}: unknown compressor {name!r}; use one of "
                         f"{', '.join(names())} (e.g. 'fp16', 'int8', 'topk:0.01', "
                         "'powersgd:4') or None")
    return COMPRESSORS[name](argument or None, seed=seed)


def canonical(spec) -> Optional[str]:
    """The spec as the compressor names itself (None: no compression); checks it."""
    made = compressor(spec)
    return None if made is None else made.spec


def _load() -> None:
    from distkeras.compression import casts, int8, powersgd, topk  # noqa: F401 - they register
