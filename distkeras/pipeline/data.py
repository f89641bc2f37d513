"""Pipeline data steps: Delphes-like sample → events Parquet → features Parquet (train/test).

Example::

    generate_sample("out/sample", 2000)
    ingest_sample(spark, sample_labels("out/sample"), "out/events.parquet")
    info = make_features(spark, "out/events.parquet", "out/features", hlf_only=True)
    train_df, test_df = load_split(spark, "out/features")
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any, Mapping

log = logging.getLogger(__name__)

LABEL_COL = "label"
# Events hold ~1000 particles (~18 kB): read them in small batches (Parquet reader, Arrow to
# Python) so that a 1 GiB default heap suffices; the defaults (4096 / 10000 rows) run out of it.
EVENT_READ_CONF = {"spark.sql.parquet.columnarReaderBatchSize": "256",
                   "spark.sql.execution.arrow.maxRecordsPerBatch": "1000"}


def generate_sample(out_dir: str, events_per_class: int, seed: int = 42) -> list[str]:
    """Write a Delphes-like sample (QCD=0, ttbar=1, W+jets=2) under ``out_dir``; returns paths.

    >>> generate_sample("/tmp/sample", 500)  # doctest: +SKIP
    ['/tmp/sample/qcd/qcd_000.root', '/tmp/sample/ttbar/ttbar_000.root', ...]
    """
    from distkeras.datasets.delphes import generate_delphes

    t0 = time.perf_counter()
    paths = generate_delphes(out_dir, events_per_class, seed=seed)
    log.info("generated %d events per class in %d ROOT file(s) under %s (%.1f s)",
             events_per_class, len(paths), out_dir, time.perf_counter() - t0)
    return paths


def sample_labels(sample_dir: str) -> dict[str, int]:
    """``{glob: label}`` for a sample written by `generate_sample` (``qcd/*.root`` → 0, ...)."""
    from distkeras.datasets.delphes import PROCESSES

    return {os.path.join(sample_dir, name, "*.root"): p.label for name, p in PROCESSES.items()}


def feature_branches(muon: str = "MuonTight") -> list[str]:
    """ROOT branch names (``Coll.Field``) that `TopologyFeatures` reads."""
    from distkeras.features.topology import TopologyConfig

    return [f"{c}.{f}" for c, fs in TopologyConfig(muon=muon).branches().items() for f in fs]


def ingest_sample(spark, labels: Mapping[str, int], output: str, *, tree: str = "Delphes",
                  muon: str = "MuonTight", overwrite: bool = True,
                  partition_entries: int = 1000):
    """ROOT files (``{glob: label}``) → events Parquet with the branches the features need.

    ``partition_entries`` events per task and file: small row groups keep the Parquet reader's
    batches of ~1000-particle events within a default heap, and give every core work.
    Returns the `~distkeras.io.ingest.IngestSummary`.
    """
    from distkeras.io.ingest import ingest_root

    summary = ingest_root(spark, None, output, tree=tree, branches=feature_branches(muon),
                          labels=dict(labels), partition_entries=partition_entries,
                          mode="overwrite" if overwrite else "errorifexists")
    log.info("%s", summary.text())
    return summary


@contextlib.contextmanager
def sql_conf(spark, settings: Mapping[str, str]):
    """Set runtime SQL settings for a block, restoring the previous values afterwards."""
    old = {k: spark.conf.get(k, None) for k in settings}
    for k, v in settings.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def make_features(spark, events: str | Any, out_dir: str, *, test_fraction: float = 0.2,
                  seed: int = 42, hlf_only: bool = False, hlf_scaling: str = "standard",
                  muon: str = "MuonTight", overwrite: bool = True) -> dict[str, Any]:
    """Events (Parquet path or DataFrame) → ``out_dir/{train,test}.parquet``, the fitted
    preprocessing in ``out_dir/preprocessing`` (a Spark ``PipelineModel``) and a summary in
    ``out_dir/features.json`` (returned).

    Features are computed once (persisted), split with a seeded ``randomSplit``, and the
    preprocessing (HLF scaling, LLF standardisation keeping padding zero) is fitted on the
    training split only. ``hlf_only`` skips the 801×19 LLF (enough for the HLF classifier).
    Output columns: ``hlf`` (14 floats), ``llf`` (15219 floats, unless ``hlf_only``), ``label``.
    """
    from distkeras.features import TopologyFeatures

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    t0 = time.perf_counter()
    df = spark.read.parquet(events) if isinstance(events, str) else events
    transformer = TopologyFeatures(hlfOnly=hlf_only, muon=muon)
    with sql_conf(spark, EVENT_READ_CONF):
        info = _features(spark, df, transformer, out_dir, test_fraction, seed, hlf_only,
                         hlf_scaling, overwrite)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    with open(os.path.join(out_dir, "features.json"), "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1)
    log.info("features: %d train / %d test rows (classes %s / %s) in %.1f s -> %s",
             info["train_rows"], info["test_rows"], info["class_counts"]["train"],
             info["class_counts"]["test"], info["seconds"], out_dir)
    return info


def _features(spark, df, transformer, out_dir, test_fraction, seed, hlf_only, hlf_scaling,
              overwrite) -> dict[str, Any]:
    from pyspark import StorageLevel

    from distkeras.features import preprocessing_pipeline

    feats = transformer.transform(df).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        n = feats.count()
        cutflow = transformer.selection(df)
        if n == 0:
            raise ValueError("no event passed the lepton selection: nothing to train on")
        train_df, test_df = feats.randomSplit([1.0 - test_fraction, test_fraction], seed=seed)
        prep = preprocessing_pipeline(llf_col=None if hlf_only else "llf", label_col=None,
                                      hlf_scaling=hlf_scaling).fit(train_df)
        mode = "overwrite" if overwrite else "errorifexists"
        for name, part in (("train", train_df), ("test", test_df)):
            prep.transform(part).write.mode(mode).parquet(os.path.join(out_dir, f"{name}.parquet"))
        prep.write().overwrite().save(os.path.join(out_dir, "preprocessing"))
    finally:
        feats.unpersist()
    counts = {name: class_counts(spark.read.parquet(os.path.join(out_dir, f"{name}.parquet")))
              for name in ("train", "test")}
    return {**cutflow, "hlf_only": hlf_only, "hlf_scaling": hlf_scaling, "seed": seed,
            "test_fraction": test_fraction, "class_counts": counts,
            "train_rows": sum(counts["train"].values()), "test_rows": sum(counts["test"].values())}


def class_counts(df, label_col: str = LABEL_COL) -> dict[int, int]:
    """``{label: rows}`` (a Spark aggregation; only the counts reach the driver)."""
    rows = df.groupBy(label_col).count().orderBy(label_col).collect()  # <= num_classes rows
    return {int(r[label_col]): int(r["count"]) for r in rows}


def majority_rate(counts: Mapping[Any, int]) -> float:
    """Accuracy of always predicting the most frequent class."""
    total = sum(counts.values())
    return max(counts.values()) / total if total else float("nan")


def load_split(spark, features_dir: str):
    """(train, test) DataFrames written by `make_features`."""
    return (spark.read.parquet(os.path.join(features_dir, "train.parquet")),
            spark.read.parquet(os.path.join(features_dir, "test.parquet")))
