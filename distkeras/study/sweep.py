"""A study: the same model, data, epochs and learning-rate policy trained with every algorithm ×
SlowMo variant × worker count × communication window × repeat, one JSON line per finished run.

Runs are appended to ``runs.jsonl`` as they finish; a rerun skips the runs already there, so an
interrupted study resumes where it stopped. A tqdm bar covers the whole study with an ETA.

Example::

    from distkeras.study import Study
    study = Study(model="hlf", algorithms=["single", "arsgd", "adpsgd", "adag"],
                  slowmo=["none", "avg", "noavg"], num_workers=[1, 2], epochs=5,
                  out="study-hlf")
    study.run(train_df, validation=test_df)       # then study.report() → study-hlf/report.md
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from distkeras import algorithms

log = logging.getLogger(__name__)



def study_trainers() -> dict[str, str]:
    """Algorithms the study knows, by the name used on the command line → trainer class name:
    every registered trainer (one registered after this import too) but SlowMo, which is the
    study's ``slowmo`` axis."""
    return {spec.key: spec.name for _, spec in algorithms.trainer_specs() if spec.key != "slowmo"}


#: the study's algorithms, SlowMo's bases and the windowed ones when distkeras was imported
#: (a :class:`Study` asks the registry each time)
TRAINERS = study_trainers()
SLOWMO_BASES = tuple(algorithms.registry.slowmo_bases())
WINDOWED = tuple(algorithms.registry.windowed())
SLOWMO = ("none", "avg", "noavg")
LR_SCALING = ("auto", *algorithms.LEARNING_RATE_SCALINGS)


@dataclass(frozen=True)
class RunConfig:
    """One run of the study; ``key`` identifies it in ``runs.jsonl``."""

    algorithm: str
    slowmo: str = "none"
    num_workers: int = 1
    window: int | None = None
    repeat: int = 0
    compression: str = "none"
    simulate: str | None = None       # the simulation's network (None: a real run)

    @property
    def key(self) -> str:
        key = (f"{self.algorithm}|{self.slowmo}|w{self.num_workers}|"
               f"l{self.window if self.window is not None else '-'}|r{self.repeat}")
        key = key if self.compression == "none" else f"{key}|c{self.compression}"
        return key if self.simulate is None else f"{key}|sim={self.simulate}"

    @property
    def label(self) -> str:
        """The algorithm as the report names it: ``adpsgd``, ``adpsgd+slowmo``,
        ``adpsgd+slowmo-noavg``, ``adag+int8``, ``arsgd [simulated 10gbit:0.1ms]``."""
        label = {"none": self.algorithm, "avg": f"{self.algorithm}+slowmo",
                 "noavg": f"{self.algorithm}+slowmo-noavg"}[self.slowmo]
        label = label if self.compression == "none" else f"{label}+{self.compression}"
        return label if self.simulate is None else f"{label} [simulated {self.simulate}]"


@dataclass
class Study:
    """A sweep over ``algorithms`` × ``slowmo`` × ``num_workers`` × ``windows`` × ``repeats``.

    Args:
        model: ``"hlf"``, ``"particle_sequence"``, ``"inclusive"`` (the topology classifiers),
            ``"digits_mlp"``, ``"digits_cnn"``, or a callable returning a fresh Keras model.
        algorithms: names from :data:`TRAINERS` (``single`` is the baseline every figure and
            the time-to-target use; it is added when missing).
        slowmo: ``none`` (the algorithm alone), ``avg`` (SlowMo with the exact average),
            ``noavg`` (SlowMo without it); applied to the algorithms SlowMo can wrap.
        num_workers, windows: worker counts, and λ values for the algorithms in
            :data:`WINDOWED` (``workers=``: the old name of ``num_workers``).
        repeats: runs per configuration, with seeds ``seed + repeat``.
        compression: the exchanges' compressors to sweep (``"none"``, ``"fp16"``, ``"int8"``,
            ``"topk:0.01"``, ``"powersgd:4"``, ...); a configuration whose algorithm refuses a
            compressor is left out (the single-worker baseline exchanges nothing).
        network: what the runs' links are (``"loopback"``, ``"1gbit"``...), written into every
            record: the report's compression table and time-to-accuracy figure are per
            network.
        learning_rate: the single-worker learning rate for every algorithm, unless
            ``learning_rates`` names another for an algorithm (e.g. ``{"adag": 3e-3}``). The
            table in the report says which rate each run used.
        lr_scaling: how every algorithm's workers scale it with their number n, the trainers'
            ``learning_rate_scaling``: ``auto`` (each rule's own: η·n where the run's model
            moves by the mean of the workers' progress, η where commits add up), ``none``,
            ``linear`` (η·n) or ``sqrt`` (η·√n).
        target: time-to-target accuracy = ``target`` × the best final validation accuracy of
            the single-worker baseline.
        simulate: train every run in virtual time (``distkeras.simulation``) on this network
            (e.g. ``"10gbit:0.1ms"``), with ``step_seconds`` per step, ``call_seconds`` per
            compiled call and ``gradient_seconds`` per gradient step (None: measured here),
            ``stragglers``, ``service_seconds`` (None: measured) and ``cores`` the workers
            share (None: one each); runs are labelled
            ``[simulated NETWORK]`` and sit beside the measured ones in the same report.
        trainer_params: extra keyword arguments for every trainer.
    """

    model: str | Callable = "hlf"
    algorithms: Sequence[str] = ("single", "arsgd", "adpsgd", "adag")
    slowmo: Sequence[str] = ("none",)
    num_workers: Sequence[int] = (1, 2)
    windows: Sequence[int | None] = (None,)
    repeats: int = 1
    compression: Sequence[str] = ("none",)
    network: str = "loopback"
    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 1e-3
    learning_rates: dict = dataclasses.field(default_factory=dict)
    lr_scaling: str = "auto"
    optimizer: str = "adam"
    features_col: str | Sequence[str] | None = None
    label_col: str = "label"
    seed: int = 42
    target: float = 0.99
    out: str = "study"
    trainer_params: dict = dataclasses.field(default_factory=dict)
    simulate: str | None = None
    step_seconds: float | None = None
    service_seconds: float | None = None
    call_seconds: float | None = None
    gradient_seconds: float | None = None
    stragglers: str = "none"
    cores: int | None = None
    verbose: bool = True
    workers: Sequence[int] | None = None      # deprecated: num_workers

    def __post_init__(self):
        if self.workers is not None:
            field = type(self).__dataclass_fields__["num_workers"]
            default = (field.default_factory() if field.default is dataclasses.MISSING
                       else field.default)
            if list(self.num_workers) != list(default):
                raise TypeError("Study got workers= and num_workers=; workers is the old "
                                "name of num_workers: give only num_workers")
            warnings.warn("Study(workers=) is now called num_workers=", DeprecationWarning,
                          stacklevel=3)
            self.num_workers, self.workers = self.workers, None
        self.algorithms = [a.lower() for a in self.algorithms]
        known = study_trainers()
        unknown = [a for a in self.algorithms if a not in known]
        if unknown:
            raise ValueError(f"unknown algorithms {unknown}; known: {sorted(known)}")
        if "single" not in self.algorithms:
            self.algorithms.insert(0, "single")
        bad = [s for s in self.slowmo if s not in SLOWMO]
        if bad:
            raise ValueError(f"slowmo variants {bad}: use {', '.join(SLOWMO)}")
        if self.lr_scaling not in LR_SCALING:
            raise ValueError(f"lr_scaling={self.lr_scaling!r}: use {', '.join(LR_SCALING)}")
        if self.repeats < 1 or self.epochs < 1 or not self.num_workers:
            raise ValueError("repeats, epochs and num_workers must be positive")
        from distkeras.compression import canonical

        self.compression = [canonical(c) or "none" for c in self.compression]   # checks them
        if self.simulate is not None:
            from distkeras.simulation import Network, Simulation

            self.simulate = Network.parse(self.simulate).spec     # a bad spec fails here
            self.network = self.simulate
            Simulation.parse(f"stragglers={self.stragglers}")     # and a bad distribution

    def simulation(self, config: RunConfig) -> str | None:
        """The trainers' ``simulate=`` text for ``config`` (None: a real run)."""
        if config.simulate is None:
            return None
        from distkeras.simulation import Network, Simulation

        return Simulation(Network.parse(config.simulate), self.step_seconds,
                          self.service_seconds, self.call_seconds, self.gradient_seconds,
                          self.stragglers, self.seed + config.repeat, self.cores).spec

    # -- the sweep ------------------------------------------------------------------------------
    def configurations(self) -> list[RunConfig]:
        """Every run of the study, in the order they run (baseline first)."""
        runs = []
        bases, windowed = algorithms.registry.slowmo_bases(), algorithms.registry.windowed()
        for repeat in range(self.repeats):
            for algorithm in self.algorithms:
                variants = [s for s in self.slowmo if s == "none" or algorithm in bases]
                counts = [1] if algorithm == "single" else sorted(set(self.num_workers))
                windows = list(self.windows) if algorithm in windowed else [None]
                for slowmo in variants or ["none"]:
                    compressions = (["none"] if algorithm == "single" else
                                    [c for c in self.compression
                                     if _accepts(algorithm, slowmo, c)])
                    for compression in compressions:
                        for n in counts:
                            for window in windows:
                                runs.append(RunConfig(algorithm, slowmo, int(n), window, repeat,
                                                      compression, self.simulate))
        return list(dict.fromkeys(runs))

    @property
    def runs_path(self) -> str:
        return os.path.join(self.out, "runs.jsonl")

    def records(self) -> list[dict]:
        """The runs finished so far (``runs.jsonl``)."""
        return load_runs(self.runs_path)

    def run(self, train, validation=None) -> list[dict]:
        """Train every configuration not yet in ``runs.jsonl`` on ``train`` (a DataFrame, or a
        features Parquet path), validating on ``validation`` (default: a 20 % split)."""
        from tqdm.auto import tqdm

        train, validation = self._data(train, validation)
        os.makedirs(self.out, exist_ok=True)
        done = {r["key"] for r in self.records()}
        todo = [c for c in self.configurations() if c.key not in done]
        bar = tqdm(total=len(todo), unit="run", desc="study", disable=not self.verbose)
        for config in todo:
            bar.set_postfix_str(config.key)
            record = self._train(config, train, validation)
            with open(self.runs_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            bar.update(1)
        bar.close()
        return self.records()

    def report(self, **kwargs) -> str:
        """Write ``report.md`` and its figures from ``runs.jsonl``; returns the report's path."""
        from distkeras.study.report import write_report

        return write_report(self.records(), self.out, target=self.target, **kwargs)

    # -- one run --------------------------------------------------------------------------------
    def learning_rate_for(self, config: RunConfig) -> float:
        """The single-worker rate of a run (its trainer scales it by ``lr_scaling``)."""
        return float(self.learning_rates.get(config.algorithm, self.learning_rate))

    def make_trainer(self, config: RunConfig):
        from distkeras import trainers

        model = self.build_model()
        kwargs: dict[str, Any] = dict(loss="categorical_crossentropy",
                                      worker_optimizer=self.optimizer,
                                      learning_rate=self.learning_rate_for(config),
                                      learning_rate_scaling=self.lr_scaling,
                                      batch_size=self.batch_size, epochs=self.epochs,
                                      features_col=self.feature_columns(),
                                      label_col=self.label_col, seed=self.seed + config.repeat,
                                      verbose=False, **self.trainer_params)
        if config.algorithm != "single":
            kwargs["num_workers"] = config.num_workers
        if config.window is not None:
            kwargs["communication_window"] = config.window
        if config.compression != "none":
            kwargs["compression"] = config.compression
        if config.simulate is not None:
            kwargs["simulate"] = self.simulation(config)
        if config.slowmo != "none":
            return trainers.SlowMo(model, base=config.algorithm,
                                   average=config.slowmo == "avg", **kwargs)
        return getattr(trainers, study_trainers()[config.algorithm])(model, **kwargs)

    def build_model(self):
        import keras

        keras.utils.set_random_seed(self.seed)      # the same initial weights for every run
        if callable(self.model):
            return self.model()
        if self.model in ("digits_mlp", "digits_cnn"):
            from distkeras.datasets import digits

            return getattr(digits, self.model)()
        from distkeras.pipeline.training import build_model

        return build_model(self.model, compile=False)

    def feature_columns(self):
        if self.features_col is not None:
            return self.features_col
        if isinstance(self.model, str):
            from distkeras.pipeline.training import MODELS

            if self.model in MODELS:
                return MODELS[self.model][1]
        return "features"

    def _train(self, config: RunConfig, train, validation) -> dict:
        record: dict[str, Any] = {"key": config.key, **dataclasses.asdict(config),
                                  "label": config.label,
                                  "learning_rate": self.learning_rate_for(config),
                                  "lr_scaling": self.lr_scaling,
                                  "batch_size": self.batch_size, "epochs_planned": self.epochs,
                                  "model": self.model if isinstance(self.model, str) else
                                  getattr(self.model, "__name__", "custom"),
                                  "network": self.network,
                                  "simulated": config.simulate is not None}
        t0 = time.perf_counter()
        try:
            trainer = self.make_trainer(config)
            fitted = trainer.fit(train, validation_data=validation)
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded, the study goes on
            log.error("study run %s failed: %s", config.key, exc)
            return {**record, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                    "wall_seconds": time.perf_counter() - t0}
        return {**record, "status": "ok", "simulation": fitted.history.simulation,
                **summarise(fitted.history, time.perf_counter() - t0, self.batch_size)}

    def _data(self, train, validation):
        if isinstance(train, str):
            from pyspark.sql import SparkSession

            spark = SparkSession.getActiveSession()
            train = spark.read.parquet(train)
            if isinstance(validation, str):
                validation = spark.read.parquet(validation)
        if validation is None:
            train, validation = train.randomSplit([0.8, 0.2], seed=self.seed)
        return train.cache(), validation.cache()


def _accepts(algorithm: str, slowmo: str, compression: str) -> bool:
    """Whether a configuration's algorithm can take the compressor."""
    if compression == "none":
        return True
    from distkeras.compression import compressor

    rule, spec = algorithms.registry.trainer_spec(algorithm)
    own = algorithms.registry.parameters(rule)
    rule = (algorithms.SlowMo(base=algorithm, num_workers=2) if slowmo != "none" else
            rule(num_workers=2, **{k: v for k, v in {**spec.defaults, **spec.fixed}.items()
                                   if k in own}))
    return rule.compression_refusal(compressor(compression)) is None


def summarise(history, wall_seconds: float, batch_size: int) -> dict:
    """What a run's history says, as JSON: per-epoch metrics and wall time, samples/s, time per
    batch, per-worker compute / exchange / wait seconds, staleness and consensus distance."""
    epochs = []
    keys = [k for k in history if isinstance(history[k], list)]
    for i in range(len(history.get("loss", []))):
        epochs.append({"epoch": i, **{k: float(history[k][i]) for k in keys
                                      if i < len(history[k])}})
    workers = [{k: w[k] for k in ("worker", "samples", "seconds", "compute_seconds",
                                  "exchange_seconds", "wait_seconds", "exchanges", "bytes_sent",
                                  "bytes_received", "raw_bytes_sent", "feedback_norm") if k in w}
               for w in history.workers]
    samples = sum(w.get("samples", 0) for w in workers)
    seconds = [e["epoch_seconds"] for e in epochs]
    train_seconds = float(sum(seconds))
    staleness = []
    for w in history.ps_stats.get("workers", {}).values():
        for s, count in (w.get("staleness_histogram") or {}).items():
            staleness += [float(s)] * int(count)
    per_epoch = samples / max(1, len(epochs))
    n = max(1, len(workers))
    batches = per_epoch / n / batch_size          # steps per epoch of each worker
    return {
        "epochs": epochs, "wall_seconds": wall_seconds, "train_seconds": train_seconds,
        "samples": samples, "samples_per_s": samples / train_seconds if train_seconds else None,
        "steady_samples_per_s": (per_epoch / float(np.mean(seconds[1:]))
                                 if len(seconds) > 1 else None),
        "epoch_seconds_mean": float(np.mean(seconds)) if seconds else None,
        # epochs 2..N: the first also pays task launch, TensorFlow import and compilation
        "steady_epoch_seconds": float(np.mean(seconds[1:] or seconds)) if seconds else None,
        "time_per_batch": (float(np.mean(seconds[1:] or seconds)) / batches
                           if seconds and batches else None),
        "worker_stats": workers,
        "staleness_mean": float(np.mean(staleness)) if staleness else None,
        "consensus_distance": [e.get("consensus_distance") for e in epochs
                               if "consensus_distance" in e] or None,
        "final_val_accuracy": epochs[-1].get("val_accuracy") if epochs else None,
        "final_accuracy": epochs[-1].get("accuracy") if epochs else None,
    }


def load_runs(path: str) -> list[dict]:
    """The records of ``runs.jsonl`` (a truncated last line, from a killed study, is skipped)."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("skipping a truncated line in %s", path)
                continue
            if "workers" in record and "num_workers" not in record:   # written before 0.2
                record["num_workers"] = record.pop("workers")
            out.append(record)
    return out

