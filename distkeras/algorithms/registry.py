"""The one list of algorithms: each algorithm registers itself where its rule is written, with
the trainers made from it; the trainers (``distkeras.trainers``), the study's lists, SlowMo's
bases, the Params of an algorithm's own parameters and the error messages that name algorithms
are all derived from here.

A first-class algorithm is one new module in ``distkeras/algorithms/`` (imported with the
package; it imports what it builds on from the modules, not from the package)::

    from distkeras.algorithms.asynchronous import DOWNPOUR
    from distkeras.algorithms.registry import TrainerSpec, register

    @register
    class HalfStep(DOWNPOUR):
        \"\"\"θ̃ ← θ̃ + Δ/2.\"\"\"
        name = "halfstep"
        trainers = (TrainerSpec("HalfStep", "halfstep", "DOWNPOUR at half the step"),)

        def server_commit(self, centre, payload, worker, version):
            centre += payload * np.float32(0.5)
            return centre

and ``dk.trainers.HalfStep``, ``Study(algorithms=["halfstep"])`` and ``jobs/train.py --trainer
HalfStep`` exist.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

#: the arguments every algorithm takes; its own parameters are the others
COMMON_ARGUMENTS = ("communication_window", "learning_rate", "num_workers")

_CLASSES: dict[str, type] = {}                  # algorithm name → its class
_TRAINERS: dict[str, tuple[type, "TrainerSpec"]] = {}   # trainer key → (class, spec)


@dataclass(frozen=True)
class TrainerSpec:
    """A trainer made from an algorithm.

    ``name`` is the trainer's class name (``dk.trainers.LocalSGD``), ``key`` its name on command
    lines and in studies (``localsgd``), ``doc`` its docstring; ``defaults`` and ``fixed`` the
    Params it sets (``fixed``: which the user cannot change), ``default_optimizer`` the workers'
    optimizer when neither ``worker_optimizer=`` nor the model's compile gives one;
    ``slowmo_base``: the base's settings when SlowMo wraps it (None: SlowMo cannot).
    """

    name: str
    key: str
    doc: str
    defaults: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    default_optimizer: Any = "adam"
    slowmo_base: dict[str, Any] | None = None


def register(cls: type) -> type:
    """Class decorator: make the algorithm ``cls`` (and the trainers it lists in ``trainers``)
    known."""
    if "name" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} inherits the name {cls.name!r}; a registered algorithm "
                        "gives its own (name = \"...\")")
    if cls.name in _CLASSES and _CLASSES[cls.name].__qualname__ != cls.__qualname__:
        raise ValueError(f"algorithm name {cls.name!r} is taken by {_CLASSES[cls.name].__name__}")
    _CLASSES[cls.name] = cls
    for spec in cls.__dict__.get("trainers", ()):
        if spec.key in _TRAINERS and _TRAINERS[spec.key][0] is not cls:
            raise ValueError(f"trainer key {spec.key!r} is taken by "
                             f"{_TRAINERS[spec.key][0].__name__}")
        _TRAINERS[spec.key] = (cls, spec)
    return cls


def algorithm_classes() -> dict[str, type]:
    """Algorithm name → class, in registration order."""
    return dict(_CLASSES)


def get(name: str, **kwargs):
    """Instantiate an algorithm by its name (``"adag"``, ``"downpour"``, ``"adpsgd"``, ...)."""
    try:
        cls = _CLASSES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; known: {sorted(_CLASSES)}") from None
    return cls(**kwargs)


def trainer_specs() -> list[tuple[type, TrainerSpec]]:
    """``(class, spec)`` of every registered trainer, in registration order."""
    return list(_TRAINERS.values())


def trainer_spec(key: str) -> tuple[type, TrainerSpec]:
    """The trainer of a key (``"localsgd"``), case-insensitive."""
    try:
        return _TRAINERS[key.lower()]
    except KeyError:
        raise ValueError(f"unknown algorithm {key!r}; known: {sorted(_TRAINERS)}") from None


def slowmo_bases() -> dict[str, tuple[type, TrainerSpec]]:
    """The trainers SlowMo can wrap, by key."""
    return {k: v for k, v in _TRAINERS.items() if v[1].slowmo_base is not None}


def windowed() -> list[str]:
    """Keys of the trainers whose communication window λ is a setting to tune (swept by
    studies): the rule says so, and the trainer has more than one worker."""
    return [k for k, (cls, spec) in _TRAINERS.items()
            if cls.windowed and spec.fixed.get("num_workers", 2) > 1]


def asynchronous_parameter_server() -> list[str]:
    """Keys of the trainers whose workers commit to the driver's parameter server without
    waiting for each other (DOWNPOUR, ADAG, ...): staleness is theirs."""
    return [k for k, (cls, spec) in _TRAINERS.items()
            if cls.exchange_type.needs_parameter_server and not cls.synchronous
            and spec.fixed.get("num_workers", 2) > 1]


def overlapping() -> list[str]:
    """Names of the trainers whose commits can overlap their windows."""
    return [spec.name for cls, spec in _TRAINERS.values()
            if cls.exchange_type.can_overlap and not cls.synchronous]


def parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The named parameters an algorithm's ``__init__`` accepts beyond
    :data:`COMMON_ARGUMENTS`, through its class hierarchy (an algorithm passing ``**params`` on
    to its parent accepts the parent's too), plus what its ``extra_parameters()`` declares
    (SlowMo: its bases')."""
    found: dict[str, inspect.Parameter] = {}
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        signature = inspect.signature(init)
        for name, param in signature.parameters.items():
            if name == "self" or name in COMMON_ARGUMENTS or param.kind in (
                    param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            found.setdefault(name, param)
        if not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
            break
    for extra in getattr(cls, "extra_parameters", lambda: {})().items():
        found.setdefault(*extra)
    return found
