"""Old names kept working: one name per concept in the API, the names of earlier releases
accepted with a ``DeprecationWarning`` that says the new one.

Example::

    @renamed_keywords(label_column="label_col")
    def read_root(spark, paths, *, label_col="label"): ...

    read_root(spark, paths, label_column="y")     # works, and warns: use label_col=
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable


def renamed_keywords(**renamed: str) -> Callable:
    """Decorator: keyword ``old`` of the decorated function is now called ``renamed[old]``."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in renamed.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__name__}() got both {old}= (its old name) and "
                                        f"{new}=")
                    warnings.warn(f"{fn.__name__}(): {old}= is now called {new}=",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate
