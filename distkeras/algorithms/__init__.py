"""Data-parallel training algorithms: a worker rule plus a server rule (parameter-server
algorithms, see ``base``), or a rule over the workers' peer exchanges (``allreduce``,
``decentralised``, ``slowmo``)."""
from distkeras.algorithms.allreduce import ARSGD
from distkeras.algorithms.asynchronous import ADAG, AEASGD, AGN, DOWNPOUR, EAMSGD, DynSGD, Hogwild
from distkeras.algorithms.base import Algorithm, WorkerRecord
from distkeras.algorithms.decentralised import ADPSGD, DPSGD, SwarmSGD
from distkeras.algorithms.slowmo import SlowMo
from distkeras.algorithms.synchronous import EASGD, Averaging, Ensemble

REGISTRY = {cls.name: cls for cls in (DOWNPOUR, Hogwild, AGN, ADAG, DynSGD, AEASGD, EAMSGD,
                                      Averaging, EASGD, Ensemble, ARSGD, DPSGD, ADPSGD, SwarmSGD,
                                      SlowMo)}


def get(name: str, **kwargs) -> Algorithm:
    """Instantiate an algorithm by its name (``"adag"``, ``"downpour"``, ``"adpsgd"``, ...)."""
    try:
        cls = REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; known: {sorted(REGISTRY)}") from None
    return cls(**kwargs)


__all__ = ["Algorithm", "WorkerRecord", "REGISTRY", "get", "DOWNPOUR", "Hogwild", "AGN", "ADAG",
           "DynSGD", "AEASGD", "EAMSGD", "Averaging", "EASGD", "Ensemble", "ARSGD", "DPSGD",
           "ADPSGD", "SwarmSGD", "SlowMo"]
