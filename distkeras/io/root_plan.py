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

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import pyarrow as pa

from distkeras.deprecation import renamed_keywords
from distkeras.io.errors import NoInputFilesError, RootSchemaError
from distkeras.io.paths import PathsLike, assign_labels, expand_paths
from distkeras.io.read_report import MiB, ReadReport, SkippedInput  # noqa: F401 - re-exported
from distkeras.io.root_dataframe import plan_to_dataframe
from distkeras.io.root_files import FileInfo, Survey
from distkeras.io.root_types import Chunk, ReadSpec, column_name, spark_type

log = logging.getLogger(__name__)

DEFAULT_PARTITION_BYTES = 128 * MiB   # like spark.sql.files.maxPartitionBytes
MIN_PARTITION_BYTES = 4 * MiB         # like spark.sql.files.openCostInBytes
DEFAULT_CHUNK_BYTES = 32 * MiB        # one Arrow batch at most (unless one cluster is bigger)


@dataclass
class RootPlan:
    """Files, schema and partitions of a ROOT read; ``to_dataframe(spark)`` runs it."""

    spec: ReadSpec
    columns: list[str]
    arrow_types: list[pa.DataType]
    files: list[FileInfo]
    partitions: list[list[Chunk]]
    report: ReadReport

    def to_dataframe(self, spark):
        """The Spark DataFrame that reads this plan in the executors (as ``read_root``)."""
        return plan_to_dataframe(spark, self)

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
    branches = [branches] if isinstance(branches, str) else branches
    options = dict(open_options or {})
    files = _input_files(paths, labels)
    survey = Survey(tree, options, on_bad_file)
    reference, selection, rest = survey.reference(files, branches)
    names, ref_types = [n for n, _ in selection], dict(selection)
    columns = [column_name(n) for n in names]
    label_col = label_col if labels else None
    _check_columns(names, columns, [c for c in (label_col, source_col, entry_col) if c])
    infos = [reference] + survey.check_all(rest, names, reference, ref_types, max_threads)
    report = survey.report(infos)
    types = [ref_types[n] for n in names]
    spec = ReadSpec(tree=tree, branches=tuple(names),
                    schema_json=_schema_json(columns, types, label_col, source_col, entry_col),
                    label_col=label_col, source_col=source_col, entry_col=entry_col,
                    on_bad_file=on_bad_file, open_options=options)
    plan = RootPlan(spec, columns, types, infos, [], report,
                    assign_labels(files, labels) if labels else None, partition_bytes,
                    partition_entries)
    plan.cut(parallelism)
    log.info("planned %d file(s), %d entries, ~%.1f MiB in %d partition(s)", len(infos),
             report.entries, report.bytes_estimate / MiB, len(plan.partitions))
    report.log_skipped()
    return plan


def _input_files(paths: PathsLike | None, labels: Mapping[str, int] | None) -> list[str]:
    if paths is None:
        if not labels:
            raise NoInputFilesError(None, "no paths and no labels given",
                                    "pass paths or labels={glob: label}")
        paths = list(labels)
    return expand_paths(paths)
