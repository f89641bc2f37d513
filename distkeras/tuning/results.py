"""The outcome of a search: a table of trials sorted by the chosen metric, the best
configuration, and ``refit`` of that configuration on the full data with any distkeras trainer.

Example::

    result = GridSearch(build, space, features_col="hlf", label_col="label").fit(df)
    result.table.head()                  # pandas, best first
    result.best_params, result.best_score
    fitted = result.refit(df, trainer="ADAG", num_workers=2)   # a distkeras KerasModel
    result.to_spark(spark).write.parquet("trials")
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _cell(value: Any) -> Any:
    """A table cell: scalars stay, tuples/lists/dicts become JSON (Spark needs one type)."""
    if isinstance(value, (np.generic,)):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


class SearchResult:
    """Trials of a search (``table``), ``best_params``, ``best_score``, ``refit``, ``to_spark``.

    ``trials`` are plain dicts (``trial``, ``params``, ``status`` (``ok``, ``pruned`` or
    ``failed``), ``score`` (of ``ok`` trials), ``metrics`` (at the last epoch trained),
    ``epochs`` (trained), ``seconds``, ``error``, and ``rung`` for the multi-fidelity searches).
    """

    def __init__(self, trials: list[dict], metric: str, mode: str, search=None,
                 rungs: list[dict] | None = None):
        self.trials = list(trials)
        self.metric = metric
        self.mode = mode
        self.search = search
        self.rungs = rungs or []
        self._table = None

    # --- the table -------------------------------------------------------------------------
    @property
    def table(self):
        """pandas DataFrame, one row per trial, best first (failed trials last)."""
        if self._table is None:
            import pandas as pd

            rows = []
            param_names: list[str] = []
            for t in self.trials:
                for name in t["params"]:
                    if name not in param_names:
                        param_names.append(name)
            for t in self.trials:
                row = {"trial": t["trial"]}
                row.update({n: t["params"].get(n) for n in param_names})
                row.update({"status": t["status"], "score": t.get("score", float("nan"))})
                for k, v in sorted(t.get("metrics", {}).items()):
                    row[k if k not in row else f"metric_{k}"] = v
                row.update({"epochs": t.get("epochs"), "seconds": t.get("seconds")})
                if "rung" in t:
                    row["rung"] = t["rung"]
                row["error"] = t.get("error")
                rows.append(row)
            table = pd.DataFrame(rows)
            keys, asc = ["score", "trial"], [self.mode == "min", True]
            if "rung" in table:
                keys, asc = ["rung"] + keys, [False] + asc
            self._table = table.sort_values(keys, ascending=asc, na_position="last",
                                            kind="mergesort").reset_index(drop=True)
        return self._table

    def to_spark(self, spark):
        """The table as a Spark DataFrame (non-scalar parameters as JSON strings)."""
        table = self.table.copy()
        for col in table.columns:
            if table[col].dtype == object:
                table[col] = [_cell(v) for v in table[col]]
                kinds = {type(v) for v in table[col] if v is not None}
                if len(kinds) > 1:
                    table[col] = [None if v is None else str(v) for v in table[col]]
        return spark.createDataFrame(table)

    def to_markdown(self, columns: list[str] | None = None, floatfmt: str = ".4g") -> str:
        """The table as a GitHub markdown table (no extra dependency)."""
        table = self.table if columns is None else self.table[columns]

        def fmt(v):
            if isinstance(v, float):
                return "" if math.isnan(v) else format(v, floatfmt)
            return "" if v is None else str(_cell(v)).replace("|", "\\|")

        lines = ["| " + " | ".join(map(str, table.columns)) + " |",
                 "|" + "|".join("---" for _ in table.columns) + "|"]
        lines += ["| " + " | ".join(fmt(v) for v in row) + " |"
                  for row in table.itertuples(index=False)]
        return "\n".join(lines) + "\n"

    # --- the best trial ----------------------------------------------------------------------
    @property
    def best_trial(self) -> dict:
        """The winning trial's dict (the first successful row of ``table``)."""
        ok = [t for t in self.trials if t["status"] == "ok"
              and not math.isnan(t.get("score", float("nan")))]
        if not ok:
            errors = {t.get("error") for t in self.trials}
            raise RuntimeError(f"no trial succeeded with metric {self.metric!r}; errors: "
                               f"{sorted(e for e in errors if e)[:3]}")
        table = self.table
        ok_rows = (table["status"] == "ok") & table["score"].notna()
        best_id = int(table.loc[ok_rows, "trial"].iloc[0])
        return next(t for t in self.trials if t["trial"] == best_id)

    @property
    def best_params(self) -> dict:
        return dict(self.best_trial["params"])

    @property
    def best_score(self) -> float:
        return float(self.best_trial["score"])

    def refit(self, df, trainer: Any = "ADAG", validation_data=None, **trainer_kwargs):
        """Train the best configuration on ``df`` with a distkeras trainer (class or name).

        The trainer gets the trial's loss, optimizer, learning rate, batch size and epochs,
        unless ``trainer_kwargs`` override them. Returns the trainer's ``KerasModel``.
        """
        from distkeras import trainers

        if self.search is None:
            raise RuntimeError("this result has no search attached; it cannot refit")
        if isinstance(trainer, str):
            by_name = {n.lower(): getattr(trainers, n) for n in trainers.__all__}
            if trainer.lower() not in by_name:
                raise ValueError(f"unknown trainer {trainer!r}; one of {trainers.__all__}")
            trainer = by_name[trainer.lower()]
        best = self.best_trial
        model, settings = self.search.build_for_refit(best)
        kwargs = {**settings, "epochs": int(best["epochs"])}
        kwargs.update(trainer_kwargs)
        log.info("refitting trial %d (%s) with %s", best["trial"], best["params"], trainer.__name__)
        return trainer(model, **kwargs).fit(df, validation_data=validation_data)

    # --- notebook display ------------------------------------------------------------------
    def __repr__(self) -> str:
        ok = sum(t["status"] == "ok" for t in self.trials)
        head = (f"SearchResult({len(self.trials)} trials, {ok} ok, metric={self.metric!r}, "
                f"mode={self.mode!r}")
        if ok:
            head += f", best_score={self.best_score:.4g}, best_params={self.best_params}"
        return head + ")"

    def _repr_html_(self) -> str:
        return f"<p>{self.__repr__()}</p>" + self.table.to_html(max_rows=30)
