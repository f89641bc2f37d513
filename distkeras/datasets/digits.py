"""scikit-learn's bundled handwritten digits (1,797 images of 8×8, 10 classes) as a Spark
DataFrame: a quick image set for MLP/CNN studies that needs no download.

Example::

    from distkeras.datasets.digits import digits_dataframe, digits_mlp
    train, test = digits_dataframe(spark).randomSplit([0.8, 0.2], seed=0)
    model = digits_mlp()                     # features (64,) → 10 classes
"""
from __future__ import annotations

import numpy as np

FEATURES, LABEL = "features", "label"


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(x, y): x float32 (1797, 64) scaled to [0, 1], y int64 class 0..9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits set comes with scikit-learn: pip install scikit-learn "
                          "(or the distkeras extra [study])") from None
    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target.astype(np.int64)


def digits_dataframe(spark, partitions: int = 4):
    """``features`` array<float> (64) and ``label`` bigint columns."""
    import pandas as pd

    x, y = digits_arrays()
    return spark.createDataFrame(pd.DataFrame({FEATURES: list(x), LABEL: y}),
                                 schema=f"{FEATURES} array<float>, {LABEL} bigint"
                                 ).repartition(partitions)


def digits_mlp(hidden: int = 64):
    """Dense ``hidden``-32 ReLU → softmax(10) on the flat 64 pixels."""
    import keras

    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(hidden, activation="relu"),
                             keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def digits_cnn():
    """Conv 16 (3×3) → Conv 32 (3×3) → Dense 10 on the 8×8 image (reshaped from 64 values)."""
    import keras

    return keras.Sequential([keras.Input((64,)), keras.layers.Reshape((8, 8, 1)),
                             keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
                             keras.layers.Conv2D(32, 3, activation="relu"),
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(10, activation="softmax")])
