"""Hyperparameter search on Spark: one trial per task, the data broadcast once per search.

* :class:`GridSearch`, :class:`RandomSearch`, :class:`SuccessiveHalving` — the searches;
* :class:`OptunaSearch` — Bayesian (TPE, CMA-ES, ...) with pruning, resumable from storage;
* :class:`ASHA`, :class:`Hyperband` — asynchronous multi-fidelity: every slot busy.
* :class:`Uniform`, :class:`LogUniform`, :class:`IntUniform`, :class:`Choice` — distributions.
* :class:`SearchResult` — the trials table, ``best_params``, ``best_score``, ``refit``.

Example::

    from distkeras.tuning import RandomSearch, LogUniform, Choice
    result = RandomSearch(build, {"units": Choice([16, 64]), "learning_rate": LogUniform(1e-4, 1e-2)},
                          n_trials=8, epochs=3, loss="categorical_crossentropy",
                          features_col="hlf", label_col="label").fit(df)
    result.table.head(); fitted = result.refit(df, trainer="ADAG", num_workers=2)
"""
from __future__ import annotations

from distkeras.tuning.asha import ASHA, Hyperband
from distkeras.tuning.folds import fold_ids, holdout, kfold
from distkeras.tuning.halving import SuccessiveHalving
from distkeras.tuning.optuna_search import OptunaSearch, OptunaSpace
from distkeras.tuning.results import SearchResult
from distkeras.tuning.search import GridSearch, RandomSearch, Search
from distkeras.tuning.space import (Choice, Distribution, IntUniform, LogUniform, SpaceError,
                                    Uniform, grid, sample)

__all__ = ["GridSearch", "RandomSearch", "SuccessiveHalving", "OptunaSearch", "OptunaSpace",
           "ASHA", "Hyperband", "Search", "SearchResult",
           "Uniform", "LogUniform", "IntUniform", "Choice", "Distribution", "SpaceError",
           "grid", "sample", "kfold", "holdout", "fold_ids"]
