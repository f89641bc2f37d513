"""Streaming feeds for data larger than executor memory: the prepared data is staged as Parquet
and every epoch streams it row group by row group (pyarrow everywhere, petastorm on the
pyspark 3.5 stack). They must train as well as the in-memory feed."""
from __future__ import annotations

import glob
import importlib.util

import pytest

import distkeras as dk
from tests.data import blobs, blobs_df, mlp


@pytest.fixture(scope="module")
def train(spark):
    return blobs_df(spark, 4000, seed=0).cache()


def fit(train, feed, staging_dir):
    trainer = dk.trainers.ADAG(mlp(), loss="categorical_crossentropy", num_workers=2,
                               batch_size=32, epochs=3, learning_rate=0.03, verbose=False,
                               data_feed=feed, staging_dir=staging_dir)
    fitted = trainer.fit(train)
    x, y = blobs(1500, seed=1)
    return fitted, float((fitted.predict([x]).argmax(1) == y).mean())


def test_pyarrow_stream_trains_like_memory(train, tmp_path):
    _, memory = fit(train, "memory", None)
    fitted, stream = fit(train, "stream", str(tmp_path))
    assert stream >= memory - 0.05 and stream > 0.8
    assert sum(w["samples"] for w in fitted.history.workers) == 2 * 3 * (2000 // 32) * 32
    assert glob.glob(str(tmp_path / "distkeras-stage-*")) == []     # staging cleaned up


def test_petastorm_stream_where_installed_or_a_clear_error(train, tmp_path):
    if importlib.util.find_spec("petastorm") is None:      # the modern stack: say what to do
        with pytest.raises(ImportError, match="petastorm.*pyspark 3.5"):
            fit(train, "petastorm", str(tmp_path))
    else:                                                   # the spark35 stack: train with it
        _, acc = fit(train, "petastorm", str(tmp_path))
        assert acc > 0.8


def test_unknown_feed_is_rejected():
    with pytest.raises(TypeError, match="param \"data_feed\". 'disk' is not one of 'memory', "
                                        "'stream', 'petastorm'"):
        dk.trainers.ADAG(mlp(), data_feed="disk")


def test_a_partition_smaller_than_its_epoch_is_revisited_not_cut_short(caplog):
    """A worker whose partition holds fewer rows than the driver counted (a merged cached frame
    grouped differently by the training job) revisits its rows, each pass in a new order, and
    says so once: its windows keep their shape (they raised a reshape error before)."""
    import numpy as np

    from distkeras.executor.sources import MemorySource
    from distkeras.feed import Window

    x, y = np.arange(10, dtype=np.float32)[:, None], np.arange(10)
    source = MemorySource(Window([x], [y]), seed=0, worker=1)
    source.start_epoch(0)
    first = source.take(8).xs[0][:, 0]
    with caplog.at_level("WARNING", logger="distkeras.executor.sources"):
        window = source.take(3 * 4).steps(3)            # 2 left in this pass, then a new one
        more = source.take(9).xs[0][:, 0]
    assert window.xs[0].shape == (3, 4, 1)
    seen = np.concatenate([first, window.xs[0].reshape(-1), more])
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert not np.array_equal(seen[:10], seen[10:20])   # each pass in its own order
    assert caplog.text.count("fewer than an epoch's steps take") == 1, caplog.text
    source.start_epoch(0)                                # an epoch's order is its own
    np.testing.assert_array_equal(source.take(8).xs[0][:, 0], first)


def test_shared_partitions_give_each_worker_its_own_rows_from_one_held_copy():
    """``share`` (a simulation's workers, taking turns on one replica) puts every worker's
    partition into one, aligned for a backend to hold in place: each worker still takes exactly
    the rows and order it took from its own, revisits included, and all name the same arrays."""
    import numpy as np

    from distkeras.executor.sources import MemorySource, share
    from distkeras.feed import ALIGNMENT, Window

    sizes = (13, 10, 17)

    def sources():
        out, start = [], 0
        for w, n in enumerate(sizes):
            x = np.arange(start, start + n, dtype=np.float32)[:, None] * [1.0, -1.0]
            out.append(MemorySource(Window([x], [np.arange(start, start + n)],
                                           np.full(n, w, np.float32)), seed=3, worker=w))
            start += n
        return out

    def takes(source):
        source.start_epoch(1)
        return [source.take(4).steps(2).gathered for _ in range(5)]   # 20 rows: revisits some

    alone, shared = sources(), sources()
    share(shared)
    assert all(s.data is shared[0].data for s in shared)
    assert len(shared[0].data) == sum(sizes)
    assert shared[0].data.xs[0].ctypes.data % ALIGNMENT == 0
    for own, one in zip(alone, shared):
        for a, b in zip(takes(own), takes(one)):
            np.testing.assert_array_equal(a.xs[0], b.xs[0])
            np.testing.assert_array_equal(a.ys[0], b.ys[0])
            np.testing.assert_array_equal(a.sample_weight, b.sample_weight)


@pytest.mark.parametrize("rows", [None, 7, 1000, 1200])
def test_a_partition_read_batch_by_batch_is_the_whole_tables_window(rows):
    """``FeedSpec.read`` copies each Arrow batch into arrays sized by the rows the driver
    counted (fewer: grown; more: the tail unused) and gives what ``window`` gives of the whole
    table: two inputs, one-hot labels, class weights; no batches at all is None. The arrays
    it wrote into are the window's ``storage``: a power of two of rows, aligned for a backend
    to hold in place, starting with the window's own."""
    import numpy as np
    import pyarrow as pa

    from distkeras.feed import ALIGNMENT, FeedSpec, InputSpec, TargetSpec

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 3)).astype(np.float32)
    table = pa.table({"a": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 3),
                      "b": rng.normal(size=1000), "label": rng.integers(0, 4, 1000)})
    feed = FeedSpec([InputSpec(["a"], (3,)), InputSpec(["a", "b"], (4,))],
                    [TargetSpec("label", 4, one_hot=True)], class_weight={0: 2.0, 3: 0.5})
    batches = table.to_batches(max_chunksize=128)
    assert len(batches) == 8
    read, whole = feed.read(iter(batches), rows), feed.window(table)
    assert len(read) == 1000 and read.sample_weight is not None
    for got, want in zip(read.xs + read.ys + [read.sample_weight],
                         whole.xs + whole.ys + [whole.sample_weight]):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    storage = read.storage
    assert len(storage) == (2048 if rows == 1200 else 1024)
    for view, held in zip(read.xs + read.ys + [read.sample_weight],
                          storage.xs + storage.ys + [storage.sample_weight]):
        assert held.shape[1:] == view.shape[1:] and held.ctypes.data % ALIGNMENT == 0
        assert view.ctypes.data == held.ctypes.data and np.shares_memory(view, held)
    empty = pa.RecordBatch.from_pylist([], schema=table.schema)
    assert feed.read(iter([empty]), rows) is None and feed.read(iter([]), rows) is None
