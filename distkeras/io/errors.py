"""Exceptions raised while reading ROOT files.

Every error names the file (or pattern) at fault and says how to fix it::

    try:
        df = distkeras.read_root(spark, "data/*.root", tree="Delphes")
    except distkeras.RootReadError as err:
        print(err.path, err.hint)

``RootReadError`` is an ``OSError``; the schema errors are also ``ValueError``s, so code that
catches either builtin keeps working.
"""
from __future__ import annotations


class RootReadError(OSError):
    """A ROOT input could not be read. ``path`` names the file or pattern, ``hint`` the fix."""

    def __init__(self, path: str | None, problem: str, hint: str = ""):
        self.path = path
        self.problem = problem
        self.hint = hint
        where = f"{path}: " if path else ""
        fix = f" Fix: {hint}" if hint else ""
        super().__init__(f"{where}{problem}.{fix}")

    def __str__(self) -> str:  # OSError would format (errno, strerror) otherwise
        return self.args[0]

    def __reduce__(self):  # survive the trip from an executor
        return (type(self), (self.path, self.problem, self.hint))


class NoInputFilesError(RootReadError, FileNotFoundError):
    """The path list is empty, or a path / glob / directory matched no file."""


class BadRootFileError(RootReadError):
    """The file is missing, unreadable, not ROOT, truncated or corrupt."""


class RootSchemaError(RootReadError, ValueError):
    """Missing tree or branch, a type that differs between files, a column name collision,
    or a branch type Spark cannot hold."""
