"""The simulation checked against measured runs: each simulated configuration of a study
beside the same configuration trained for real on the network the simulation models, and the
model's typical error (``report`` prints it, and calls a smaller simulated difference between
algorithms no finding).

Example::

    from distkeras.study.validation import model_error, validation_table
    pairs = validation_table(analyse(records)["runs"])
    model_error(pairs)        # median |simulated / measured - 1| of the epoch time
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def validation_table(rows: Sequence[dict]) -> list[dict]:
    """Each simulated configuration beside the measured one (same algorithm, SlowMo variant,
    workers and λ) on the network it models (a measured ``loopback`` run pairs with a
    simulation of ``loopback``): steady epoch time, time per batch and final accuracy, and
    the model's relative error on the times."""
    measured = {(r["algorithm"], r["slowmo"], r["num_workers"], r["window"],
                 _network_spec(r["network"])): r for r in rows if not r["simulated"]}
    out = []
    for r in rows:
        real = measured.get((r["algorithm"], r["slowmo"], r["num_workers"], r["window"],
                             r["network"]))
        if not r["simulated"] or real is None:
            continue
        error = lambda k: (r[k] / real[k] - 1 if r[k] and real[k] else None)  # noqa: E731
        out.append({"label": real["label"], "network": r["network"],
                    "num_workers": r["num_workers"],
                    "measured_epoch": real["steady_epoch_seconds"],
                    "simulated_epoch": r["steady_epoch_seconds"],
                    "epoch_error": error("steady_epoch_seconds"),
                    "measured_batch": real["time_per_batch"],
                    "simulated_batch": r["time_per_batch"],
                    "batch_error": error("time_per_batch"),
                    "measured_accuracy": real["final_val_accuracy"],
                    "simulated_accuracy": r["final_val_accuracy"]})
    return out


def _network_spec(name: str) -> str | None:
    """A measured run's network as a simulation names it (None: not a network spec)."""
    from distkeras.simulation import Network

    try:
        return Network.parse(name).spec
    except ValueError:
        return None


def model_error(validation: Sequence[dict]) -> float | None:
    """The simulation's typical relative error on epoch time: the median of |error|."""
    errors = [abs(v["epoch_error"]) for v in validation if v["epoch_error"] is not None]
    return float(np.median(errors)) if errors else None
