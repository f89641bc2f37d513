"""Sample generators. ``generate_delphes`` writes a Delphes-like QCD / tt̄ / W+jets sample.

Example::

    from distkeras.datasets import generate_delphes
    paths = generate_delphes("sample", n_events=10_000, seed=1)
"""
from __future__ import annotations


def __getattr__(name: str):
    if name in ("generate_delphes", "PROCESSES"):
        from distkeras.datasets import delphes

        return getattr(delphes, name)
    raise AttributeError(f"module 'distkeras.datasets' has no attribute {name!r}")
