"""Successive halving (Jamieson & Talwalkar 2016; the synchronous core of Hyperband/ASHA):
train many configurations briefly, keep the best ``1/eta``, give them ``eta`` times more epochs,
until one is left (or ``max_epochs`` is reached). Large grids become cheap: each rung costs
about the same as the first.

Promoted trials are **retrained from scratch** with the rung's epoch budget (same seed, same
split), not resumed from weights: the result of every rung is then exactly what a plain run
with that many epochs gives (reproducible, optimizer state included, k folds work unchanged),
at the price of at most ``eta/(eta-1)`` times the epochs of the promoted trials.

Example::

    sh = SuccessiveHalving(build, {"units": [8, 16, 32, 64], "learning_rate": [1e-3, 1e-2]},
                           eta=2, min_epochs=1, loss="categorical_crossentropy")
    result = sh.fit(df)     # rungs of 8 x 1 epoch, 4 x 2, 2 x 4, 1 x 8
    result.rungs            # [{"rung": 0, "epochs": 1, "trials": [...], "promoted": [...]}, ...]
"""
from __future__ import annotations

import logging
import math

from distkeras.tuning import space as spaces
from distkeras.tuning.search import Search

log = logging.getLogger(__name__)


def schedule(n: int, eta: int, min_epochs: int, max_epochs: int | None) -> list[tuple[int, int]]:
    """``[(trials, epochs), ...]`` per rung: ``n // eta**i`` trials (at least 1) with
    ``min_epochs * eta**i`` epochs (at most ``max_epochs``), until one trial or max_epochs."""
    rungs = []
    trials, epochs = n, min_epochs
    while True:
        epochs = min(epochs, max_epochs) if max_epochs else epochs
        rungs.append((trials, epochs))
        if trials <= 1 or (max_epochs and epochs >= max_epochs):
            return rungs
        trials, epochs = max(1, trials // eta), epochs * eta


def top(results: list[dict], k: int, mode: str) -> list[int]:
    """Trial ids of the ``k`` best successful results (ties: lower trial id first)."""
    ok = [r for r in results if r["status"] == "ok" and not math.isnan(r["score"])]
    sign = -1.0 if mode == "max" else 1.0
    ok.sort(key=lambda r: (sign * r["score"], r["trial"]))
    return [r["trial"] for r in ok[:k]]


class SuccessiveHalving(Search):
    """Successive halving over a grid (``n_trials=None``) or ``n_trials`` random samples.

    Args (besides :class:`Search`'s):
        eta: keep the best ``1/eta`` of each rung and multiply the epochs by ``eta`` (>= 2).
        min_epochs: epochs of the first rung.
        max_epochs: cap on a rung's epochs; the search stops at the rung that reaches it.
        n_trials: sample this many candidates from the space instead of taking its grid.

    The space must not contain ``epochs`` (the rungs set it). The table holds every trial's
    last rung, best of the last rung first; ``result.rungs`` lists each rung's trials.
    """

    def __init__(self, build_fn, space: dict, eta: int = 3, min_epochs: int = 1,
                 max_epochs: int | None = None, n_trials: int | None = None, **kwargs):
        super().__init__(build_fn, space, **kwargs)
        if "epochs" in self.space:
            raise spaces.SpaceError("SuccessiveHalving sets the epochs per rung; remove 'epochs' "
                                    "from the space and use min_epochs/max_epochs")
        for name, value, low in (("eta", eta, 2), ("min_epochs", min_epochs, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise spaces.SpaceError(f"{name} must be an integer >= {low}, got {value!r}")
        if max_epochs is not None and (not isinstance(max_epochs, int) or max_epochs < min_epochs):
            raise spaces.SpaceError(f"max_epochs must be an integer >= min_epochs, got "
                                    f"{max_epochs!r}")
        if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int)
                                     or n_trials <= 0):
            raise spaces.SpaceError(f"n_trials must be a positive integer, got {n_trials!r}")
        self.eta, self.min_epochs, self.max_epochs = eta, min_epochs, max_epochs
        self.n_trials = n_trials

    def candidates(self) -> list[dict]:
        if self.n_trials is None:
            return spaces.grid(self.space)
        return spaces.sample(self.space, self.n_trials, self.seed)

    def _run(self, runner, candidates: list[dict]):
        plan = schedule(len(candidates), self.eta, self.min_epochs, self.max_epochs)
        runner.bar.reset(total=sum(n for n, _ in plan))
        alive = list(range(len(candidates)))
        last: dict[int, dict] = {}
        rungs = []
        for rung, (_, epochs) in enumerate(plan):
            runner.bar.set_description(f"SuccessiveHalving rung {rung} ({epochs} ep)")
            runner.best = None    # scores of different rungs are not comparable
            specs = [self.trial_spec(i, candidates[i], epochs=epochs) for i in alive]
            results = runner.run(specs)
            for r in results:
                last[r["trial"]] = {**r, "params": candidates[r["trial"]], "rung": rung}
            keep = plan[rung + 1][0] if rung + 1 < len(plan) else 0
            promoted = top(results, keep, self.mode)
            rungs.append({"rung": rung, "epochs": epochs, "trials": list(alive),
                          "scores": {r["trial"]: r["score"] for r in results},
                          "promoted": promoted})
            log.info("rung %d (%d epochs): %d trials, promoted %s", rung, epochs, len(alive),
                     promoted)
            if not promoted:
                break
            alive = promoted
        runner.bar.total = runner.bar.n   # rungs cut short when too few trials succeeded
        runner.bar.refresh()
        return self._result([last[i] for i in sorted(last)], rungs=rungs)
