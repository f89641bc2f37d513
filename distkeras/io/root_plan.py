"""Reading plan for ROOT input, built on the driver: list files, open each one once, check its
schema against the first file, and cut entry ranges at cluster boundaries into Spark partitions.

The driver only reads file headers and TTree metadata here; executors read the baskets
(:mod:`distkeras.io.root_types`). Every problem found here is raised at once as a
:class:`~distkeras.io.errors.RootReadError` naming the file and the fix, or, with
``on_bad_file="skip"``, recorded in the :class:`ReadReport`.

Example::

    plan = plan_root("data/*.root", "Delphes", branches=["Jet.*", "MissingET.MET"])
    print(plan.report.summary(), len(plan.partitions))
"""
from __future__ import annotations

import difflib
import fnmatch
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pyarrow as pa

from distkeras.deprecation import renamed_keywords
from distkeras.io.errors import (BadRootFileError, NoInputFilesError, RootReadError,
                                 RootSchemaError)
from distkeras.io.paths import _GLOB_CHARS, PathsLike, assign_labels, expand_paths
from distkeras.io.root_types import (Chunk, ReadSpec, branch_arrow_type, column_name, open_file,
                                     spark_type)

log = logging.getLogger(__name__)

MiB = 1 << 20
DEFAULT_PARTITION_BYTES = 128 * MiB   # like spark.sql.files.maxPartitionBytes
MIN_PARTITION_BYTES = 4 * MiB         # like spark.sql.files.openCostInBytes
DEFAULT_CHUNK_BYTES = 32 * MiB        # one Arrow batch at most (unless one cluster is bigger)


# ----------------------------------------------------------------------------- report
@dataclass
class SkippedInput:
    """A file (or entry range of one) left out under ``on_bad_file="skip"``."""

    path: str
    reason: str
    entries_lost: int | None      # None: the file could not be opened, its size is unknown
    entry_range: tuple[int, int] | None = None


@dataclass
class ReadReport:
    """What a ROOT read covered and what it left out.

    ``skipped`` is filled while planning; ``runtime_skipped`` (entry ranges that failed in
    executors) is complete once a Spark action has read the whole DataFrame.
    """

    files: list[str] = field(default_factory=list)
    entries: int = 0
    bytes_estimate: int = 0
    partitions: int = 0
    skipped: list[SkippedInput] = field(default_factory=list)
    _runtime: Any = field(default=None, repr=False)   # a Spark accumulator of tuples

    @property
    def runtime_skipped(self) -> list[SkippedInput]:
        if self._runtime is None:
            return []
        seen = {}
        for path, start, stop, reason in self._runtime.value:  # retried tasks report twice
            seen.setdefault((path, start, stop), SkippedInput(path, reason, stop - start, (start, stop)))
        return sorted(seen.values(), key=lambda s: (s.path, s.entry_range))

    @property
    def all_skipped(self) -> list[SkippedInput]:
        return self.skipped + self.runtime_skipped

    @property
    def entries_lost(self) -> int:
        """Events known to be lost (files that could not be opened count as 0 here)."""
        return sum(s.entries_lost or 0 for s in self.all_skipped)

    def summary(self) -> str:
        lines = [f"{len(self.files)} file(s), {self.entries} entries planned in "
                 f"{self.partitions} partition(s), ~{self.bytes_estimate / MiB:.1f} MiB uncompressed"]
        for s in self.all_skipped:
            rng = f" entries [{s.entry_range[0]}, {s.entry_range[1]})" if s.entry_range else ""
            lost = "unknown number of" if s.entries_lost is None else s.entries_lost
            lines.append(f"skipped {s.path}{rng}: {s.reason} ({lost} events lost)")
        return "\n".join(lines)

    def log_skipped(self) -> None:
        """Log one warning per skipped input plus a total (a no-op when nothing was skipped)."""
        items = self.all_skipped
        for s in items:
            log.warning("skipped %s%s: %s (%s events lost)", s.path,
                        f" entries {list(s.entry_range)}" if s.entry_range else "", s.reason,
                        "unknown" if s.entries_lost is None else s.entries_lost)
        if items:
            unknown = sum(s.entries_lost is None for s in items)
            log.warning("on_bad_file='skip': %d input(s) skipped, %d events lost%s", len(items),
                        self.entries_lost, f" (+ {unknown} unopenable file(s))" if unknown else "")


# ----------------------------------------------------------------------------- inspection
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
@dataclass
class RootPlan:
    """Files, schema and partitions of a ROOT read; ``to_dataframe(spark)`` runs it."""

    spec: ReadSpec
    columns: list[str]
    arrow_types: list[pa.DataType]
    files: list[FileInfo]
    partitions: list[list[Chunk]]
    report: ReadReport

    def spark_schema(self):
        """The output StructType (branch columns, then label, source file, entry number)."""
        import json

        from pyspark.sql.types import StructType

        return StructType.fromJson(json.loads(self.spec.schema_json))

    labels: dict | None = None
    partition_bytes: int | None = None
    partition_entries: int | None = None
    parallelism: int = 1

    @property
    def auto_sized(self) -> bool:
        """True when the partition size follows the cluster's parallelism."""
        return self.partition_bytes is None and self.partition_entries is None

    def cut(self, parallelism: int = 1) -> "RootPlan":
        """(Re)cut the partitions, without reopening files. Auto size: min(128 MiB, max(4 MiB,
        total / parallelism)), like Spark's file sources."""
        self.parallelism = max(1, int(parallelism))
        if self.partition_entries is not None:
            target, by_entries = float(max(1, self.partition_entries)), True
            chunk_target = target
        else:
            target = float(self.partition_bytes or min(DEFAULT_PARTITION_BYTES, max(
                MIN_PARTITION_BYTES, self.report.bytes_estimate / self.parallelism)))
            by_entries, chunk_target = False, min(target, DEFAULT_CHUNK_BYTES)
        self.partitions = _cut(self.files, self.labels, target, by_entries, chunk_target)
        self.report.partitions = len(self.partitions)
        return self


def _schema_json(columns, types, label_col, source_col, entry_col) -> str:
    from pyspark.sql import types as T

    fields = [T.StructField(c, spark_type(t), True) for c, t in zip(columns, types)]
    if label_col:
        fields.append(T.StructField(label_col, T.IntegerType(), True))
    if source_col:
        fields.append(T.StructField(source_col, T.StringType(), True))
    if entry_col:
        fields.append(T.StructField(entry_col, T.LongType(), True))
    return T.StructType(fields).json()


def _check_columns(names: list[str], columns: list[str], extra: list[str]) -> None:
    owner: dict[str, str] = {}
    for branch, col in list(zip(names, columns)) + [(f"<{e} column>", e) for e in extra]:
        if col in owner:
            raise RootSchemaError(None, f"{owner[col]!r} and {branch!r} both map to the Spark "
                                  f"column {col!r} (non [A-Za-z0-9_] characters become '_')",
                                  "select only one of them, or rename the label/source column")
        owner[col] = branch


def _cut(files: list[FileInfo], labels: Mapping[str, int] | None, target: float, by_entries: bool,
         chunk_target: float) -> list[list[Chunk]]:
    """Merge cluster ranges into chunks (<= chunk_target) and chunks into partitions (<= target);
    a big file spans several partitions, small files share one."""
    parts: list[list[Chunk]] = []
    current: list[Chunk] = []
    size = 0.0
    for info in files:
        label = labels[info.path] if labels else None
        weight = 1.0 if by_entries else max(info.bytes_per_entry, 1e-9)
        start = 0
        bounds = info.offsets[1:]
        for i, stop in enumerate(bounds):
            last = i == len(bounds) - 1
            if not last and (bounds[i + 1] - start) * weight <= chunk_target:
                continue  # the next cluster still fits in this chunk
            if stop == start:
                continue
            w = (stop - start) * weight
            if current and size + w > target:
                parts.append(current)
                current, size = [], 0.0
            current.append(Chunk(info.path, start, stop, label))
            size += w
            start = stop
    if current:
        parts.append(current)
    return parts


@renamed_keywords(label_column="label_col", source_column="source_col", entry_column="entry_col")
def plan_root(paths: PathsLike | None, tree: str, branches: Sequence[str] | str | None = None, *,
              labels: Mapping[str, int] | None = None, label_col: str = "label",
              source_col: str | None = None, entry_col: str | None = None,
              partition_bytes: int | None = None, partition_entries: int | None = None,
              parallelism: int = 1,
              on_bad_file: str = "raise", open_options: Mapping | None = None,
              max_threads: int = 8) -> RootPlan:
    """Plan a ROOT read on the driver (no Spark needed); see :func:`distkeras.io.root.read_root`.

    >>> plan = plan_root("data/*.root", "Delphes", ["Jet.*"], partition_entries=10_000)  # doctest: +SKIP
    """
    if on_bad_file not in ("raise", "skip"):
        raise ValueError(f"on_bad_file must be 'raise' or 'skip', not {on_bad_file!r}")
    if partition_bytes is not None and partition_entries is not None:
        raise ValueError("give partition_bytes or partition_entries, not both")
    if isinstance(branches, str):
        branches = [branches]
    options = dict(open_options or {})
    if paths is None:
        if not labels:
            raise NoInputFilesError(None, "no paths and no labels given", "pass paths or labels={glob: label}")
        paths = list(labels)
    files = expand_paths(paths)
    file_labels = assign_labels(files, labels) if labels else None
    report = ReadReport()

    def failed(path: str, err: RootReadError, entries: int | None = None) -> None:
        if on_bad_file == "raise":
            raise err
        report.skipped.append(SkippedInput(path, f"{err.problem}", entries))

    # The first readable file defines the schema.
    reference, selection, todo = None, None, list(files)
    first_error = None
    while todo and reference is None:
        path = todo.pop(0)
        try:
            f, t = _open_tree(path, tree, options)
            try:
                selection = resolve_branches(t, path, branches)
            finally:
                f.close()
            reference = inspect_file(path, tree, [n for n, _ in selection], options)
        except RootReadError as err:
            first_error = first_error or err
            failed(path, err, _entries_or_none(path, tree, options))
    if reference is None:
        raise type(first_error)(first_error.path, f"{first_error.problem} (and all other "
                                f"{len(files) - 1} input file(s) were skipped too)", first_error.hint)
    names = [n for n, _ in selection]
    ref_types = dict(selection)
    columns = [column_name(n) for n in names]
    extra = [c for c in (label_col if labels else None, source_col, entry_col) if c]
    _check_columns(names, columns, extra)

    def check(path: str) -> FileInfo | RootReadError:
        try:
            return inspect_file(path, tree, names, options, reference, ref_types)
        except RootReadError as err:
            return err

    with ThreadPoolExecutor(max_workers=max(1, min(max_threads, len(todo)))) as pool:
        results = list(pool.map(check, todo))
    infos = [reference]
    for path, res in zip(todo, results):
        if isinstance(res, RootReadError):
            failed(path, res, _entries_or_none(path, tree, options))
        else:
            infos.append(res)

    report.files = [i.path for i in infos]
    report.entries = sum(i.entries for i in infos)
    report.bytes_estimate = int(sum(i.entries * i.bytes_per_entry for i in infos))
    spec = ReadSpec(tree=tree, branches=tuple(names),
                    schema_json=_schema_json(columns, [ref_types[n] for n in names],
                                             label_col if labels else None, source_col,
                                             entry_col),
                    label_col=label_col if labels else None, source_col=source_col,
                    entry_col=entry_col,
                    on_bad_file=on_bad_file, open_options=options)
    plan = RootPlan(spec, columns, [ref_types[n] for n in names], infos, [], report,
                    file_labels, partition_bytes, partition_entries)
    plan.cut(parallelism)
    log.info("planned %d file(s), %d entries, ~%.1f MiB in %d partition(s)", len(infos),
             report.entries, report.bytes_estimate / MiB, len(plan.partitions))
    report.log_skipped()
    return plan


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
