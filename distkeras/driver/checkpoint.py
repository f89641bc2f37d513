"""Resuming a run after the driver died: the server-side state, written atomically at every
epoch end, and read back when the same command runs again.

What a run needs to go on is on the driver: the centre variable θ̃ (or the mean of the replicas),
the parameter server's update count, the completed epochs, the history so far and the
algorithm's own server-side state (``Algorithm.server_state()``, e.g. a momentum buffer). Each
epoch end writes them into ``<dir>/epoch-<k>.tmp/`` and renames it to ``<dir>/epoch-<k>/`` (a
rename is atomic on local disks and HDFS), then removes older epochs: a driver killed at any
moment leaves the last complete epoch behind. The workers' optimizer state is not saved: a
resumed run's workers start their optimizers afresh (like a task Spark retried).

Plain paths are written by Python; URIs (``file://``, ``hdfs://``, ``s3a://``, ...) through
Hadoop's FileSystem of the Spark session.

Example::

    store = Checkpoint(spark, "/data/ckpt/hlf-adag", fingerprint)
    state = store.load()        # None on the first run
    store.save(epochs=3, updates=410, history={...}, centre=theta, server_state={})
    store.clear()               # after the last epoch (Keras' BackupAndRestore does the same)
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from typing import Any, Optional

import numpy as np

from distkeras.io.filesystem import filesystem

log = logging.getLogger(__name__)
_EPOCH = re.compile(r"^epoch-(\d+)$")


def fingerprint(model, algorithm: str, num_workers: int, layout=None) -> str:
    """What a checkpoint must match to be resumed: the model's layers and weight shapes (not
    its auto-generated names), the layout of the saved vector (``distkeras.state``), the
    algorithm and the number of workers."""
    layers = [[type(layer).__name__, [list(w.shape) for w in layer.weights]]
              for layer in model.layers]
    order = None if layout is None else [list(layout.order), layout.params, layout.size]
    text = json.dumps([layers, algorithm, int(num_workers)] + ([order] if order else []))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpoint:
    """The resumable state of one training run under ``path`` (see the module docstring)."""

    def __init__(self, spark, path: str, fingerprint: str):
        self.path = str(path)
        self.fingerprint = fingerprint
        self.keep = False           # kept after a completed run (else cleared)
        self._fs = filesystem(spark, self.path)

    def _epochs(self) -> list[int]:
        return sorted(int(m.group(1)) for m in map(_EPOCH.match, self._fs.list()) if m)

    def load(self) -> Optional[dict[str, Any]]:
        """The last complete epoch's state, or None when there is none. Raises ``ValueError``
        when the checkpoint belongs to a different model, algorithm or number of workers."""
        epochs = self._epochs()
        if not epochs:
            return None
        where = self._fs.join(f"epoch-{epochs[-1]}")
        try:
            state = json.loads(self._fs.read(f"{where}/state.json").decode())
            arrays = np.load(io.BytesIO(self._fs.read(f"{where}/arrays.npz")))
            state["centre"] = arrays["centre"]
            state["server_state"] = {k[len("server/"):]: arrays[k] for k in arrays.files
                                     if k.startswith("server/")}
        except Exception as exc:  # noqa: BLE001 - OSError, a bad archive, Hadoop's checksums
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"the checkpoint in {where} cannot be read ({first[:300]}); delete "
                             "it to start afresh") from exc
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(f"the checkpoint in {self.path} was written by a different run (model, "
                             "algorithm or number of workers differ): delete it, or give this run "
                             "another checkpoint directory")
        return state

    def save(self, epochs: int, updates: int, history: dict, centre: np.ndarray,
             server_state: dict[str, np.ndarray]) -> None:
        """Write the state after ``epochs`` completed epochs, atomically."""
        final = self._fs.join(f"epoch-{epochs}")
        tmp = final + ".tmp"
        self._fs.delete(tmp)
        buf = io.BytesIO()
        np.savez(buf, centre=np.asarray(centre, np.float32),
                 **{f"server/{k}": np.asarray(v) for k, v in server_state.items()})
        self._fs.write(f"{tmp}/arrays.npz", buf.getvalue())
        state = {"fingerprint": self.fingerprint, "epochs": int(epochs), "updates": int(updates),
                 "history": history}
        self._fs.write(f"{tmp}/state.json", json.dumps(state).encode())
        self._fs.delete(final)
        self._fs.rename(tmp, final)
        for old in self._epochs():
            if old < epochs:
                self._fs.delete(self._fs.join(f"epoch-{old}"))
        log.debug("checkpoint: epoch %d written to %s", epochs, final)

    def clear(self) -> None:
        """Remove every epoch (the run completed)."""
        for name in self._fs.list():
            if _EPOCH.match(name) or name.endswith(".tmp"):
                self._fs.delete(self._fs.join(name))
