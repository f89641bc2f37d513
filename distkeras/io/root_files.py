"""What one ROOT file holds, read on the driver before any Spark job: whether it opens (the
magic bytes, the tree), which branches a selection names (with "did you mean"), how many entries
and clusters it has, its uncompressed size per entry, and baskets that cannot be read. Errors
name the file, the problem and the fix (``distkeras.io.errors``).

:class:`Survey` runs that over a whole input: the first readable file fixes the schema, the
others are checked against it in parallel, and a bad file raises or is skipped
(``on_bad_file``).

Example::

    survey = Survey("Delphes", options={}, on_bad_file="skip")
    reference, selection = survey.reference(files, ["Jet.*"])
    infos = [reference] + survey.check_all(files[1:], [n for n, _ in selection], reference)
"""
from __future__ import annotations

import difflib
import fnmatch
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Mapping, Sequence

import pyarrow as pa

from distkeras.io.errors import BadRootFileError, RootReadError, RootSchemaError
from distkeras.io.paths import _GLOB_CHARS
from distkeras.io.read_report import ReadReport, SkippedInput
from distkeras.io.root_types import branch_arrow_type, open_file, spark_type

log = logging.getLogger(__name__)


@dataclass
class FileInfo:
    path: str
    entries: int
    offsets: list[int]          # cluster boundaries common to the selected branches
    bytes_per_entry: float      # uncompressed estimate for the selected branches
    interpretations: dict[str, str]


def _classify_open_error(path: str, exc: Exception) -> RootReadError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, RootReadError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return BadRootFileError(path, "file not found", "check the path; was it moved or deleted?")
    if isinstance(exc, PermissionError):
        return BadRootFileError(path, "permission denied",
                                "make it readable by the user Spark runs as (chmod a+r), or on "
                                "EOS renew your token (kinit / voms-proxy-init)")
    if "not a ROOT file" in str(exc):
        return BadRootFileError(path, f"not a ROOT file ({first})",
                                "pass only ROOT files; check that the copy or download completed")
    return BadRootFileError(path, f"corrupt or truncated ROOT file ({type(exc).__name__}: {first})",
                            "copy or regenerate the file, or pass on_bad_file='skip'")


def _check_magic(path: str) -> None:
    """Local files: catch empty and non-ROOT files before uproot reads a header chunk."""
    local = path[len("file://"):] if path.startswith("file://") else path
    if "://" in local:
        return
    with open(local, "rb") as fh:
        head = fh.read(4)
    if head != b"root":
        raise BadRootFileError(path, "empty file (0 bytes)" if not head else
                               f"not a ROOT file (it starts with {head!r}, not b'root')",
                               "pass only ROOT files; check that the copy or download completed")


def _open_tree(path: str, tree_name: str, options: dict):
    try:
        _check_magic(path)
        f = open_file(path, options)
    except Exception as exc:  # noqa: BLE001 - classified
        raise _classify_open_error(path, exc) from exc
    try:
        size, end = getattr(f.file.source, "num_bytes", None), f.file.fEND
        if size is not None and size < end:
            raise BadRootFileError(path, f"truncated: {size} bytes on disk, the header says {end}",
                                   "the write or copy was interrupted; copy it again or pass "
                                   "on_bad_file='skip'")
        trees = f.keys(filter_classname="TTree", cycle=False, recursive=True)
        if tree_name not in f:
            raise RootSchemaError(path, f"no TTree named {tree_name!r} (TTrees here: {trees})",
                                  f"pass tree= one of {trees}" if trees else "is this the right file?")
        cls = f.classname_of(tree_name)
        if cls != "TTree":
            raise RootSchemaError(path, f"{tree_name!r} is a {cls}, not a TTree",
                                  "write TTrees with uproot's f.mktree(name, types) + extend()")
        return f, f[tree_name]
    except RootReadError:
        f.close()
        raise
    except Exception as exc:  # noqa: BLE001
        f.close()
        raise _classify_open_error(path, exc) from exc


def _leaf_branches(tree) -> dict:
    return {b.name: b for b in tree.itervalues(recursive=True)}


def resolve_branches(tree, path: str, patterns: Sequence[str] | None) -> list[tuple[str, pa.DataType]]:
    """Branches selected by names and ``fnmatch`` wildcards, in tree order within a pattern."""
    every = _leaf_branches(tree)
    leaves = {n: b for n, b in every.items() if len(b.branches) == 0}
    chosen: dict[str, pa.DataType] = {}
    unsupported = []
    if patterns is None:
        patterns = ["*"]
    for pattern in patterns:
        if _GLOB_CHARS & set(pattern):
            hits = [n for n in leaves if fnmatch.fnmatchcase(n, pattern)]
            found = 0
            for n in hits:
                t = branch_arrow_type(leaves[n])
                if t is None:
                    unsupported.append(f"{n} ({leaves[n].typename})")
                else:
                    chosen.setdefault(n, t)
                    found += 1
            if not found:
                raise RootSchemaError(path, f"branch pattern {pattern!r} matches no readable branch",
                                      _did_you_mean(pattern, leaves))
            continue
        if pattern not in every:
            raise RootSchemaError(path, f"no branch {pattern!r} in tree {tree.name!r}",
                                  _did_you_mean(pattern, leaves))
        if pattern not in leaves:
            raise RootSchemaError(path, f"branch {pattern!r} is a split object with sub-branches",
                                  f"select its fields, e.g. '{pattern}.*'")
        t = branch_arrow_type(leaves[pattern])
        if t is None:
            raise RootSchemaError(path, f"branch {pattern!r} has type {leaves[pattern].typename}, "
                                  "which has no Spark column type", "leave it out")
        chosen.setdefault(pattern, t)
    if unsupported:
        log.info("%s: wildcard skipped %d branch(es) without a Spark type: %s", path,
                 len(unsupported), ", ".join(unsupported[:10]))
    return list(chosen.items())


def _did_you_mean(name: str, names) -> str:
    close = difflib.get_close_matches(name.replace("*", ""), list(names), n=3, cutoff=0.5)
    hint = f"did you mean {close}? " if close else ""
    return hint + ("Delphes names are 'Jet.PT' with counter 'Jet_size'; uproot-written "
                   "trees use 'Jet_PT' with counter 'nJet'")


def inspect_file(path: str, tree_name: str, branches: Sequence[str], options: dict,
                 reference: FileInfo | None = None, ref_types: Mapping[str, pa.DataType] = None) -> FileInfo:
    """Open one file, check its selected branches against the reference file, and collect its
    entry count, cluster boundaries and size estimate."""
    f, tree = _open_tree(path, tree_name, options)
    try:
        every = _leaf_branches(tree)
        interp = {}
        for name in branches:
            b = every.get(name)
            if b is None:
                raise RootSchemaError(path, f"branch {name!r} (present in {reference.path}) is missing",
                                      "files read together need the same branches; read them "
                                      "separately or leave the branch out")
            interp[name] = repr(b.interpretation)
            if reference is not None and interp[name] != reference.interpretations[name]:
                t = branch_arrow_type(b)
                if t != ref_types[name]:
                    here = spark_type(t).simpleString() if t is not None else b.typename
                    raise RootSchemaError(path, f"branch {name!r} has type {here} here but "
                                          f"{spark_type(ref_types[name]).simpleString()} in {reference.path}",
                                          "read the two layouts separately and union them after a cast")
        selected = [every[n] for n in branches]
        _check_baskets(path, f, selected)
        n = int(tree.num_entries)
        wanted = set(branches)
        offsets = [int(x) for x in tree.common_entry_offsets(filter_branch=lambda b: b.name in wanted)]
        offsets = sorted({o for o in offsets if 0 <= o <= n} | {0, n})
        nbytes = sum(_uncompressed(b) for b in selected)
        return FileInfo(path, n, offsets, nbytes / n if n else 0.0, interp)
    except RootReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt metadata
        raise _classify_open_error(path, exc) from exc
    finally:
        f.close()


def _uncompressed(branch) -> int:
    try:
        return int(branch.uncompressed_bytes)
    except Exception:  # noqa: BLE001 - metadata without sizes: guess from the compressed size
        return 3 * int(getattr(branch, "compressed_bytes", 0) or 0)


def _check_baskets(path: str, f, branches) -> None:
    """Baskets pointing past the end of the file mean a truncated copy."""
    size = getattr(f.file.source, "num_bytes", None)
    if size is None:
        return
    for b in branches:
        k = b.num_baskets
        seeks = b.member("fBasketSeek")[:k]
        nbytes = b.member("fBasketBytes")[:k]
        if k and int((seeks + nbytes).max()) > size:
            raise BadRootFileError(path, f"truncated: baskets of branch {b.name!r} lie beyond the "
                                   f"end of the file ({size} bytes)",
                                   "copy it again or pass on_bad_file='skip'")


# ----------------------------------------------------------------------------- planning
def _entries_or_none(path: str, tree: str, options: dict) -> int | None:
    """Entries of a file being skipped, when its tree can still be opened."""
    try:
        f, t = _open_tree(path, tree, options)
    except RootReadError:
        return None
    try:
        return int(t.num_entries)
    except Exception:  # noqa: BLE001
        return None
    finally:
        f.close()


class Survey:
    """The files of one read, inspected: the first readable one fixes the schema, the others
    are checked against it in parallel; a bad file raises, or under ``on_bad_file="skip"`` is
    recorded as skipped with the entries it loses."""

    def __init__(self, tree: str, options: dict, on_bad_file: str):
        self.tree, self.options, self.on_bad_file = tree, options, on_bad_file
        self.skipped: list[SkippedInput] = []

    def _failed(self, path: str, err: RootReadError) -> None:
        if self.on_bad_file == "raise":
            raise err
        self.skipped.append(SkippedInput(path, f"{err.problem}",
                                         _entries_or_none(path, self.tree, self.options)))

    def reference(self, files: list[str], branches: Sequence[str] | None):
        """``(FileInfo, selection, files left)`` of the first file that opens and has the
        selected branches; ``selection`` is ``[(branch, Arrow type)]``."""
        todo, first_error = list(files), None
        while todo:
            path = todo.pop(0)
            try:
                f, t = _open_tree(path, self.tree, self.options)
                try:
                    selection = resolve_branches(t, path, branches)
                finally:
                    f.close()
                info = inspect_file(path, self.tree, [n for n, _ in selection], self.options)
                return info, selection, todo
            except RootReadError as err:
                first_error = first_error or err
                self._failed(path, err)
        raise type(first_error)(first_error.path, f"{first_error.problem} (and all other "
                                f"{len(files) - 1} input file(s) were skipped too)",
                                first_error.hint)

    def check_all(self, paths: list[str], names: list[str], reference: FileInfo,
                  ref_types: dict, max_threads: int = 8) -> list[FileInfo]:
        """The files that match the reference (in parallel threads: opening is I/O)."""
        def check(path: str) -> FileInfo | RootReadError:
            try:
                return inspect_file(path, self.tree, names, self.options, reference, ref_types)
            except RootReadError as err:
                return err

        with ThreadPoolExecutor(max_workers=max(1, min(max_threads, len(paths)))) as pool:
            results = list(pool.map(check, paths))
        infos = []
        for path, res in zip(paths, results):
            if isinstance(res, RootReadError):
                self._failed(path, res)
            else:
                infos.append(res)
        return infos

    def report(self, infos: list[FileInfo]) -> ReadReport:
        return ReadReport(files=[i.path for i in infos], entries=sum(i.entries for i in infos),
                          bytes_estimate=int(sum(i.entries * i.bytes_per_entry for i in infos)),
                          skipped=list(self.skipped))
