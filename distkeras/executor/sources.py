"""Where a worker's mini-batches come from, epoch after epoch.

``MemorySource`` keeps the partition in numpy (read once, reshuffled every epoch): the default,
fastest when the partition fits in executor memory. ``StreamSource`` streams the worker's Parquet
files row group by row group every epoch, for data larger than executor memory; it reads with
pyarrow, or with petastorm's ``make_batch_reader`` where petastorm is installed (the pyspark 3.5
stack). Row groups are visited in a new order each epoch and rows are shuffled within each one.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from distkeras.feed import FeedSpec, IndexedWindow, Window

log = logging.getLogger(__name__)


class MemorySource:
    """A partition held as numpy arrays (a :class:`Window` of rows); a fresh permutation per
    (seed, worker, epoch), and per further pass over a partition smaller than an epoch asks.

    The driver sizes an epoch by the rows it counted in each worker's partition. Should the
    training job hand a worker fewer (``coalesce`` regroups a cached frame in every job, by
    where its blocks are then: why the driver merges only on a local master), the worker
    revisits its rows in a new order, warned once, rather than running short.
    """

    def __init__(self, rows: Window, seed: int, worker: int):
        self.data, self.seed, self.worker = rows, seed, worker
        self.rows = len(rows)
        self.offset = 0          # where these rows start in ``data`` (see ``share``)
        self._warned = False

    def start_epoch(self, epoch: int) -> None:
        self._epoch, self._pass = epoch, 0
        self._order = np.random.default_rng([self.seed, self.worker, epoch]).permutation(self.rows)
        self._pos = 0

    def take(self, n: int) -> IndexedWindow:
        """The next ``n`` rows of this epoch's order, named in the partition (gathered where
        they are used: inside the backend's compiled window)."""
        idx = self._order[self._pos:self._pos + n]
        self._pos += n
        if len(idx) < n:
            idx = np.concatenate([idx, self._next_pass(n - len(idx))])
        return IndexedWindow(self.data, idx + self.offset if self.offset else idx)

    def _next_pass(self, n: int) -> np.ndarray:
        """``n`` more rows from further passes over the partition, each in its own order."""
        if not self.rows:
            raise ValueError(f"worker {self.worker}: empty partition (more workers than rows?)")
        if not self._warned:
            self._warned = True
            log.warning("worker %d: its partition has %d rows, fewer than an epoch's steps take: "
                        "the rows are revisited (the partitions were grouped differently when "
                        "they were counted)", self.worker, self.rows)
        parts = []
        while n > 0:
            self._pass += 1
            self._order = np.random.default_rng(
                [self.seed, self.worker, self._epoch, self._pass]).permutation(self.rows)
            self._pos = min(n, self.rows)
            parts.append(self._order[:self._pos])
            n -= self._pos
        return np.concatenate(parts)


def share(sources: list[MemorySource]) -> None:
    """Put the rows of ``sources`` in one partition, each source reading its own part of it:
    workers that take turns on one replica in one process (a simulation) then share one held
    copy of the data and one compiled window (a backend compiles one per partition shape).

    Example::

        share(sources)      # sources[1] now takes rows from sources[0].data, past its rows
    """
    whole = Window.concatenate([s.data for s in sources])
    offset = 0
    for source in sources:
        source.data, source.offset = whole, offset
        offset += source.rows


class StreamSource:
    """A worker's Parquet files, streamed every epoch (pyarrow or petastorm reader)."""

    def __init__(self, files: list[str], feed: FeedSpec, seed: int, worker: int,
                 reader: str = "pyarrow"):
        if not files:
            raise FileNotFoundError(f"worker {worker}: no staged Parquet files to stream")
        if reader == "petastorm":
            require_petastorm()
        self.files, self.feed, self.seed, self.worker, self.reader = files, feed, seed, worker, reader

    def start_epoch(self, epoch: int) -> None:
        self._rng = np.random.default_rng([self.seed, self.worker, epoch])
        self._make_blocks = (self._petastorm_blocks if self.reader == "petastorm"
                             else self._arrow_blocks)
        self._blocks = self._make_blocks()
        self._buffer: list[Window] = []
        self._buffered = 0

    def take(self, n: int) -> Window:
        while self._buffered < n:
            try:
                table = next(self._blocks)
            except StopIteration:   # fewer rows than asked: wrap around (a new pass)
                self._blocks = self._make_blocks()
                continue
            rows = self.feed.window(table)
            self._buffer.append(rows[self._rng.permutation(len(rows))])
            self._buffered += len(rows)
        rows = Window.concatenate(self._buffer)
        self._buffer = [rows[n:]] if len(rows) > n else []
        self._buffered = len(rows) - n
        return rows[:n]

    def _arrow_blocks(self):
        import pyarrow.parquet as pq

        files = [pq.ParquetFile(_open(f)) for f in self.files]
        groups = [(f, g) for f in files for g in range(f.num_row_groups)]
        for i in self._rng.permutation(len(groups)):
            file, group = groups[i]
            yield file.read_row_group(group, columns=self.feed.columns)

    def _petastorm_blocks(self):
        from petastorm import make_batch_reader

        urls = [f if "://" in f else f"file://{f}" for f in self.files]
        with make_batch_reader(urls, num_epochs=1, shuffle_row_groups=True,
                               seed=int(self._rng.integers(2 ** 31)), workers_count=1,
                               schema_fields=self.feed.columns) as reader:
            for batch in reader:
                yield pa.table({c: _to_arrow(getattr(batch, c)) for c in self.feed.columns})


def _open(uri: str):
    """A local path or any URI pyarrow has a filesystem for (file://, hdfs://, s3://, ...)."""
    if "://" not in uri:
        return uri
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    return filesystem.open_input_file(path)


def _to_arrow(values: np.ndarray) -> pa.Array:
    """petastorm's numpy column → Arrow (fixed-size lists for 2-D arrays)."""
    if values.ndim == 2:
        flat = pa.array(np.ascontiguousarray(values).ravel())
        return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    return pa.array(values)


def require_petastorm() -> None:
    try:
        import petastorm  # noqa: F401
    except ImportError:
        raise ImportError("data_feed='petastorm' needs petastorm, which runs on the pyspark 3.5 / "
                          "pyarrow 14 / numpy<2 stack (pip install -c constraints/spark35.txt "
                          "-e '.[petastorm]'); use data_feed='stream' for the pyarrow reader")
