"""The seam between distkeras and a Keras 3 backend (TensorFlow, JAX, PyTorch).

The training loop, the feed, the exchanges and the update rules are backend-neutral: they see
a replica's state as one flat float32 numpy vector (``distkeras.state``). What differs per
backend is behind two small classes, one file per backend (``distkeras/backends/<name>.py``,
named as ``keras.backend.backend()`` names it):

- :class:`Backend`: the framework in a Python worker.
    - ``setup(threads, gpus)``: import the framework pinned to the task's GPUs and CPU share;
    - ``threads()``: the intra-op threads it runs; ``accelerators()``: the GPUs it sees;
    - ``flat_weights(model, layout)``: read and write the flat vector of a model;
    - ``steps(model, weights, jit_compile)``: the model's compiled :class:`Steps`.
- :class:`Steps`: a compiled model's training calls.
    - ``window(xs, ys, sample_weight, start, index=None)``: λ local steps from ``start`` as
      one call, returning the flat weights after them; given ``index`` (``(steps, batch)``
      rows), the steps take rows ``index[i]`` of the partition's tensors ``xs``, gathered
      inside the compiled window;
    - ``holds_partitions()``: whether the backend takes a partition as tensors once
      (``tensor``: one array as the backend's tensor, in place where it can) and gathers each
      window's rows from them (the framework computes on the CPU); then ``indexed(partition,
      index, start)`` runs ``window`` on the held tensors until ``release()``, else it
      gathers the rows in numpy and runs ``window`` on them;
    - ``gradient(x, y, sample_weight, start)``: the flat gradient of one batch (AR-SGD);
    - ``apply(gradient)``: one optimizer step with it;
    - ``read()``: the flat weights now;
    - ``sync()``: the model's variables made current (before metrics or the learning rate are
      read); ``refresh()``: the compiled state made current after the model's variables were
      set (learning rate, metrics reset);
    - ``restart()``: a new fit begins on these calls (a reused replica): forget what was
      counted of the last one; ``plan(steps)``: the fit runs about ``steps`` local steps
      (``jit_compile="auto"``: the compiler may wait until compiling pays); ``schedule``:
      what the calls count to decide that (None where nothing is counted; a simulation keeps
      one per simulated worker).

A backend that keeps its state on the model's own variables (TensorFlow, PyTorch) leaves
``sync``/``refresh`` empty; one that keeps it outside (JAX's stateless calls) implements them.

Example (what a Python worker of a fit does; ``distkeras.executor.remote``)::

    backend = backends.prepare("jax", threads=2)      # before Keras is imported
    model = build_model(portable, loss, optimizer)
    replica = Replica(model, backend, jit_compile="auto", layout=layout)
    theta = replica.train(window, start=theta)
"""
from __future__ import annotations

import logging
import os
from typing import ClassVar

import numpy as np

log = logging.getLogger(__name__)
REGISTRY: dict[str, type["Backend"]] = {}


class Backend:
    """A Keras backend as distkeras drives it (one instance per Python process)."""

    name: ClassVar[str]
    module: ClassVar[str]            # the framework's importable module, for error messages
    extra: ClassVar[str]             # distkeras' extra that installs it
    compiler: ClassVar[str] = "XLA"  # what jit_compile=True compiles the windows with

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.name] = cls

    def __init__(self) -> None:
        self._threads: int | None = None

    def setup(self, threads: int | None = None, gpus: list[str] | None = None) -> None:
        """Import the framework once per process, pinned to ``gpus`` (``None``: all, ``[]``:
        none) and ``threads`` intra-op threads; a process that already imported it keeps its
        pools (logged)."""
        import sys

        if self.module not in sys.modules:
            if gpus is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
            self._configure(threads)
        elif gpus is not None and os.environ.get("CUDA_VISIBLE_DEVICES") != ",".join(gpus):
            log.warning("%s already initialised in this Python worker with "
                        "CUDA_VISIBLE_DEVICES=%s; task asked for GPUs %s", self.name,
                        os.environ.get("CUDA_VISIBLE_DEVICES"), gpus)
        try:
            __import__(self.module)
        except ImportError as exc:
            raise ImportError(f"Keras runs on {self.name} here but {self.module} cannot be "
                              f"imported ({exc}); install it with pip install "
                              f"'distkeras[{self.extra}]' on the driver and the executors") from exc
        if threads and self._threads is None:
            self._threads = self._set_threads(threads)
        if threads and self._threads not in (threads, None):
            log.warning("this Python worker's %s already runs %s intra-op threads; the task "
                        "asked for %d (each thread count has its own Python workers: see "
                        "distkeras.driver.resources)", self.name,
                        self._threads if self._threads > 0 else "default", threads)

    def _configure(self, threads: int | None) -> None:
        """Environment the framework reads at its import (before it is imported)."""

    def _set_threads(self, threads: int) -> int:
        """Set the intra-op threads after the import; return the count in effect (-1: the
        framework's default, it could not be changed)."""
        return threads

    def threads(self) -> int:
        """The intra-op threads this process runs."""
        return self._threads or os.cpu_count() or 1

    def accelerators(self) -> list[str]:
        """The GPUs (or other accelerators) the framework sees in this process."""
        return []

    def flat_weights(self, model, layout=None) -> "FlatWeights":
        return FlatWeights(model, layout)

    def steps(self, model, weights: "FlatWeights", jit_compile: bool) -> "Steps":
        raise NotImplementedError

    def supports_jit(self, model) -> bool:
        """Whether the backend's compiler can compile ``model``'s training step (Keras' own
        test: every layer ``supports_jit``)."""
        try:
            from keras.src.trainers.trainer import model_supports_jit
        except ImportError:  # a Keras without the helper: ask the layers
            return all(getattr(layer, "supports_jit", True) for layer in model._flatten_layers())
        return bool(model_supports_jit(model))

    def environment(self) -> dict[str, str]:
        """What a Python worker's environment needs for this backend before Keras' import."""
        return {"KERAS_BACKEND": self.name}


class FlatWeights:
    """View a model's exchanged state as one flat float32 vector, the currency of every
    exchange: ``[parameters | statistics]`` of its :class:`~distkeras.state.StateLayout`
    (the fixed state is never read nor written here). This one reads and assigns the Keras
    variables, on any backend; a backend may compile its own."""

    def __init__(self, model, layout=None):
        from distkeras.state import StateLayout

        self.layout = layout if layout is not None else StateLayout.of(model)
        weights = list(model.weights)
        self.keras_variables = [weights[i] for i in self.layout.order]
        self.shapes = [tuple(v.shape) for v in self.keras_variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.size = int(sum(self.sizes))
        if self.size != self.layout.size:
            raise ValueError(f"the model has {self.size} floats to exchange, the run's layout "
                             f"{self.layout.size}: it is not the model the driver sent")

    @property
    def params(self) -> int:
        """Where the statistics start in the vector."""
        return self.layout.params

    def get(self) -> np.ndarray:
        import keras

        if not self.keras_variables:
            return np.zeros(0, np.float32)
        return np.concatenate([np.asarray(keras.ops.convert_to_numpy(v.value),
                                          dtype=np.float32).ravel()
                               for v in self.keras_variables])

    def set(self, vector: np.ndarray) -> None:
        self.check(vector)
        offset = 0
        for v, n, s in zip(self.keras_variables, self.sizes, self.shapes):
            v.assign(np.asarray(vector[offset:offset + n]).reshape(s).astype(v.dtype))
            offset += n

    def check(self, vector: np.ndarray) -> None:
        if vector.size != self.size:
            raise ValueError(f"weight vector of {vector.size} values for a model of {self.size}")

    def split(self, vector):
        """``vector`` cut into the variables' shapes (any array type with ``reshape``)."""
        out, offset = [], 0
        for n, s in zip(self.sizes, self.shapes):
            out.append(vector[offset:offset + n].reshape(s))
            offset += n
        return out


class Steps:
    """A compiled model's training calls (see the module's docstring for the contract)."""

    def __init__(self, model, weights: FlatWeights, jit_compile: bool):
        self.model, self.weights, self.jit_compile = model, weights, jit_compile
        self.schedule = None     # what restart() forgets and plan() sets, where it is counted
        self._held = None        # (partition, its arrays as tensors) until release()

    def window(self, xs: list, ys: list, sample_weight, start: np.ndarray,
               index: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def holds_partitions(self) -> bool:
        """Whether :meth:`indexed` runs on the partition held as tensors (the framework
        computes on the CPU). False: each window is gathered in numpy and travels alone (a
        partition held in a GPU's memory could outgrow it; nothing here has tried)."""
        return False

    def indexed(self, partition, index: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Steps on rows ``index[i]`` of ``partition`` for every step ``i``: gathered inside
        the compiled window from the held partition where the backend holds partitions,
        else gathered here first."""
        if self.holds_partitions():
            xs, ys, sample_weight = self.held(partition)
            return self.window(xs, ys, sample_weight, start, index)
        from distkeras.feed import IndexedWindow

        window = IndexedWindow(partition, index).gathered
        return self.window(list(window.xs), list(window.ys), window.sample_weight, start)

    def held(self, partition) -> tuple[list, list, object]:
        """``partition``'s inputs, targets and sample weights (or None) as tensors, converted
        on its first window and kept until another partition comes or :meth:`release`: its
        ``storage`` where it has one (the tensors' shape is then its capacity, shared by
        partitions of similar sizes, and so is the compiled window)."""
        if self._held is None or self._held[0] is not partition:
            self._held = None                  # the last partition's tensors go first
            whole = partition if partition.storage is None else partition.storage
            tensors = ([self.tensor(x) for x in whole.xs], [self.tensor(y) for y in whole.ys],
                       None if whole.sample_weight is None else self.tensor(whole.sample_weight))
            self._held = (partition, tensors)
        return self._held[1]

    def tensor(self, array: np.ndarray):
        """``array`` as this backend's tensor (sharing its memory where the backend can)."""
        import keras

        return keras.ops.convert_to_tensor(array)

    def release(self) -> None:
        """Forget the partition held for :meth:`indexed` (the fit is over)."""
        self._held = None

    def gradient(self, x: list, y: list, sample_weight, start: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def apply(self, gradient: np.ndarray) -> None:
        raise NotImplementedError

    def read(self) -> np.ndarray:
        return self.weights.get()

    def sync(self) -> None:
        """The model's variables made current."""

    def refresh(self) -> None:
        """The compiled state made current from the model's variables."""

    def restart(self) -> None:
        """A new fit begins on these calls: what they counted of the last fit is forgotten."""

    def plan(self, steps: int | None) -> None:
        """The fit runs about ``steps`` local steps (None: not known), and its compiler may
        wait to see whether compiling them pays (``jit_compile="auto"``)."""


def warn_uncompiled(compiler: str, exc: BaseException) -> None:
    """Say that ``compiler`` could not compile a model's training step and that training goes
    on without it."""
    log.warning("%s could not compile the training step (%s: %s); training without it (pass "
                "jit_compile=False to skip the attempt)", compiler, type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "")


def structure(tensors: list):
    """One tensor for one input (or output), the list for several, as Keras' steps take them."""
    return tensors[0] if len(tensors) == 1 else list(tensors)


def compilation_cache() -> str | None:
    """Where a worker's compiler keeps what it compiled, across processes (a cold fit of a
    model compiled before skips the compilation: -0.6 s for TensorFlow's first window on the
    Fashion-shaped MLP, -1 s for JAX's): ``DISTKERAS_COMPILATION_CACHE`` (``off`` for none),
    else a directory of the system's temporary one (node-local: keep a shared one to machines
    of one CPU type). Entries are keyed by the compiled program itself, so a stale one is
    never used.

    Example::

        os.environ["DISTKERAS_COMPILATION_CACHE"] = "/scratch/me/xla"   # before the fit
    """
    import getpass
    import tempfile

    chosen = os.environ.get("DISTKERAS_COMPILATION_CACHE")
    if chosen is not None:
        return None if chosen.lower() in ("", "0", "off", "false", "none") else chosen
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"distkeras-compilation-cache-{user}")
