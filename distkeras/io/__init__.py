"""Input/output: ROOT files as Spark DataFrames (uproot in executors).

Example::

    from distkeras.io import read_root
    events = read_root(spark, "data/*.root", tree="Delphes", branches=["Jet.*"])
"""
from __future__ import annotations

import importlib

_LAZY = {
    "read_root": "distkeras.io.root",
    "register_root_source": "distkeras.io.root",
    "plan_root": "distkeras.io.root_plan",
    "ReadReport": "distkeras.io.root_plan",
    "column_name": "distkeras.io.root_types",
    "RootReadError": "distkeras.io.errors",
    "BadRootFileError": "distkeras.io.errors",
    "NoInputFilesError": "distkeras.io.errors",
    "RootSchemaError": "distkeras.io.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'distkeras.io' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
