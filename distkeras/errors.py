"""Errors that say what a user brought cannot do, and how to fix it."""
from __future__ import annotations


class ModelError(ValueError):
    """The Keras model cannot travel as it is; the message says why and what to change."""
