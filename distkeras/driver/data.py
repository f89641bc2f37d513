"""The training data on the driver: checked and split into one cached partition per worker
(``preflight``), staged as Parquet for the streaming feeds, and validation data collected as
numpy.

Example::

    data = TrainingData.prepare(df, settings, feed, barrier=False)
    data.stage(settings)            # the streaming feeds only
    ...
    data.release()                  # the fit's own cache and staged files
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from distkeras.driver import preflight
from distkeras.feed import FeedSpec
from distkeras.io.filesystem import remove_path
from distkeras.spark import to_arrow
from distkeras.spark_api import spark_api

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """The checked training data: ``prepared`` (one partition per worker), ``steps`` per epoch,
    the most rows a worker's partition holds (as counted: what a worker makes room for), and,
    for the streaming feeds, the staged Parquet files each worker reads."""

    df: Any
    prepared: Any
    steps: int
    owned: bool                 # the cache is the fit's own: released afterwards
    largest_partition: int = 0  # rows
    job_df: Any = None          # what the Spark job maps over
    stream: dict | None = None
    staged: str | None = None

    @classmethod
    def prepare(cls, df, settings, feed: FeedSpec, barrier: bool) -> "TrainingData":
        in_memory = settings.data_feed == "memory"     # its workers check the arrays' values
        prepared, rows, owned = preflight.prepare_training_data(
            df, feed, settings.num_workers, settings.batch_size, barrier,
            settings.cores_per_worker, array_values=not in_memory)
        # a frame used as it is, or merged, is balanced within BALANCED, a repartitioned one
        # within a few rows: a worker given more rows than this grows its arrays
        largest = math.ceil(rows / preflight.BALANCED)
        return cls(df, prepared, rows // settings.batch_size, owned, largest, job_df=prepared)

    def stage(self, settings) -> None:
        """Write the partitions as Parquet for the streaming feeds ('stream', 'petastorm')."""
        if settings.data_feed == "memory":
            return
        self.staged, files = stage_parquet(self.prepared, settings)
        self.stream = {"files": files, "reader": "pyarrow" if settings.data_feed == "stream"
                       else "petastorm"}
        self.job_df = self.df.sparkSession.range(0, settings.num_workers, 1, settings.num_workers)

    def release(self) -> None:
        if self.owned:           # the user's own cache stays
            self.prepared.unpersist()
        if self.staged:
            remove_path(self.df.sparkSession, self.staged)


def collect_arrays(data, feed: FeedSpec, what: str = "validation data"):
    """Validation data as numpy: a DataFrame is collected through Arrow (one Spark job) and
    checked as it arrived."""
    if isinstance(data, (tuple, list)):
        x = data[0]
        return (list(x) if isinstance(x, (list, tuple)) else [x]), data[1]
    selected, kinds = preflight.select_feed_columns(data, feed)
    table = to_arrow(selected)
    preflight.check_table(table, feed, kinds, what)
    return feed.arrays(table)


def collect_arrays_meanwhile(data, feed: FeedSpec, spark):
    """Start :func:`collect_arrays` of ``data`` (None: nothing) on a thread of ``spark``'s
    session, so that its Spark job runs beside the caller's (a fit's training-data checks),
    and return the call that waits for the arrays and raises what the collection raised.

    Example::

        validation = collect_arrays_meanwhile(validation_df, feed, spark)
        data = TrainingData.prepare(df, settings, feed, barrier)     # meanwhile
        val = validation()
    """
    if data is None or isinstance(data, (tuple, list)):
        arrays = None if data is None else collect_arrays(data, feed)
        return lambda: arrays
    box: dict = {}

    def run() -> None:
        try:
            box["arrays"] = collect_arrays(data, feed)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            box["error"] = exc

    thread = spark_api(spark).thread(run, name="distkeras-validation-data")
    thread.start()

    def result():
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["arrays"]

    return result


def stage_parquet(prepared, settings) -> tuple[str, list[str]]:
    """Write the prepared partitions as Parquet (file i = worker i) for the streaming feeds."""
    import tempfile
    import uuid

    spark = prepared.sparkSession
    base = settings.staging_dir
    if base is None:
        if not spark_api(spark).is_local:
            raise ValueError(f"data_feed={settings.data_feed!r} on a cluster needs staging_dir= "
                             "pointing at storage every executor can read (HDFS, EOS, NFS)")
        base = tempfile.gettempdir()
    if settings.data_feed == "petastorm":
        from distkeras.executor.sources import require_petastorm

        require_petastorm()
    path = f"{base.rstrip('/')}/distkeras-stage-{uuid.uuid4().hex[:12]}"
    (prepared.write.option("parquet.block.size", 8 * 1024 * 1024)
     .option("compression", "snappy").parquet(path))
    files = sorted(spark.read.parquet(path).inputFiles())
    log.info("staged %d Parquet files for streaming under %s", len(files), path)
    return path, files
