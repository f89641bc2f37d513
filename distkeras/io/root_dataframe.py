"""A :class:`~distkeras.io.root_plan.RootPlan` run as a Spark DataFrame: ``spark.range(n)`` +
``mapInArrow``, partition ``i`` reading the chunks of plan partition ``i`` in the executors
(uproot, :mod:`distkeras.io.root_types`), the chunks it skips (``on_bad_file="skip"``) recorded
in a Spark accumulator.

Example::

    df = plan_to_dataframe(spark, plan_root("sample/*.root", "Delphes", ["Jet.PT"]))
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.accumulators import AccumulatorParam

from distkeras.io.root_types import Chunk, read_chunks
from distkeras.spark_api import spark_api

if TYPE_CHECKING:
    from distkeras.io.root_plan import RootPlan


class _ListParam(AccumulatorParam):
    """Accumulates lists of (path, start, stop, reason) tuples from executors."""

    def zero(self, value):
        return []

    def addInPlace(self, a, b):
        a.extend(b)
        return a


def skip_recorder(spark, plan: RootPlan):
    """With on_bad_file="skip": a callback for executors that records failed entry ranges in a
    Spark accumulator read by ``plan.report.runtime_skipped``; None otherwise."""
    if plan.spec.on_bad_file != "skip":
        return None
    acc = spark_api(spark).counter("the entry ranges skipped in executors",
                                   "they are logged in the executors' logs", [], _ListParam())
    plan.report._runtime = acc

    def on_skip(chunk, reason):
        acc.add([(chunk.path, chunk.start, chunk.stop, reason)])

    return on_skip


def plan_to_dataframe(spark, plan: RootPlan):
    """Run a :class:`RootPlan` as ``spark.range(n)`` + ``mapInArrow``: partition ``i`` of the
    DataFrame reads the chunks of plan partition ``i`` (works on pyspark 3.5 and 4.x)."""
    schema = plan.spark_schema()
    parallelism = spark_api(spark).default_parallelism
    if plan.auto_sized and plan.parallelism != parallelism:
        plan.cut(parallelism)
    n = len(plan.partitions)
    if n == 0:
        return spark.createDataFrame([], schema)
    spec = plan.spec
    groups = [[(c.path, c.start, c.stop, c.label) for c in part] for part in plan.partitions]
    on_skip = skip_recorder(spark, plan)

    def read_partitions(batches):
        for batch in batches:
            for pid in batch.column(0).to_pylist():
                yield from read_chunks([Chunk(*c) for c in groups[pid]], spec, on_skip)

    return spark.range(0, n, 1, numPartitions=n).mapInArrow(read_partitions, schema)
