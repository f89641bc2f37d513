"""Hyperparameter search on Spark: ``GridSearch`` and ``RandomSearch`` (``SuccessiveHalving``
lives in ``halving.py``). One trial per Spark task, the data broadcast once per search.

The user gives ``build_fn(params) -> keras.Model`` (compiled or not: the search compiles it with
the trial's ``optimizer``/``learning_rate``/``loss``), a parameter space (see ``space.py``) and a
DataFrame with ``features_col``/``label_col``. Each trial trains for ``epochs`` with
``batch_size`` and is scored on a seeded hold-out split (``validation_fraction``) or by k-fold
cross-validation (``folds=k``, metrics averaged over the folds).

Example::

    def build(p):
        return keras.Sequential([keras.Input((14,)), keras.layers.Dense(p["units"], "relu"),
                                 keras.layers.Dense(3, activation="softmax")])

    search = GridSearch(build, {"units": [16, 64], "learning_rate": [1e-3, 1e-2]},
                        loss="categorical_crossentropy", features_col="hlf", label_col="label")
    result = search.fit(df)                  # tqdm bar: trials done, best so far, ETA
    result.table, result.best_params
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Sequence

from distkeras.tuning import space as spaces

log = logging.getLogger(__name__)


class Search:
    """Base of the searches: validation, data shipping, scheduling and the result table.

    Args:
        build_fn: ``params -> keras.Model``; it receives every trial parameter (reserved keys
            included) and is shipped to the executors in the task closure.
        space: parameter space; lists are options, distributions are sampled.
        features_col / label_col: columns as for the trainers (arrays, numbers or vectors).
        loss, optimizer, learning_rate, batch_size, epochs: defaults for the reserved keys.
        metrics: Keras metrics compiled into every trial.
        metric / mode: what ranks the trials (``"val_accuracy"``, ``"max"``); mode defaults to
            ``"min"`` for metrics containing ``loss``/``error``, else ``"max"``.
        folds: k-fold cross-validation (``k >= 2``); ``None`` uses a hold-out split of
            ``validation_fraction``.
        sample_fraction: tune on a seeded sample of the DataFrame.
        cores_per_trial: TensorFlow threads per trial; trials at once = slots // cores_per_trial.
        steps_per_execution: batches per compiled TensorFlow call in each trial's ``fit``
            (Keras' compile option; the same training, fewer Python round trips: small models
            train several times faster with 16 than with 1).
        max_concurrent: cap on trials at once.
        seed: seeds sampling, splits and every trial (trial seed = seed + trial id).
        verbose: tqdm progress bar on the driver.
    """

    def __init__(self, build_fn: Callable[[dict], Any], space: dict, *,
                 features_col: str | Sequence[str] = "features", label_col: str = "label",
                 loss: Any = None, optimizer: Any = "adam", learning_rate: float | None = None,
                 batch_size: int = 32, epochs: int = 1, metrics: Sequence[str] = ("accuracy",),
                 metric: str = "val_accuracy", mode: str | None = None, folds: int | None = None,
                 validation_fraction: float = 0.2, sample_fraction: float | None = None,
                 cores_per_trial: int = 1, max_concurrent: int | None = None,
                 steps_per_execution: int = 16, input_shapes=None, seed: int = 42,
                 verbose: bool = True):
        if not callable(build_fn):
            raise spaces.SpaceError(f"build_fn must be callable, got {build_fn!r}")
        self.build_fn = build_fn
        self.space = spaces.normalise(space)
        self.features_col, self.label_col = features_col, label_col
        self.defaults = {"loss": loss, "optimizer": optimizer, "learning_rate": learning_rate,
                         "batch_size": batch_size, "epochs": epochs}
        for key, value in self.defaults.items():
            if value is not None:
                spaces.check_reserved(key, value)
        self.metrics = list(metrics or [])
        self.metric = metric
        self.mode = mode or ("min" if ("loss" in metric or "error" in metric) else "max")
        if self.mode not in ("min", "max"):
            raise spaces.SpaceError(f"mode must be 'min' or 'max', got {mode!r}")
        if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int)
                                  or folds < 2):
            raise spaces.SpaceError(f"folds must be an integer >= 2 (or None), got {folds!r}")
        if not 0 < validation_fraction < 1:
            raise spaces.SpaceError(f"validation_fraction must be in (0, 1), got "
                                    f"{validation_fraction}")
        if sample_fraction is not None and not 0 < sample_fraction <= 1:
            raise spaces.SpaceError(f"sample_fraction must be in (0, 1], got {sample_fraction}")
        if (int(cores_per_trial) < 1 or int(steps_per_execution) < 1
                or (max_concurrent is not None and int(max_concurrent) < 1)):
            raise spaces.SpaceError("cores_per_trial, steps_per_execution and max_concurrent "
                                    "must be positive")
        self.folds, self.validation_fraction = folds, float(validation_fraction)
        self.sample_fraction = sample_fraction
        self.cores_per_trial, self.max_concurrent = int(cores_per_trial), max_concurrent
        self.steps_per_execution = int(steps_per_execution)
        self.input_shapes = input_shapes
        self.seed, self.verbose = int(seed), verbose

    # --- what to try ---------------------------------------------------------------------------
    def candidates(self) -> list[dict]:
        """The parameter dicts of the trials (subclasses decide)."""
        raise NotImplementedError

    def settings(self, params: dict) -> dict:
        """Reserved keys of one trial: its value, else the search default."""
        out = {k: params.get(k, v) for k, v in self.defaults.items()}
        import keras

        for key, kind in (("optimizer", keras.optimizers), ("loss", keras.losses)):
            value = out[key]
            if value is not None and not isinstance(value, (str, dict)) and hasattr(value,
                                                                                   "get_config"):
                out[key] = kind.serialize(value)   # configs travel, Keras objects do not
        return out

    def trial_spec(self, trial: int, params: dict, **overrides) -> dict:
        spec = {"trial": trial, "params": params, **self.settings(params),
                "metrics": self.metrics, "features_col": self.features_col,
                "label_col": self.label_col, "input_shapes": self.input_shapes,
                "folds": self.folds, "validation_fraction": self.validation_fraction,
                "steps_per_execution": self.steps_per_execution,
                "split_seed": self.seed, "seed": self.seed + trial}
        spec.update(overrides)
        return spec

    # --- pruning -------------------------------------------------------------------------------
    #: searches that stop trials early set this: trials then report every epoch to the driver
    prunes = False

    def decide(self, trial: int, epoch: int, logs: dict) -> bool:
        """Stop ``trial`` after ``epoch`` (0-based), given that epoch's logs? (on the driver)"""
        return False

    # --- running -------------------------------------------------------------------------------
    def fit(self, df):
        """Run the search on ``df``; returns a :class:`~distkeras.tuning.results.SearchResult`."""
        candidates = self.candidates()
        if not candidates:
            raise spaces.SpaceError("the search has no trials")
        for params in candidates:
            for key, value in params.items():
                spaces.check_reserved(key, value)
        with self._session(df, candidates) as runner:
            return self._run(runner, candidates)

    def _run(self, runner, candidates: list[dict]):
        specs = [self.trial_spec(i, p) for i, p in enumerate(candidates)]
        runner.bar.reset(total=len(specs))
        results = runner.run(specs)
        trials = [{**r, "params": p} for r, p in zip(results, candidates)]
        return self._result(trials)

    def _result(self, trials, rungs=None):
        from distkeras.tuning.results import SearchResult

        result = SearchResult(trials, self.metric, self.mode, search=self, rungs=rungs)
        ok = [t for t in trials if t["status"] == "ok"]
        if ok and all(math.isnan(t["score"]) for t in ok):
            log.warning("no trial reported metric %r; available: %s", self.metric,
                        sorted(ok[0]["metrics"]))
        return result

    def _session(self, df, candidates):
        return _SearchSession(self, df, candidates)

    def probe_model(self, candidates: list[dict]):
        """Build the first buildable candidate on the driver: its feed layout checks the data
        before launch. ``(None, None)`` when build_fn fails for every candidate."""
        import keras

        from distkeras import backends
        from distkeras.feed import feed_spec_for
        from distkeras.tuning.trial import compile_model

        backends.current().setup()
        for i, params in enumerate(candidates):
            try:
                keras.utils.set_random_seed(self.seed + i)
                model = self.build_fn(params)
                loss = compile_model(model, self.trial_spec(i, params))
            except Exception as exc:  # noqa: BLE001 - recorded when the trial runs
                log.info("build_fn failed on the driver for %s: %s", params, exc)
                continue
            return model, feed_spec_for(model, self.features_col, self.label_col, loss,
                                        self.input_shapes)
        return None, None

    def build_for_refit(self, trial: dict):
        """The model of ``trial`` and trainer arguments matching its training settings."""
        import keras

        from distkeras import backends

        backends.current().setup()
        keras.utils.set_random_seed(self.seed + int(trial["trial"]))
        model = self.build_fn(trial["params"])
        s = self.settings(trial["params"])
        compiled = getattr(model, "optimizer", None) is not None and getattr(model, "loss", None)
        kwargs = {"loss": s["loss"] or (model.loss if compiled else None),
                  "worker_optimizer": s["optimizer"] or "adam",
                  "learning_rate": s["learning_rate"], "batch_size": int(s["batch_size"]),
                  "metrics": self.metrics, "features_col": self.features_col,
                  "label_col": self.label_col, "input_shapes": self.input_shapes,
                  "seed": self.seed}
        return model, kwargs


class _SearchSession:
    """Context of one ``fit``: the shipped data, the progress bar and the trial runner."""

    def __init__(self, search: Search, df, candidates):
        self.search, self.df, self.candidates = search, df, candidates

    def __enter__(self):
        from tqdm.auto import tqdm

        from distkeras.custom_objects import ship_by_value
        from distkeras.spark import total_slots, warn_if_unauthenticated
        from distkeras.spark_api import spark_api
        from distkeras.tuning.data import ship
        from distkeras.tuning.scheduler import TrialRunner

        s = self.search
        df = self.df
        if s.sample_fraction is not None and s.sample_fraction < 1:
            df = df.sample(fraction=s.sample_fraction, seed=s.seed)
        _, feed = s.probe_model(self.candidates)
        self.data = ship(df, feed, s.features_col, s.label_col)
        if s.folds and s.folds > self.data.rows:
            self.data.destroy()
            raise spaces.SpaceError(f"folds={s.folds} but the data has {self.data.rows} rows")
        spark = df.sparkSession
        warn_if_unauthenticated(spark)     # the run's secret travels in the task closure
        ship_by_value([s.build_fn])        # the user's module may not be on the executors
        self.reports = None
        if s.prunes:
            from distkeras.tuning.reports import ReportService

            host = spark_api(spark).service_host
            self.reports = ReportService(s.decide, host=host).__enter__()
        slots = total_slots(spark)
        concurrency = max(1, slots // s.cores_per_trial)
        if s.max_concurrent:
            concurrency = min(concurrency, int(s.max_concurrent))
        log.info("search: %d candidates, %d at a time, %d TF threads each, %d rows",
                 len(self.candidates), concurrency, s.cores_per_trial, self.data.rows)
        bar = tqdm(total=len(self.candidates), unit="trial", disable=not s.verbose,
                   desc=type(s).__name__, mininterval=0.5)
        self.runner = TrialRunner(spark, s.build_fn, self.data, concurrency, s.cores_per_trial,
                                  s.metric, s.mode, bar=bar,
                                  report=self.reports.contact() if self.reports else None)
        return self.runner

    def __exit__(self, *exc):
        self.runner.bar.close()
        self.data.destroy()
        if self.reports is not None:
            self.reports.__exit__(*exc)
        return False


class GridSearch(Search):
    """Every combination of the space's lists, each exactly once.

    Example::

        GridSearch(build, {"units": [16, 64], "batch_size": [32, 128]}, epochs=3,
                   loss="categorical_crossentropy").fit(df)       # 4 trials
    """

    def candidates(self) -> list[dict]:
        return spaces.grid(self.space)


class RandomSearch(Search):
    """``n_trials`` configurations sampled from the space with ``seed`` (same seed, same trials).

    Example::

        RandomSearch(build, {"units": IntUniform(8, 128), "learning_rate": LogUniform(1e-4, 1e-1)},
                     n_trials=20, loss="categorical_crossentropy", seed=1).fit(df)
    """

    def __init__(self, build_fn, space: dict, n_trials: int = 10, **kwargs):
        super().__init__(build_fn, space, **kwargs)
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials <= 0:
            raise spaces.SpaceError(f"n_trials must be a positive integer, got {n_trials!r}")
        self.n_trials = n_trials

    def candidates(self) -> list[dict]:
        return spaces.sample(self.space, self.n_trials, self.seed)
