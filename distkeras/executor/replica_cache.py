"""Compiled replicas a Python worker keeps between fits: the next fit of the same model (the
same architecture, custom-object code, loss, optimizer and metrics, on as many workers) skips
the trace and compilation of its windows, which is most of a warm fit's start.

Nothing but the compiled program survives: a reused replica takes every value a new one would
have (:meth:`Replica.restart`): the new fit's weights, fixed state and random seeds from its own
archive, the optimizer's and the metrics' state as first built. The cache holds at most
``MAX_REPLICAS`` replicas per Python worker, the least recently used leaving first; a replica
whose task failed is dropped.

Example::

    key = replica_key(spec, model)        # model: this fit's, rebuilt from its archive
    replica = REPLICAS.take(key)          # None: build one
    ...                                   # train with it
    REPLICAS.keep(key, replica)           # after the task succeeded
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict

MAX_REPLICAS = 2


def replica_key(spec: dict, model) -> str | None:
    """What a compiled replica of ``model`` (this fit's, just rebuilt) depends on, as a digest;
    None when the fit does not reuse replicas.

    Besides the architecture and the fit's compile settings, the values of the model's fixed
    state (frozen layers, ``adapt()``-ed preprocessing): a layer may turn them into constants
    of the compiled program (``Normalization`` does), so a model adapted to other data needs
    a program of its own."""
    import numpy as np

    if not spec.get("reuse_compiled", True):
        return None
    ensemble = spec["algorithm"].exchange_type.run_model.ensemble
    settings = {key: spec.get(key) for key in ("layout", "jit_compile", "backend")}
    settings["paced_for"] = 1 if ensemble else int(spec["num_workers"])   # pace_statistics
    settings["compile"] = {**spec["compile"],      # "adam_3": a new optimizer, the same settings
                           "optimizer": _unnamed(spec["compile"]["optimizer"])}
    digest = hashlib.sha256(spec["model"].architecture().encode())
    digest.update(json.dumps(settings, sort_keys=True, default=repr).encode())
    exchanged = set(spec["layout"]["parameters"]) | set(spec["layout"]["statistics"])
    for i, weight in enumerate(model.weights):
        if i not in exchanged:
            digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
    return digest.hexdigest()


def _unnamed(config):
    """An optimizer's config without its (and its inner optimizer's) auto-numbered name."""
    if isinstance(config, dict):
        return {k: _unnamed(v) for k, v in config.items() if k != "name"}
    return config


class ReplicaCache:
    """The replicas of this Python worker (one task at a time takes one out)."""

    def __init__(self, size: int = MAX_REPLICAS):
        self.size = size
        self._replicas: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str | None):
        if key is None:
            return None
        with self._lock:
            return self._replicas.pop(key, None)

    def keep(self, key: str | None, replica) -> None:
        if key is None:
            return
        with self._lock:
            self._replicas[key] = replica
            self._replicas.move_to_end(key)
            while len(self._replicas) > self.size:
                self._replicas.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._replicas.clear()


REPLICAS = ReplicaCache()
