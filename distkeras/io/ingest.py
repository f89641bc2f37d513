"""ROOT -> Parquet ingestion (the library side of ``jobs/ingest.py``).

Example::

    summary = ingest_root(spark, None, "out/events.parquet", tree="Delphes",
                          labels={"qcd/*.root": 0, "ttbar/*.root": 1, "wjets/*.root": 2})
    print(summary.text())
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from distkeras.io.root_plan import MiB, PathsLike, RootPlan, SkippedInput, plan_root

log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    """Outcome of :func:`ingest_root`."""

    files: int
    events: int
    input_bytes: int
    output_bytes: int
    seconds: float
    partitions: int
    output: str
    skipped: list[SkippedInput] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        lost = sum(s.entries_lost or 0 for s in self.skipped)
        skipped = f", {len(self.skipped)} input(s) skipped ({lost} events lost)" if self.skipped else ""
        return (f"ingested {self.files} file(s), {self.events} events, {self.input_bytes / MiB:.1f} MiB "
                f"ROOT -> {self.output_bytes / MiB:.1f} MiB Parquet in {self.partitions} partition(s), "
                f"{self.seconds:.1f} s, {self.rows_per_s:,.0f} rows/s{skipped} -> {self.output}")


def _size(path: str) -> int:
    if "://" in path and not path.startswith("file:"):
        return 0  # remote: not counted
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path) if os.path.exists(path) else 0


class _Progress(threading.Thread):
    """Logs finished/total tasks of the running stages every ``interval`` seconds."""

    def __init__(self, spark, interval: float):
        super().__init__(daemon=True, name="distkeras-ingest-progress")
        self.tracker, self.interval, self.done = spark.sparkContext.statusTracker(), interval, threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            for sid in self.tracker.getActiveStageIds():
                info = self.tracker.getStageInfo(sid)
                if info is not None:
                    log.info("stage %d: %d/%d tasks done, %d running", sid, info.numCompletedTasks,
                             info.numTasks, info.numActiveTasks)


def ingest_root(spark, paths: PathsLike | None, output: str, tree: str = "Delphes",
                branches: Sequence[str] | None = None, labels: Mapping[str, int] | None = None, *,
                on_bad_file: str = "raise", partition_bytes: int | None = None,
                partition_entries: int | None = None, source_column: str | None = None,
                **write_options) -> IngestSummary:
    """Read ROOT files with :func:`~distkeras.io.root.read_root` and write Parquet to ``output``
    (``write_options``: those of :func:`write_parquet`)."""
    plan = plan_root(paths, tree, branches, labels=labels, source_column=source_column,
                     partition_bytes=partition_bytes, partition_entries=partition_entries,
                     parallelism=spark.sparkContext.defaultParallelism, on_bad_file=on_bad_file)
    return write_parquet(spark, plan, output, **write_options)


def write_parquet(spark, plan: RootPlan, output: str, *, num_files: int | None = None,
                  rows_per_file: int | None = None, mode: str = "errorifexists",
                  compression: str = "zstd", progress_interval: float = 10.0) -> IngestSummary:
    """Run a :class:`~distkeras.io.root_plan.RootPlan` (made with ``plan_root`` before Spark
    starts, so bad input fails fast) and write Parquet to ``output``.

    One Parquet file per read partition unless ``num_files`` (coalesce, no shuffle) or
    ``rows_per_file`` (``maxRecordsPerFile``) say otherwise. Skipped inputs are logged and listed
    in the summary.
    """
    t0 = time.perf_counter()
    df = plan.to_dataframe(spark)
    report = plan.report
    log.info("reading %d file(s), %d events, ~%.0f MiB in %d partition(s) -> %s", len(report.files),
             report.entries, report.bytes_estimate / MiB, report.partitions, output)
    if num_files and num_files < max(1, report.partitions):
        df = df.coalesce(num_files)
    writer = df.write.mode(mode).option("compression", compression)
    if rows_per_file:
        writer = writer.option("maxRecordsPerFile", int(rows_per_file))
    progress = _Progress(spark, progress_interval)
    progress.start()
    try:
        writer.parquet(output)
    finally:
        progress.done.set()
    seconds = time.perf_counter() - t0
    report.log_skipped()  # executor-side skips are known now
    events = report.entries - sum(s.entries_lost or 0 for s in report.runtime_skipped)
    return IngestSummary(files=len(report.files), events=events,
                         input_bytes=sum(_size(p) for p in report.files), output_bytes=_size(output),
                         seconds=seconds, partitions=report.partitions, output=output,
                         skipped=report.all_skipped)
