"""Learnable data sets shared by the tests: Gaussian blobs with overlap (a single-worker Keras
model reaches ~0.9 accuracy, not 1.0, so a trainer that does not train shows)."""
from __future__ import annotations

import numpy as np


def blobs(n: int = 4000, dim: int = 8, classes: int = 3, seed: int = 0, spread: float = 0.6):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(classes, dim)) * spread
    y = rng.integers(0, classes, n)
    x = (centres[y] + rng.normal(size=(n, dim))).astype(np.float32)
    return x, y.astype(np.int64)


def blobs_df(spark, n: int = 4000, dim: int = 8, classes: int = 3, seed: int = 0, partitions=4):
    """DataFrame with ``features`` array<float> and ``label`` bigint columns."""
    import pandas as pd

    x, y = blobs(n, dim, classes, seed)
    df = spark.createDataFrame(pd.DataFrame({"features": list(x), "label": y}),
                               schema="features array<float>, label bigint")
    return df.repartition(partitions)


def mlp(dim: int = 8, classes: int = 3, hidden: int = 16):
    import keras

    return keras.Sequential([keras.Input((dim,)), keras.layers.Dense(hidden, activation="relu"),
                             keras.layers.Dense(classes, activation="softmax")])
