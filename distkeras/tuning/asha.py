"""Asynchronous successive halving (ASHA, Li et al. 2020) and asynchronous Hyperband: the
multi-fidelity searches that keep every slot busy.

Every trial is launched for ``max_epochs`` and reports each epoch to the driver. At a rung
(``min_epochs · ηᵏ`` epochs) it goes on only if its score is in the best ``1/η`` of the scores
recorded at that rung *so far*, else it stops there (``"pruned"``). No rung waits for the
trials still training: a freed slot takes the next candidate at once, where
:class:`~distkeras.tuning.halving.SuccessiveHalving` waits for a full rung. Promoted trials keep
their weights and optimizer state (they are never retrained).

Hyperband runs several ASHA brackets side by side: trial ``i`` goes to bracket ``i mod
brackets``, whose first rung is at ``min_epochs · η^bracket`` epochs, hedging against a metric
that is misleading after few epochs.

Example::

    asha = ASHA(build, {"units": IntUniform(8, 128), "learning_rate": LogUniform(1e-4, 1e-1)},
                n_trials=27, eta=3, min_epochs=1, max_epochs=9, loss="categorical_crossentropy")
    result = asha.fit(df)
    result.table[["trial", "status", "epochs", "rung", "score"]]   # pruned trials stopped early
"""
from __future__ import annotations

import logging
import math
import threading

from distkeras.tuning import space as spaces
from distkeras.tuning.reports import metric_value
from distkeras.tuning.search import Search

log = logging.getLogger(__name__)


def rung_levels(min_epochs: int, eta: int, max_epochs: int) -> list[int]:
    """Epochs of the rungs: ``min_epochs · ηᵏ`` below ``max_epochs``, then ``max_epochs``."""
    levels, epochs = [], min_epochs
    while epochs < max_epochs:
        levels.append(epochs)
        epochs *= eta
    return levels + [max_epochs]


def promotable(value: float, recorded: list[float], eta: int, mode: str) -> bool:
    """ASHA's rule: is ``value`` among the best ``len(recorded) // η`` of ``recorded`` (which
    includes it)? With fewer than η scores recorded, only the best so far goes on."""
    if math.isnan(value):
        return False
    ranked = sorted((v for v in recorded if not math.isnan(v)), reverse=(mode == "max"))
    k = max(len(recorded) // eta, 1)
    cutoff = ranked[min(k, len(ranked)) - 1]
    return value >= cutoff if mode == "max" else value <= cutoff


class ASHA(Search):
    """Asynchronous successive halving over ``n_trials`` random samples (or the grid).

    Args (besides :class:`~distkeras.tuning.search.Search`'s):
        n_trials: candidates sampled from the space; None takes the space's grid.
        eta: reduction factor (>= 2): the best 1/η of a rung goes on, η times longer.
        min_epochs, max_epochs: the first rung and the full training length.
        brackets: 1 is ASHA; more is asynchronous Hyperband (see the module docstring).

    The space must not contain ``epochs``. The table's ``rung`` is the highest rung a trial
    reached (its ``epochs`` say how long it trained); ``result.rungs`` lists each rung's scores
    and who went on.
    """

    prunes = True

    def __init__(self, build_fn, space: dict, n_trials: int | None = 20, eta: int = 3,
                 min_epochs: int = 1, max_epochs: int = 9, brackets: int = 1, **kwargs):
        super().__init__(build_fn, space, **kwargs)
        if "epochs" in self.space:
            raise spaces.SpaceError(f"{type(self).__name__} sets the epochs per rung; remove "
                                    "'epochs' from the space and use min_epochs/max_epochs")
        for name, value, low in (("eta", eta, 2), ("min_epochs", min_epochs, 1),
                                 ("max_epochs", max_epochs, min_epochs), ("brackets", brackets, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise spaces.SpaceError(f"{name} must be an integer >= {low}, got {value!r}")
        if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int)
                                     or n_trials <= 0):
            raise spaces.SpaceError(f"n_trials must be a positive integer, got {n_trials!r}")
        self.levels = rung_levels(min_epochs, eta, max_epochs)
        if brackets > len(self.levels):
            raise spaces.SpaceError(f"brackets={brackets}, but η={eta} from {min_epochs} to "
                                    f"{max_epochs} epochs gives {len(self.levels)} rungs")
        self.eta, self.min_epochs, self.max_epochs = eta, min_epochs, max_epochs
        self.brackets, self.n_trials = brackets, n_trials
        self.defaults["epochs"] = max_epochs
        self._lock = threading.Lock()
        self._recorded: dict[tuple[int, int], dict[int, float]] = {}   # (bracket, level) -> scores

    def candidates(self) -> list[dict]:
        if self.n_trials is None:
            return spaces.grid(self.space)
        return spaces.sample(self.space, self.n_trials, self.seed)

    def bracket(self, trial: int) -> int:
        return trial % self.brackets

    def decide(self, trial: int, epoch: int, logs: dict) -> bool:
        """Prune ``trial`` after ``epoch`` (0-based)? Only at its bracket's rungs."""
        epochs, bracket = epoch + 1, self.bracket(trial)
        levels = self.levels[bracket:-1]          # the last level is the end, not a rung
        if epochs not in levels:
            return False
        level = self.levels.index(epochs)
        value = metric_value(logs, self.metric)
        with self._lock:
            scores = self._recorded.setdefault((bracket, level), {})
            scores[trial] = value
            go_on = promotable(value, list(scores.values()), self.eta, self.mode)
        log.debug("ASHA trial %d bracket %d rung %d (%d epochs): %s=%s -> %s", trial, bracket,
                  level, epochs, self.metric, value, "on" if go_on else "stop")
        return not go_on

    def _run(self, runner, candidates: list[dict]):
        self._recorded.clear()
        specs = [self.trial_spec(i, p) for i, p in enumerate(candidates)]
        runner.bar.reset(total=len(specs))
        results = runner.run(specs)
        trials = []
        for r, p in zip(results, candidates):
            epochs = int(r.get("epochs") or 0)
            rung = max([i for i, e in enumerate(self.levels) if e <= epochs], default=0)
            trials.append({**r, "params": p, "rung": rung, "bracket": self.bracket(r["trial"])})
        return self._result(trials, rungs=self._rung_table(trials))

    def _rung_table(self, trials: list[dict]) -> list[dict]:
        reached = {t["trial"]: t["rung"] for t in trials}
        rungs = []
        for level, epochs in enumerate(self.levels[:-1]):
            scores = {t: v for (b, lv), s in sorted(self._recorded.items()) if lv == level
                      for t, v in s.items()}
            rungs.append({"rung": level, "epochs": epochs, "trials": sorted(scores),
                          "scores": scores,
                          "promoted": sorted(t for t in scores if reached[t] > level)})
        return rungs


class Hyperband(ASHA):
    """Asynchronous Hyperband: :class:`ASHA` with every bracket the rungs allow (or
    ``brackets``).

    Example::

        Hyperband(build, space, n_trials=30, eta=3, min_epochs=1, max_epochs=9).fit(df)
        # brackets with first rungs at 1, 3 and 9 epochs (the last: plain random search)
    """

    def __init__(self, build_fn, space: dict, n_trials: int | None = 20, eta: int = 3,
                 min_epochs: int = 1, max_epochs: int = 9, brackets: int | None = None,
                 **kwargs):
        super().__init__(build_fn, space, n_trials=n_trials, eta=eta, min_epochs=min_epochs,
                         max_epochs=max_epochs, **kwargs)
        if brackets is not None and (isinstance(brackets, bool) or not isinstance(brackets, int)
                                     or not 1 <= brackets <= len(self.levels)):
            raise spaces.SpaceError(f"brackets must be an integer in 1..{len(self.levels)} (the "
                                    f"rungs from {min_epochs} to {max_epochs} epochs), got "
                                    f"{brackets!r}")
        self.brackets = brackets or len(self.levels)
