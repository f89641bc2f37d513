"""Checks before launch: everything that would otherwise fail deep inside an executor (or, worse,
train on garbage) is found on the driver in one aggregation pass and reported with the fix.

``prepare_training_data`` selects the needed columns (vectors → arrays), checks types, shapes,
NaN/inf, nulls and label ranges, repartitions into one partition per worker, caches it, and
returns the rows of the smallest partition (every worker runs the same number of steps). A
cached input already in one balanced partition per worker is taken as it is, one in more
partitions merged without a shuffle where that comes out balanced, and a cached input that
passed the checks once is not checked again (``CheckedFrames``).
"""
from __future__ import annotations

import logging
import weakref

from distkeras.feed import FeedSpec

log = logging.getLogger(__name__)


class DataError(ValueError):
    """The DataFrame cannot train this model; the message says what and how to fix it."""


def _check_columns(df, feed: FeedSpec) -> dict:
    from pyspark.sql import types as T

    fields = {f.name: f.dataType for f in df.schema.fields}
    kinds = {}
    for name in feed.columns:
        if name not in fields:
            raise DataError(f"column {name!r} not found; the DataFrame has {sorted(fields)}")
        dtype = fields[name]
        if isinstance(dtype, T.NumericType):
            kinds[name] = "scalar"
        elif isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, T.NumericType):
            kinds[name] = "array"
        elif type(dtype).__name__ == "VectorUDT":
            kinds[name] = "vector"
        else:
            raise DataError(f"column {name!r} has type {dtype.simpleString()}; distkeras needs a "
                            "number, an array of numbers or a Spark ML vector")
    return kinds


def select_feed_columns(df, feed: FeedSpec):
    """Only the columns the model needs: vectors become array<float>, arrays become float32."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    kinds = _check_columns(df, feed)
    cols = []
    for name in feed.columns:
        col = F.col(name)
        if kinds[name] == "vector":
            col = vector_to_array(col, "float32")
        elif kinds[name] == "array" and name not in feed.label_columns:
            col = col.cast("array<float>")
        cols.append(col.alias(name))
    return df.select(*cols), kinds


def _bad_values(name: str, kind: str):
    """Count of NaN/±inf values in a column (elements, for arrays)."""
    from pyspark.sql import functions as F

    def bad(x):
        return F.isnan(x) | (F.abs(x) == float("inf"))

    if kind == "scalar":
        return F.sum(F.when(bad(F.col(name).cast("double")), 1).otherwise(0))
    return F.sum(F.size(F.filter(F.col(name), lambda x: bad(x.cast("double")))))


def check_data(df, feed: FeedSpec, kinds: dict, what: str = "training data",
               array_values: bool = True) -> list[int]:
    """One aggregation job over ``df``: rows, nulls, NaN/inf, array lengths, label range.

    Returns the row count of every non-empty partition (the aggregation runs per partition, so
    the same pass that fills a cache also sizes the workers' shares). ``array_values=False``
    leaves out the NaN/inf count inside array columns (the costliest part: the memory feed's
    workers count them in numpy as they read their partition, ``executor.remote``)."""
    from pyspark.sql import functions as F

    aggs = [F.count(F.lit(1)).alias("rows")]
    for i, name in enumerate(feed.columns):
        aggs.append(F.sum(F.col(name).isNull().cast("int")).alias(f"null{i}"))
        if kinds[name] == "scalar" or array_values:
            aggs.append(_bad_values(name, "scalar" if kinds[name] == "scalar" else "array")
                        .alias(f"bad{i}"))
        if kinds[name] != "scalar":
            aggs += [F.min(F.size(name)).alias(f"minlen{i}"), F.max(F.size(name)).alias(f"maxlen{i}")]
    for j, target in enumerate(feed.targets):
        if kinds[target.column] == "scalar":
            aggs += [F.min(target.column).alias(f"ymin{j}"),
                     F.max(target.column).alias(f"ymax{j}")]
    if feed.weight_col:
        aggs.append(F.min(feed.weight_col).alias("wmin"))
    parts = [r.asDict() for r in df.groupBy(F.spark_partition_id().alias("partition")).agg(*aggs).collect()]
    _verify(_combine(parts), feed, kinds, what)
    return [int(p["rows"]) for p in parts]


def check_table(table, feed: FeedSpec, kinds: dict, what: str = "validation data") -> None:
    """The checks of :func:`check_data` on data already collected (an Arrow table of the
    columns :func:`select_feed_columns` selected), with no Spark job."""
    import pyarrow as pa
    import pyarrow.compute as pc

    row: dict = {"rows": table.num_rows}
    for i, name in enumerate(feed.columns):
        values = table.column(name)
        row[f"null{i}"] = values.null_count
        if kinds[name] != "scalar":
            lengths = pc.min_max(pc.list_value_length(values))
            row[f"minlen{i}"], row[f"maxlen{i}"] = lengths["min"].as_py(), lengths["max"].as_py()
            values = pc.list_flatten(values)
        finite = pc.is_finite(pc.cast(values, pa.float64()))
        row[f"bad{i}"] = len(finite) - finite.null_count - (pc.sum(finite).as_py() or 0)
    for j, target in enumerate(feed.targets):
        if kinds[target.column] == "scalar":
            labels = pc.min_max(table.column(target.column))
            row[f"ymin{j}"], row[f"ymax{j}"] = labels["min"].as_py(), labels["max"].as_py()
    if feed.weight_col:
        row["wmin"] = pc.min(table.column(feed.weight_col)).as_py()
    _verify(row, feed, kinds, what)


def _verify(row: dict, feed: FeedSpec, kinds: dict, what: str) -> None:
    """Raise :class:`DataError` for what the aggregates ``row`` show wrong (rows, nulls,
    NaN/inf, array lengths, label range, weights)."""
    if not row["rows"]:
        raise DataError(f"the {what} is empty (0 rows); check the filters and paths upstream")
    for i, name in enumerate(feed.columns):
        if row[f"null{i}"]:
            raise DataError(f"{what}: column {name!r} has {row[f'null{i}']} null rows; drop them "
                            "(df.dropna(subset=[...])) or fill them before training")
        if row.get(f"bad{i}"):
            raise DataError(f"{what}: column {name!r} has {row[f'bad{i}']} NaN/inf values; clean "
                            "or impute them (e.g. F.nanvl / df.fillna) before training")
        if f"minlen{i}" in row and row[f"minlen{i}"] != row[f"maxlen{i}"]:
            raise DataError(f"{what}: column {name!r} has arrays of length {row[f'minlen{i}']} to "
                            f"{row[f'maxlen{i}']}; every row needs the same length")
    lengths = {name: (1 if kinds[name] == "scalar" else row[f"minlen{i}"])
               for i, name in enumerate(feed.columns)}
    for spec in feed.inputs:
        got = sum(lengths[c] for c in spec.columns)
        if got != spec.size:
            raise DataError(f"{what}: columns {spec.columns} hold {got} values per row but the "
                            f"model input has shape {spec.shape} = {spec.size} values; fix the "
                            "feature column or pass input_shapes=")
    for j, target in enumerate(feed.targets):
        _check_labels(target, kinds[target.column], row.get(f"ymin{j}"), row.get(f"ymax{j}"),
                      lengths[target.column], what)
    if feed.weight_col and row["wmin"] is not None and row["wmin"] < 0:
        raise DataError(f"{what}: sample weights in {feed.weight_col!r} go down to "
                        f"{row['wmin']}; weights must be non-negative")


def _check_labels(target, kind: str, ymin, ymax, width: int, what: str) -> None:
    """Class indices within the output's classes; label arrays as wide as the output."""
    if kind == "scalar" and target.one_hot:
        if ymin < 0 or ymax >= target.num_classes or float(ymin) != int(ymin):
            raise DataError(f"{what}: labels in {target.column!r} range over [{ymin}, {ymax}] "
                            f"but the model has {target.num_classes} classes (0.."
                            f"{target.num_classes - 1}); remap the labels or widen the output")
    elif kind != "scalar" and target.num_classes and width != target.num_classes:
        raise DataError(f"{what}: label arrays in {target.column!r} have {width} values, "
                        f"the model outputs {target.num_classes}")


def _combine(parts: list[dict]) -> dict:
    """Merge per-partition aggregates (sums, minima, maxima) into whole-DataFrame ones."""
    if not parts:
        return {"rows": 0}
    out = {}
    for key in parts[0]:
        if key == "partition":
            continue
        values = [p[key] for p in parts if p[key] is not None]
        if key.startswith(("min", "ymin", "wmin")):
            out[key] = min(values) if values else None
        elif key.startswith(("max", "ymax")):
            out[key] = max(values) if values else None
        else:
            out[key] = sum(values)
    return out


#: partitions within this ratio of rows are balanced enough to train on as they are
BALANCED = 0.98


def prepare_training_data(df, feed: FeedSpec, num_workers: int, batch_size: int,
                          barrier: bool, cores_per_worker: int | None = None,
                          array_values: bool = True):
    """Checked, repartitioned, cached training data, the row count of its smallest partition,
    and whether the cache is this call's own (unpersist it after training).

    A cached input already split into ``num_workers`` balanced partitions is used as it is, one
    in more partitions is merged into ``num_workers`` (``coalesce``) where that comes out
    balanced on a one-executor (local) master: no shuffle, no second copy in memory, and
    checked as merged where its cache is already filled, so that one job both checks it and
    counts each worker's rows (a cache the checks fill is checked first: ``coalesce`` groups
    partitions by the executor holding them, known only then). On a cluster every job groups
    them again, by where the blocks are then, so the training job's groups may differ from
    those counted (3 + 1 partitions for 2 + 2, measured): such a frame is repartitioned
    (``array_values``: see :func:`check_data`).
    A cached input that passed the checks in an earlier fit is not checked again.

    Example::

        data, smallest, owned = prepare_training_data(df, feed, 2, 128, barrier=False)
    """
    from pyspark import StorageLevel

    from distkeras.spark import total_slots
    from distkeras.spark_api import local_cores, spark_api

    api = spark_api(df.sparkSession)
    selected, kinds = select_feed_columns(df, feed)
    if barrier:
        slots = total_slots(df.sparkSession, cores_per_worker)
        if num_workers > slots:
            raise DataError(f"num_workers={num_workers} synchronous workers need as many free task "
                            f"slots, Spark has {slots}; lower num_workers or add executors/cores "
                            "(spark.executor.cores, spark.task.cpus, cores_per_worker)")
    checks = CHECKED.key(feed, kinds, array_values)
    passed = CHECKED.passed(df, checks)      # this cached frame passed them in an earlier fit
    if passed is not None:
        log.info("training data: this cached DataFrame passed the data checks in an earlier "
                 "fit; only its rows are counted")
    cached = _cached_partitions(df)          # None: not cached (or Spark cannot say)
    prepared, owned, counts = None, False, []      # counts: rows of each worker's partition
    checked = passed is not None
    if cached is not None and cached >= num_workers:
        merge = (cached > num_workers and not barrier   # no shuffle, no copy (a barrier stage
                 and local_cores(api.master) is not None)   # cannot coalesce; see above)
        candidate = selected.coalesce(num_workers) if merge else selected
        own = passed                                   # rows of df's own partitions, if known
        if passed and not merge:
            counts = passed
        elif checked or not merge or api.cache_loaded(df):
            # one job: checked (or only counted) as merged, the rows each worker will get
            counts = partition_rows(candidate) if checked else \
                check_data(candidate, feed, kinds, array_values=array_values)
        else:    # coalesce groups partitions by the executor caching them: cached (and
            own = check_data(selected, feed, kinds, array_values=array_values)   # checked)
            counts = partition_rows(candidate)     # first, the groups the workers get counted
        CHECKED.remember(df, checks, (own or []) if merge else counts)   # []: not counted
        checked = True
        if len(counts) == num_workers and min(counts) >= BALANCED * max(counts):
            prepared = candidate
    if prepared is None:
        prepared = selected.repartition(num_workers).persist(StorageLevel.MEMORY_AND_DISK)
        owned = True
        try:     # either pass fills the cache
            counts = partition_rows(prepared) if checked else \
                check_data(prepared, feed, kinds, array_values=array_values)
        except DataError:
            prepared.unpersist()
            raise
        if not checked:
            CHECKED.remember(df, checks, [])      # checked, as a copy: df's own rows not counted

    def release():
        if owned:
            prepared.unpersist()

    rows = sum(counts)
    if num_workers > rows:
        release()
        raise DataError(f"num_workers={num_workers} but the data has only {rows} rows; use fewer "
                        "workers")
    smallest = min(counts) if len(counts) == num_workers else 0
    if smallest < batch_size:
        release()
        raise DataError(f"the smallest of the {num_workers} worker partitions has {smallest} rows, "
                        f"fewer than batch_size={batch_size}; lower batch_size or num_workers")
    log.info("training data: %d rows in %d partitions (smallest %d)", rows, num_workers, smallest)
    return prepared, smallest, owned


def partition_rows(df) -> list[int]:
    """The row count of every non-empty partition of ``df``, in one job (no other check)."""
    from pyspark.sql import functions as F

    return [int(r["rows"]) for r in df.groupBy(F.spark_partition_id().alias("partition"))
            .agg(F.count(F.lit(1)).alias("rows")).collect()]


class CheckedFrames:
    """The cached DataFrames of this session that passed the data checks, so that fitting one
    again (the same model or the next one of a notebook) does not pay them again. Only a frame
    cached when it was checked and still cached now counts (its rows cannot have changed), for
    the same columns, kinds and checks; a frame that is gone or unpersisted is forgotten.

    Example::

        key = CHECKED.key(feed, kinds, array_values=True)
        counts = CHECKED.passed(df, key) or check_data(selected, feed, kinds)
        CHECKED.remember(df, key, counts)
    """

    def __init__(self) -> None:
        self._frames: dict[int, tuple] = {}     # id(df) -> (weakref to df, key, partition rows)

    @staticmethod
    def key(feed: FeedSpec, kinds: dict, array_values: bool) -> str:
        return repr((feed, sorted(kinds.items()), array_values))

    def passed(self, df, key: str) -> list[int] | None:
        """The rows per partition of ``df`` (``[]``: not counted) if it passed the checks
        ``key`` while cached and is cached still; None otherwise."""
        entry = self._frames.get(id(df))
        if entry is None or entry[0]() is not df or entry[1] != key or not _is_cached(df):
            return None
        return list(entry[2])

    def remember(self, df, key: str, counts: list[int]) -> None:
        if not _is_cached(df):
            return
        try:
            ref = weakref.ref(df, lambda _, i=id(df): self._frames.pop(i, None))
        except TypeError:
            return
        self._frames[id(df)] = (ref, key, list(counts))


CHECKED = CheckedFrames()


def _is_cached(df) -> bool:
    """Whether ``df`` is cached (in memory or on disk); False where Spark cannot say."""
    try:
        level = df.storageLevel
    except Exception:  # noqa: BLE001 - a frame Spark cannot describe counts as not cached
        return False
    return bool(level.useMemory or level.useDisk)


def _cached_partitions(df) -> int | None:
    """How many partitions ``df`` is cached in; None when it is not cached or Spark cannot say
    (Spark Connect)."""
    from distkeras.spark_api import spark_api

    if not _is_cached(df):
        return None
    return spark_api(df.sparkSession).cached_partitions(df)
