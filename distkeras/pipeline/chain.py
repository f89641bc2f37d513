"""The whole chain (``jobs/pipeline.py``, the demo): sample → ingest → features → train → evaluate.

Example::

    spark = distkeras.spark.session("local[2]", conf=SESSION_CONF)
    summary = run_pipeline(spark, PipelineConfig(out="demo-out", events=3000))
    print(summary["table"])
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from distkeras.pipeline import data, report, training
from distkeras.spark_api import spark_api

log = logging.getLogger(__name__)

# Settings the jobs add to `distkeras.spark.session` (ignored where the JVM already runs).
SESSION_CONF = {"spark.driver.memory": "2g"}


@dataclass
class PipelineConfig:
    """What `run_pipeline` does; the defaults are the demo (a few minutes on 2 cores).

    ``labels`` (``{ROOT glob: label}``) reads existing ROOT files instead of generating
    ``events`` per class. ``baselines``: extra runs on the same data and epochs, ``"keras"``
    (``model.fit`` in the driver) and/or trainer names (``"SingleTrainer"``).
    """

    out: str = "demo-out"
    events: int = 3000
    labels: dict[str, int] | None = None
    tree: str = "Delphes"
    muon: str = "MuonTight"
    model: str = "hlf"
    trainer: str = "ADAG"
    num_workers: int = 2
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float | None = 0.003
    worker_optimizer: str | None = None
    communication_window: int | None = None
    algorithm_params: dict[str, Any] = field(default_factory=dict)
    mlflow: bool | str = False      # log every distkeras fit to MLflow (an experiment name)
    baselines: tuple[str, ...] = ("keras", "SingleTrainer")
    test_fraction: float = 0.2
    seed: int = 42
    verbose: bool = True


def _step(i: int, n: int, text: str) -> float:
    log.info("=== step %d/%d: %s", i, n, text)
    return time.perf_counter()


def run_pipeline(spark, cfg: PipelineConfig) -> dict[str, Any]:
    """Run every step into ``cfg.out`` and return a summary (``table``, ``results``, ``steps``
    seconds, ``features`` info). Files: ``sample/`` (generated ROOT), ``events.parquet``,
    ``features/`` (train/test Parquet + preprocessing), ``models/<run>/``, ``history_<run>.png``,
    ``roc_<run>.png``, ``metrics.json``, ``results.md``, ``summary.json``."""
    _check(cfg)
    os.makedirs(cfg.out, exist_ok=True)
    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    ingest, feats, feats_dir = _data_steps(spark, cfg, steps)
    train_df, test_df = (df.cache() for df in data.load_split(spark, feats_dir))
    runs, warm = _train_steps(spark, cfg, train_df, test_df, steps)
    t = _step(5, STEPS, "evaluation on the test split")
    results = report.evaluate_runs(runs, test_df, cfg.out, write_table=False)
    steps["evaluate"] = time.perf_counter() - t
    steps["total"] = time.perf_counter() - t0
    notes = _notes(spark, cfg, ingest, feats, runs, warm, steps)
    table = report.write_results(results, os.path.join(cfg.out, "results.md"), notes=notes,
                                 title=f"distkeras pipeline: {cfg.model} classifier")
    train_df.unpersist()
    test_df.unpersist()
    summary = {"config": asdict(cfg), "steps": steps, "features": feats, "results": results,
               "table": table}
    with open(os.path.join(cfg.out, "summary.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1, default=str)
    log.info("pipeline done in %.1f s -> %s", steps["total"], cfg.out)
    return summary


STEPS = 5


def _check(cfg: PipelineConfig) -> None:
    if cfg.model not in training.MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; choose from {sorted(training.MODELS)}")
    for name in (cfg.trainer, *cfg.baselines):
        if name.lower() != training.KERAS and name.lower() not in map(str.lower,
                                                                       training.trainer_names()):
            raise ValueError(f"unknown trainer {name!r}; choose from {training.trainer_names()}")


def _data_steps(spark, cfg: PipelineConfig, steps: dict[str, float]):
    """Steps 1-3: the ROOT sample (generated unless given), its ingestion, the features."""
    out = cfg.out
    t = _step(1, STEPS, "Delphes-like ROOT sample" if cfg.labels is None else "ROOT input")
    labels = cfg.labels
    if labels is None:
        sample = os.path.join(out, "sample")
        data.generate_sample(sample, cfg.events, seed=cfg.seed)
        labels = data.sample_labels(sample)
    steps["sample"] = time.perf_counter() - t

    t = _step(2, STEPS, "ingest ROOT -> events Parquet (uproot in executors)")
    events = os.path.join(out, "events.parquet")
    ingest = data.ingest_sample(spark, labels, events, tree=cfg.tree, muon=cfg.muon)
    steps["ingest"] = time.perf_counter() - t

    t = _step(3, STEPS, "topology features, train/test split, preprocessing")
    feats_dir = os.path.join(out, "features")
    feats = data.make_features(spark, events, feats_dir, test_fraction=cfg.test_fraction,
                               seed=cfg.seed, hlf_only=not training.MODELS[cfg.model][2],
                               muon=cfg.muon)
    steps["features"] = time.perf_counter() - t
    return ingest, feats, feats_dir


def _train_steps(spark, cfg: PipelineConfig, train_df, test_df, steps: dict[str, float]):
    """Step 4: the trainer and the baselines, each saved with its history plot."""
    from distkeras.spark import total_slots

    t = _step(4, STEPS, f"training {cfg.model} with {cfg.trainer} x{cfg.num_workers}"
              + (f" and baselines {', '.join(cfg.baselines)}" if cfg.baselines else ""))
    pools = {training.workers_of(name, cfg.num_workers) for name in (cfg.trainer, *cfg.baselines)}
    warm = sum(training.warm_up_workers(spark, min(n, total_slots(spark)))   # each run's pool
               for n in sorted(pools) if n)
    common = dict(epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                  validation_df=test_df)
    runs = []
    for name in (cfg.trainer, *cfg.baselines):
        kwargs = dict(common, num_workers=cfg.num_workers, verbose=cfg.verbose)
        if cfg.mlflow and name.lower() != training.KERAS:
            kwargs["mlflow"] = cfg.mlflow
        if name == cfg.trainer:     # algorithm settings only for the trainer they were given for
            kwargs.update(worker_optimizer=cfg.worker_optimizer,
                          communication_window=cfg.communication_window, **cfg.algorithm_params)
        run = training.train(train_df, cfg.model, name, **kwargs)
        training.save_run(run, os.path.join(cfg.out, "models", report.slug(run.name)),
                          history_png=os.path.join(cfg.out, f"history_{report.slug(run.name)}.png"))
        runs.append(run)
    steps["train"] = time.perf_counter() - t
    return runs, warm


def _notes(spark, cfg: PipelineConfig, ingest, feats, runs, warm: float, steps) -> list[str]:
    """The lines under the results table: the data, the settings, the plots, the steps."""
    counts = feats["class_counts"]["test"]
    source = ("generated, " + str(cfg.events) + " per class" if cfg.labels is None
              else "ROOT input")
    return [
        f"data: {ingest.events} events ({source}), "
        f"{feats['events_selected']} with an isolated lepton; {feats['train_rows']} train / "
        f"{feats['test_rows']} test rows; test classes {dict(sorted(counts.items()))}, "
        f"majority-class rate {data.majority_rate(counts):.4f}",
        f"model {cfg.model}; every run: {cfg.epochs} epochs, batch size {cfg.batch_size}, "
        f"learning rate {cfg.learning_rate if cfg.learning_rate is not None else 'default'}",
        f"Spark master {spark_api(spark).master}; 'train s' is the wall time of fit (Spark "
        f"job, parameter server, per-epoch validation; Python workers warmed up first, {warm:.1f} s)",
        "plots: " + ", ".join(f"roc_{report.slug(r.name)}.png, history_{report.slug(r.name)}.png"
                              for r in runs),
        "steps (s): " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()),
    ]
