"""Shipping the search's training data to the executors once per search.

The driver checks and selects the feed columns (``preflight``), collects them through Arrow and
broadcasts the Arrow IPC stream bytes. Each Python worker decodes them once per search and
caches the table (and the numpy arrays per feed layout), so N trials cost one transfer per
worker instead of N. No Rows are iterated and no row objects are pickled.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import pyarrow as pa

from distkeras.feed import FeedSpec, InputSpec, TargetSpec
from distkeras.spark_api import spark_api

log = logging.getLogger(__name__)
_WARN_BYTES = 1 << 30
_TABLES: dict[str, pa.Table] = {}        # executor side: search id -> decoded table
_ARRAYS: dict[tuple, tuple] = {}          # executor side: (search id, feed) -> (xs, y)


@dataclass
class SearchData:
    """What trials need to find their data: the broadcast, the search id and the row count."""

    search_id: str
    broadcast: object
    rows: int
    nbytes: int

    def destroy(self) -> None:
        try:
            self.broadcast.destroy()
        except Exception:  # noqa: BLE001 - the context may already be stopped
            log.debug("broadcast already gone", exc_info=True)


def ship(df, feed: FeedSpec | None, features_col, label_col: str, checked: bool = True) -> SearchData:
    """Check ``df`` against ``feed`` (the layout of a probe model), collect and broadcast it.

    ``feed=None`` (no trial's model could be built on the driver) ships the columns unchecked;
    the trials then fail with their own build errors.
    """
    from distkeras.driver import preflight
    from distkeras.spark import to_arrow

    if feed is None:
        cols = [features_col] if isinstance(features_col, str) else list(features_col)
        feed = FeedSpec(inputs=[InputSpec(cols, ())], targets=[TargetSpec(label_col)])
        checked = False
    selected, kinds = preflight.select_feed_columns(df, feed)
    if checked:
        preflight.check_data(selected, feed, kinds, "search data")
    table = to_arrow(selected)
    if table.num_rows == 0:
        raise preflight.DataError("the search data is empty (0 rows); check sample_fraction and "
                                  "the filters upstream")
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    payload = sink.getvalue().to_pybytes()
    if len(payload) > _WARN_BYTES:
        log.warning("the search data is %.1f GB and is broadcast to every executor; consider "
                    "sample_fraction=", len(payload) / 1e9)
    bc = spark_api(df.sparkSession).share(payload)      # in the closure on Spark Connect
    log.info("search data: %d rows, %.1f MB broadcast once", table.num_rows, len(payload) / 1e6)
    return SearchData(uuid.uuid4().hex, bc, table.num_rows, len(payload))


def worker_table(search_id: str, broadcast) -> pa.Table:
    """Executor side: the search's table, decoded once per Python worker and search."""
    table = _TABLES.get(search_id)
    if table is None:
        _TABLES.clear()          # one search at a time: free the previous search's data
        _ARRAYS.clear()
        table = pa.ipc.open_stream(pa.py_buffer(broadcast.value)).read_all()
        _TABLES[search_id] = table
    return table


def worker_arrays(search_id: str, broadcast, feed: FeedSpec):
    """Executor side: ``(xs, y)`` numpy arrays for this feed layout, cached per worker."""
    key = (search_id, repr(feed.to_dict()))
    if key not in _ARRAYS:
        _ARRAYS[key] = feed.arrays(worker_table(search_id, broadcast))
    return _ARRAYS[key]
