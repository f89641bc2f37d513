"""Data-parallel training algorithms: a worker rule plus a server rule (parameter-server
algorithms, see ``base``), or a rule over the workers' peer exchanges (``allreduce``,
``decentralised``, ``swarmsgd``, ``slowmo``). Every module of this package is imported here, and
each rule registers itself and the trainers made from it (``registry``): a new algorithm is a
new module.
"""
import importlib
import pkgutil

from distkeras.algorithms.base import EXCHANGES_PER_EPOCH, Algorithm, WorkerRecord
from distkeras.algorithms.registry import (TrainerSpec, algorithm_classes, get, parameters,
                                           register, trainer_spec, trainer_specs)
from distkeras.scaling import LEARNING_RATE_SCALINGS

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
globals().update({cls.__name__: cls for cls in algorithm_classes().values()})

REGISTRY = algorithm_classes()      # name → class (kept for code that used the dict)

__all__ = ["Algorithm", "WorkerRecord", "TrainerSpec", "EXCHANGES_PER_EPOCH",
           "LEARNING_RATE_SCALINGS", "REGISTRY", "get",
           "register", "algorithm_classes", "parameters", "trainer_spec", "trainer_specs",
           *sorted(cls.__name__ for cls in algorithm_classes().values())]
