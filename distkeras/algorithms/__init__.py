"""Data-parallel training algorithms, each a worker rule plus a server rule (see ``base``)."""
from distkeras.algorithms.asynchronous import ADAG, AEASGD, AGN, DOWNPOUR, EAMSGD, DynSGD, Hogwild
from distkeras.algorithms.base import Algorithm, WorkerRecord
from distkeras.algorithms.synchronous import EASGD, Averaging, Ensemble

REGISTRY = {cls.name: cls for cls in (DOWNPOUR, Hogwild, AGN, ADAG, DynSGD, AEASGD, EAMSGD,
                                      Averaging, EASGD, Ensemble)}


def get(name: str, **kwargs) -> Algorithm:
    """Instantiate an algorithm by its name (``"adag"``, ``"downpour"``, ...)."""
    try:
        cls = REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; known: {sorted(REGISTRY)}") from None
    return cls(**kwargs)


__all__ = ["Algorithm", "WorkerRecord", "REGISTRY", "get", "DOWNPOUR", "Hogwild", "AGN", "ADAG",
           "DynSGD", "AEASGD", "EAMSGD", "Averaging", "EASGD", "Ensemble"]
