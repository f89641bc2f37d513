"""How the workers' learning rate η grows with their number n: the choices of the trainers'
``learning_rate_scaling`` ("auto" takes the algorithm's own, its ``learning_rate_scaling``).

Example::

    LEARNING_RATE_SCALINGS["elastic"](4)     # 5.0: η·(n+1)
"""
from __future__ import annotations

from typing import Callable

#: how the workers' learning rate η grows with their number n (the trainers'
#: ``learning_rate_scaling``; "auto" takes the algorithm's own): the factor for n workers
LEARNING_RATE_SCALINGS: dict[str, Callable[[int], float]] = {
    "none": lambda n: 1.0,
    "linear": lambda n: float(n),          # the run's model moves by the mean of n workers
    "sqrt": lambda n: float(n) ** 0.5,
    "elastic": lambda n: float(n) + 1.0,   # ... of n workers and the centre variable
}
