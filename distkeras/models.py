"""The topology-classifier models (Nguyen et al. 2019) as Keras 3 functional models.

* `hlf_classifier`: HLF (14) → Dense 50-20-10 ReLU → softmax (3).
* `particle_sequence_classifier`: LLF (801, 19) → Masking(0.) → GRU(50) → Dropout 0.2 → softmax.
* `inclusive_classifier`: inputs ``llf`` (801, 19) and ``hlf`` (14): [Masking → GRU(50)] ⊕
  [Dropout 0.2 on HLF] → Dense 25 ReLU → softmax (≈12k parameters).

All are compiled with Adam + categorical cross-entropy + accuracy unless ``compile=False``.
Keras is imported inside the functions, so ``import distkeras.models`` does not import TensorFlow.

Example::

    model = distkeras.models.inclusive_classifier()
    model.fit({"llf": llf, "hlf": hlf}, y_onehot)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import keras

NUM_CLASSES = 3
HLF_DIM = 14
LLF_SHAPE = (801, 19)


def _compile(model: "keras.Model", compile: bool, optimizer: Any, learning_rate: float | None,
             loss: Any = "categorical_crossentropy") -> "keras.Model":
    if compile:
        import keras

        if optimizer == "adam" and learning_rate is not None:
            optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model


def hlf_classifier(input_dim: int = HLF_DIM, num_classes: int = NUM_CLASSES, compile: bool = True,
                   optimizer: Any = "adam", learning_rate: float | None = None,
                   name: str = "hlf_classifier") -> "keras.Model":
    """Dense 50-20-10 (ReLU) → ``num_classes`` softmax on the HLF vector (2,013 parameters)."""
    import keras
    from keras import layers

    x = inp = keras.Input(shape=(input_dim,), name="hlf")
    for units in (50, 20, 10):
        x = layers.Dense(units, activation="relu")(x)
    out = layers.Dense(num_classes, activation="softmax", name="output")(x)
    return _compile(keras.Model(inp, out, name=name), compile, optimizer, learning_rate)


def particle_sequence_classifier(num_particles: int = LLF_SHAPE[0], num_features: int = LLF_SHAPE[1],
                                 num_classes: int = NUM_CLASSES, gru_units: int = 50,
                                 compile: bool = True, optimizer: Any = "adam",
                                 learning_rate: float | None = None,
                                 name: str = "particle_sequence_classifier") -> "keras.Model":
    """Masking(0.) → GRU(50) → Dropout 0.2 → softmax on the LLF sequence (10,803 parameters).

    Padding rows must be exactly zero (they are, through `TopologyFeatures` and the LLF
    standardiser) for the mask to skip them.
    """
    import keras
    from keras import layers

    inp = keras.Input(shape=(num_particles, num_features), name="llf")
    x = layers.Masking(mask_value=0.0)(inp)
    x = layers.GRU(gru_units)(x)
    x = layers.Dropout(0.2)(x)
    out = layers.Dense(num_classes, activation="softmax", name="output")(x)
    return _compile(keras.Model(inp, out, name=name), compile, optimizer, learning_rate)


def inclusive_classifier(num_particles: int = LLF_SHAPE[0], num_features: int = LLF_SHAPE[1],
                         hlf_dim: int = HLF_DIM, num_classes: int = NUM_CLASSES,
                         gru_units: int = 50, compile: bool = True, optimizer: Any = "adam",
                         learning_rate: float | None = None,
                         name: str = "inclusive_classifier") -> "keras.Model":
    """GRU branch on ``llf`` ⊕ Dropout(0.2) on ``hlf`` → Dense 25 ReLU → softmax (12,353 params).

    Inputs, in this order: ``llf`` (801, 19) and ``hlf`` (14); feed a list or a dict by name.
    """
    import keras
    from keras import layers

    llf = keras.Input(shape=(num_particles, num_features), name="llf")
    hlf = keras.Input(shape=(hlf_dim,), name="hlf")
    x = layers.Masking(mask_value=0.0)(llf)
    x = layers.GRU(gru_units)(x)
    h = layers.Dropout(0.2)(hlf)
    x = layers.Concatenate()([x, h])
    x = layers.Dense(25, activation="relu")(x)
    out = layers.Dense(num_classes, activation="softmax", name="output")(x)
    return _compile(keras.Model([llf, hlf], out, name=name), compile, optimizer, learning_rate)
