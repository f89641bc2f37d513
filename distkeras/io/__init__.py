"""Input/output: ROOT files as Spark DataFrames (uproot in executors).

Example::

    from distkeras.io import read_root
    events = read_root(spark, "data/*.root", tree="Delphes", branches=["Jet.*"])
"""
from __future__ import annotations

from distkeras.lazy import lazy

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

__getattr__, __dir__, __all__ = lazy(__name__, _LAZY)
