"""The topology-classifier pipeline as step functions: the same code behind ``jobs/*.py``, the
notebooks and the API. Every step reads and writes Parquet, so each can run on its own.

1. `generate_sample` + `ingest_sample` — Delphes-like ROOT sample → events Parquet.
2. `make_features` — events → `TopologyFeatures` → seeded train/test split → preprocessing
   fitted on the training split (saved next to the output) → ``train.parquet``/``test.parquet``.
3. `train` (any trainer by name, or ``"keras"``: plain ``model.fit`` in this process) → a `Run`;
   `save_run` writes the model, ``history.json``, ``training.json`` and the training curves.
4. `evaluate_runs` — scores the test split, writes ``metrics.json``, ROC PNGs, ``results.md``.
5. `run_pipeline` — all of the above (the demo: ``python jobs/pipeline.py``).

Example::

    from distkeras import pipeline as pl
    spark = distkeras.spark.session("local[2]", conf=pl.SESSION_CONF)
    pl.generate_sample("out/sample", 2000)
    pl.ingest_sample(spark, pl.sample_labels("out/sample"), "out/events.parquet")
    pl.make_features(spark, "out/events.parquet", "out/features", hlf_only=True)
    train_df, test_df = pl.load_split(spark, "out/features")
    run = pl.train(train_df, "hlf", "ADAG", num_workers=2, epochs=5, learning_rate=0.003)
    results = pl.evaluate_runs([run], test_df, "out")
    print(pl.results_markdown(results))
"""
from __future__ import annotations

from distkeras.pipeline.chain import SESSION_CONF, PipelineConfig, run_pipeline
from distkeras.pipeline.data import (EVENT_READ_CONF, class_counts, feature_branches,
                                     generate_sample, ingest_sample, load_split, majority_rate,
                                     make_features, sample_labels, sql_conf)
from distkeras.pipeline.report import (evaluate_run, evaluate_runs, results_markdown, slug,
                                       write_results)
from distkeras.pipeline.training import (KERAS, MODELS, Run, build_model, load_run, make_trainer,
                                         save_run, train, train_keras, trainer_names,
                                         warm_up_workers)


def default_master(requested: str | None = None, fallback: str = "local[2]") -> str:
    """``requested`` if given (a master URL, or ``sc://...`` for Spark Connect), else
    ``SPARK_REMOTE`` (pyspark's Connect URL variable), else the master spark-submit set, else
    ``fallback``."""
    import os

    if requested:
        return requested
    if os.environ.get("SPARK_REMOTE"):
        return os.environ["SPARK_REMOTE"]
    if os.environ.get("PYSPARK_GATEWAY_PORT"):  # launched by spark-submit: keep its master
        from pyspark import SparkConf

        return SparkConf().get("spark.master", fallback)
    return fallback


__all__ = ["SESSION_CONF", "PipelineConfig", "run_pipeline", "EVENT_READ_CONF", "class_counts",
           "feature_branches", "generate_sample", "ingest_sample", "load_split", "majority_rate",
           "make_features", "sample_labels", "sql_conf", "evaluate_run", "evaluate_runs",
           "results_markdown", "slug", "write_results", "KERAS", "MODELS", "Run", "build_model",
           "load_run", "make_trainer", "save_run", "train", "train_keras", "trainer_names",
           "warm_up_workers", "default_master"]
