"""Bayesian search with Optuna on Spark: the sampler learns from finished trials, the pruner
stops poor trials mid-training.

The driver holds the Optuna study and asks it for a trial whenever a Spark slot is free (the
ask-and-tell interface); each trial trains in a Spark task as in the other searches (the data
shipped once through Arrow, k folds or a hold-out split) and reports every epoch to the driver,
where ``trial.report(value, epoch)`` and ``trial.should_prune()`` run: a pruned trial stops at
that epoch and is told ``PRUNED``. With a ``storage`` URL (``"sqlite:///search.db"``) the study
lives in a database: Optuna's own tools (``optuna-dashboard``, ``optuna.visualization``) read it,
and rerunning the same search resumes it without rerunning finished trials.

The space is the one grid and random search take (lists, ``Choice``, ``Uniform``,
``LogUniform``, ``IntUniform``, constants). Options that Optuna cannot store (tuples, dicts) are
stored as their index.

Example::

    import optuna
    space = {"units": IntUniform(8, 128), "learning_rate": LogUniform(1e-4, 1e-1)}
    search = OptunaSearch(build, space, n_trials=30, epochs=10, loss="categorical_crossentropy",
                          pruner=optuna.pruners.MedianPruner(n_warmup_steps=2),
                          storage="sqlite:///hlf-search.db", study_name="hlf")
    result = search.fit(df)
    result.best_params, result.study.best_trial.number, result.table["status"].value_counts()
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from distkeras.tuning import space as spaces
from distkeras.tuning.reports import metric_value
from distkeras.tuning.search import Search

log = logging.getLogger(__name__)

PRIMITIVE = (type(None), bool, int, float, str)
INTERRUPTED = "interrupted: the driver stopped while the trial ran; it was queued again"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError("OptunaSearch needs Optuna: pip install 'distkeras[tune]' "
                          "(or pip install optuna)") from None
    return optuna


class OptunaSpace:
    """The search space as Optuna distributions, and back.

    Example::

        s = OptunaSpace({"units": [(64,), (64, 32)], "lr": LogUniform(1e-4, 1e-2), "act": "relu"})
        s.distributions     # units: Categorical([0, 1]) (tuples by index), lr: Float(log=True)
        s.decode({"units": 1, "lr": 0.003})   # {"units": (64, 32), "lr": 0.003, "act": "relu"}
    """

    def __init__(self, space: dict):
        dist = _optuna().distributions
        self.space = spaces.normalise(space)
        self.distributions: dict[str, Any] = {}
        self.constants: dict[str, Any] = {}
        self.by_index: dict[str, list] = {}
        for name, spec in self.space.items():
            options = spec if isinstance(spec, list) else (
                list(spec.options) if isinstance(spec, spaces.Choice) else None)
            if options is not None:
                if all(isinstance(o, PRIMITIVE) for o in options) and \
                        len({(type(o), o) for o in options}) == len(options):
                    self.distributions[name] = dist.CategoricalDistribution(options)
                else:
                    self.by_index[name] = options
                    self.distributions[name] = dist.CategoricalDistribution(
                        list(range(len(options))))
            elif isinstance(spec, spaces.Uniform):
                self.distributions[name] = dist.FloatDistribution(spec.low, spec.high)
            elif isinstance(spec, spaces.LogUniform):
                self.distributions[name] = dist.FloatDistribution(spec.low, spec.high, log=True)
            elif isinstance(spec, spaces.IntUniform):
                self.distributions[name] = dist.IntDistribution(int(spec.low), int(spec.high))
            elif isinstance(spec, spaces.Distribution):
                raise spaces.SpaceError(f"{name!r}: {type(spec).__name__} has no Optuna "
                                        "equivalent")
            else:
                self.constants[name] = spec

    def decode(self, optuna_params: dict) -> dict:
        """The trial's parameters in the space's order, constants and indexed options restored."""
        out = {}
        for name in self.space:
            if name in self.constants:
                out[name] = self.constants[name]
            elif name in self.by_index:
                out[name] = self.by_index[name][int(optuna_params[name])]
            else:
                out[name] = optuna_params[name]
        return out


class OptunaSearch(Search):
    """A search driven by an Optuna study (see the module docstring).

    Args (besides :class:`~distkeras.tuning.search.Search`'s):
        n_trials: trials in the study in all, those of earlier runs of a stored study included.
        sampler: any Optuna sampler; default ``TPESampler(seed=seed)``.
        pruner: any Optuna pruner; default ``MedianPruner()``; ``optuna.pruners.NopPruner()``
            never prunes. ``SuccessiveHalvingPruner``/``HyperbandPruner`` give ASHA/Hyperband.
        storage: an Optuna storage URL (``"sqlite:///path.db"``) or object; None keeps the study
            in memory.
        study_name: the study in ``storage`` (created, or loaded and resumed).
        timeout: seconds after which no new trial starts (those running finish).

    A trial's reported value is ``metric`` after each epoch of its first fold. ``result.study``
    is the Optuna study. With one trial at a time (``max_concurrent=1``) and a seeded sampler
    the search is reproducible; with several, what the sampler has seen when it is asked
    depends on which trials finished first, as in any asynchronous Bayesian search.
    """

    prunes = True

    def __init__(self, build_fn, space: dict, n_trials: int = 20, sampler=None, pruner=None,
                 storage=None, study_name: str | None = None, timeout: float | None = None,
                 **kwargs):
        super().__init__(build_fn, space, **kwargs)
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials <= 0:
            raise spaces.SpaceError(f"n_trials must be a positive integer, got {n_trials!r}")
        if timeout is not None and not timeout > 0:
            raise spaces.SpaceError(f"timeout must be positive seconds, got {timeout!r}")
        self.optuna_space = OptunaSpace(self.space)
        self.n_trials, self.timeout = n_trials, timeout
        self.sampler, self.pruner = sampler, pruner
        self.storage, self.study_name = storage, study_name
        self.study = None
        self._lock = threading.Lock()
        self._running: dict[int, Any] = {}       # trial number -> optuna.Trial

    # --- the study ---------------------------------------------------------------------------
    def create_study(self):
        """The study (created or loaded from ``storage``); trials a dead driver left running
        are marked failed and their parameters queued again."""
        optuna = _optuna()
        study = optuna.create_study(
            storage=self.storage, study_name=self.study_name, load_if_exists=True,
            sampler=self.sampler or optuna.samplers.TPESampler(seed=self.seed),
            pruner=self.pruner or optuna.pruners.MedianPruner(),
            direction="maximize" if self.mode == "max" else "minimize")
        stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for t in stale:
            log.warning("trial %d of study %r was left running by a previous driver: marked "
                        "failed and queued again", t.number, study.study_name)
            study._storage.set_trial_user_attr(t._trial_id, "error", INTERRUPTED)
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(t.params, skip_if_exists=False)
        return study

    def _finished(self) -> list:
        optuna = _optuna()
        states = optuna.trial.TrialState
        return [t for t in self.study.get_trials(deepcopy=False)
                if t.state in (states.COMPLETE, states.PRUNED, states.FAIL)
                and t.user_attrs.get("error") != INTERRUPTED]

    def decide(self, trial: int, epoch: int, logs: dict) -> bool:
        value = metric_value(logs, self.metric)
        with self._lock:
            t = self._running.get(trial)
            if t is None or not math.isfinite(value):
                return False
            t.report(value, epoch)
            return bool(t.should_prune())

    # --- running -----------------------------------------------------------------------------
    def fit(self, df):
        """Run the search on ``df``; returns a SearchResult with ``.study``."""
        self.study = self.create_study()
        probe = spaces.sample(self.space, 1, self.seed)   # checks the data against a model
        with self._session(df, probe) as runner:
            return self._run(runner, None)

    def _run(self, runner, candidates):
        optuna = _optuna()
        states = optuna.trial.TrialState
        todo = max(0, self.n_trials - len(self._finished()))
        runner.bar.reset(total=todo)
        if todo < self.n_trials:
            log.info("study %r resumed: %d of %d trials done", self.study.study_name,
                     self.n_trials - todo, self.n_trials)
        started, asked = time.perf_counter(), 0

        def next_spec():
            nonlocal asked
            if asked >= todo or (self.timeout and time.perf_counter() - started > self.timeout):
                return None
            asked += 1
            with self._lock:
                t = self.study.ask(self.optuna_space.distributions)
                self._running[t.number] = t
            return self.trial_spec(t.number, self.optuna_space.decode(t.params))

        def on_result(spec, result):
            with self._lock:
                t = self._running.pop(spec["trial"])
                for key in ("metrics", "epochs", "seconds", "ended", "error", "host"):
                    t.set_user_attr(key, result.get(key))
                score = result.get("score", math.nan)
                if result["status"] == "ok" and math.isfinite(score):
                    self.study.tell(t, score)
                elif result["status"] == "pruned":
                    self.study.tell(t, state=states.PRUNED)
                else:
                    self.study.tell(t, state=states.FAIL)

        runner.stream(next_spec, on_result)
        result = self._result([self._as_trial(t) for t in self._finished()])
        result.study = self.study
        return result

    def _as_trial(self, t) -> dict:
        """A finished Optuna trial as a row of the result table."""
        status = {"COMPLETE": "ok", "PRUNED": "pruned"}.get(t.state.name, "failed")
        attrs = t.user_attrs
        return {"trial": t.number, "params": self.optuna_space.decode(t.params), "status": status,
                "score": float(t.value) if status == "ok" and t.value is not None else math.nan,
                "metrics": attrs.get("metrics") or {}, "epochs": attrs.get("epochs"),
                "seconds": attrs.get("seconds"), "ended": attrs.get("ended"),
                "error": attrs.get("error")}
