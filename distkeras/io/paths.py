"""Input paths for the ROOT reader: local paths, globs, directories, file:// and remote URLs,
and per-pattern labels.

Example::

    files = expand_paths(["data/qcd/*.root", "data/ttbar/"])
    labels = assign_labels(files, {"data/qcd/*.root": 0, "data/ttbar/": 1})
"""
from __future__ import annotations

import glob
import os
from typing import Iterable, Mapping, Sequence, Union
from urllib.parse import unquote, urlparse

from distkeras.io.errors import NoInputFilesError, RootSchemaError

PathsLike = Union[str, os.PathLike, Iterable[Union[str, os.PathLike]]]
_GLOB_CHARS = set("*?[")


def _local_path(item: str) -> str | None:
    """The local filesystem path of ``item`` (plain path or file:// URL), None for other URLs."""
    if item.startswith("file:"):
        return unquote(urlparse(item).path)
    if "://" in item:
        return None
    return os.path.expanduser(item)


def _expand_one(item: str) -> list[str]:
    local = _local_path(item)
    if local is None:  # root://, https://, s3://, ...: glob through fsspec, else pass through
        if not _GLOB_CHARS & set(urlparse(item).path):
            return [item]
        import fsspec

        fs, _, found = fsspec.core.get_fs_token_paths(item)
        return sorted(fs.unstrip_protocol(p) for p in found)
    if _GLOB_CHARS & set(local):
        found = []
        for p in sorted(glob.glob(local, recursive=True)):
            found.extend(_expand_one(p) if os.path.isdir(p) else [os.path.abspath(p)])
        return found
    if os.path.isdir(local):
        return sorted(os.path.abspath(os.path.join(d, f)) for d, _, files in os.walk(local)
                      for f in files if f.endswith(".root"))
    if not os.path.exists(local):
        raise NoInputFilesError(item, "no such file or directory",
                                "check the path (relative paths are resolved against "
                                f"{os.getcwd()})")
    return [os.path.abspath(local)]


def expand_paths(paths: PathsLike) -> list[str]:
    """Files named by paths, globs (``**`` recursive), directories (their ``*.root`` files,
    recursively), ``file://`` URLs and other URLs (globbed through fsspec), in order,
    duplicates removed.

    >>> expand_paths(["data/qcd/*.root", "root://eosuser.cern.ch//eos/user/x/f.root"])  # doctest: +SKIP
    """
    items = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
    if not items:
        raise NoInputFilesError(None, "the list of input paths is empty", "pass files, globs or directories")
    out: dict[str, None] = {}
    for item in items:
        found = _expand_one(item)
        if not found:
            raise NoInputFilesError(item, "matched no file",
                                    "check the pattern; directories are searched for *.root files")
        out.update(dict.fromkeys(found))
    return list(out)


def assign_labels(files: Sequence[str], labels: Mapping[str, int]) -> dict[str, int]:
    """Label of every file: the label of the pattern (path/glob/directory) that matched it."""
    owner: dict[str, tuple[str, int]] = {}
    for pattern, label in labels.items():
        for f in expand_paths(pattern):
            if f in owner and owner[f][1] != int(label):
                raise RootSchemaError(f, f"matched by label patterns {owner[f][0]!r} (label "
                                      f"{owner[f][1]}) and {pattern!r} (label {label})",
                                      "make the label patterns disjoint")
            owner[f] = (pattern, int(label))
    missing = [f for f in files if f not in owner]
    if missing:
        raise RootSchemaError(missing[0], f"matches none of the label patterns {list(labels)} "
                              f"({len(missing)} file(s) unlabelled)",
                              "add a label pattern for it or leave it out of paths")
    return {f: owner[f][1] for f in files}
