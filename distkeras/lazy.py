"""Package attributes imported on first use (PEP 562), so that importing a package costs
nothing until a name is used: ``import distkeras`` imports neither Spark nor TensorFlow.

Example (a package's ``__init__.py``)::

    __getattr__, __dir__, __all__ = lazy(__name__, {"read_root": "distkeras.io.root",
                                                    "spark": None})     # None: a submodule
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy(package: str, names: dict[str, str | None]) -> tuple[Callable, Callable, list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``: each name is imported from its
    module the first time it is used (a ``None`` module: the name is a submodule), then kept."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = names[name]
        value = (importlib.import_module(f"{package}.{name}") if module is None
                 else getattr(importlib.import_module(module), name))
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__, sorted(names)
