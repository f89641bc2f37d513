"""The Keras models users write, trained on real Spark as a Keras user would train them: custom
layers from a notebook, subclassed models, adapted preprocessing, BatchNorm, several inputs and
outputs, sample and class weights, mixed precision, and a worker that raises.

Each is compared with what Keras itself does with the same model: its own ``model.fit`` for
accuracy, its own ``.keras`` round trip for state.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import distkeras as dk

N, DIM, CLASSES, EPOCHS, BATCH = 3000, 10, 3, 5, 64
FACTORS = np.logspace(-1, 3, DIM)
UNIT = (1.0 / FACTORS).tolist()        # per-feature scale that brings the features to O(1)


def scales(n: int = N, seed: int = 0):
    """10 features spanning four orders of magnitude, 3 overlapping classes."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(CLASSES, DIM))
    y = rng.integers(0, CLASSES, n)
    x = ((centres[y] + rng.normal(size=(n, DIM)) * 1.2) * FACTORS + FACTORS).astype("float32")
    return x, y


@pytest.fixture(scope="module")
def data(spark):
    from distkeras.spark import arrays_to_dataframe

    x, y = scales()
    weight = np.where(y == 2, 2.0, 1.0).astype("float32")
    df = arrays_to_dataframe(spark, {"features": x, "a": x[:, :5].copy(), "b": x[:, 5:].copy(),
                                     "label": y, "big": (x[:, 9] > np.median(x[:, 9])
                                                         ).astype("int64"),
                                     "weight": weight,
                                     "onehot": np.eye(CLASSES, dtype="float32")[y]},
                             partitions=2).cache()
    df.count()
    return df, (x, y), scales(1500, seed=1)


def accuracy(predict, test) -> float:
    x, y = test
    return float((np.asarray(predict(x)).argmax(axis=1) == y).mean())


def keras_accuracy(build, train, test, **fit) -> float:
    """Plain ``model.fit`` on the same rows and epochs: the reference."""
    import keras

    keras.utils.set_random_seed(1)
    model = build()
    model.fit(train[0], train[1], batch_size=BATCH, epochs=EPOCHS, verbose=0, **fit)
    return accuracy(lambda x: model.predict(x, verbose=0), test)


def compiled(model, **kw):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], **kw)
    return model


def host(tensor) -> np.ndarray:
    """A tensor or variable in host memory as float32, on any backend (numpy has no bfloat16,
    which PyTorch's tensors cannot be converted from)."""
    import keras

    return keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float32"))


def fit(trainer_name: str, model, df, **kw):
    import keras

    keras.utils.set_random_seed(1)
    extra = {} if trainer_name == "SingleTrainer" else {"num_workers": 2}
    return getattr(dk.trainers, trainer_name)(model, batch_size=BATCH, epochs=EPOCHS,
                                              verbose=False, **{**extra, **kw}).fit(df)


# -- a custom layer from a notebook -------------------------------------------------------------
def notebook_layer():
    """A layer as a notebook defines it: its class lives in ``__main__`` of the driver only,
    so an executor can get it by value and in no other way."""
    import keras

    registered = keras.saving.get_custom_objects().get("notebook>Scaled")
    if registered is not None:          # a notebook's cell runs once
        return registered

    class Scaled(keras.layers.Layer):
        def __init__(self, factor=1.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * keras.ops.convert_to_tensor(self.factor, dtype=x.dtype)

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    Scaled.__module__ = "__main__"
    Scaled.__qualname__ = "Scaled"
    return keras.saving.register_keras_serializable(package="notebook")(Scaled)


def test_a_custom_layer_from_a_notebook_trains_transforms_saves_and_loads(spark, data,
                                                                          tmp_path):
    import keras

    df, train, test = data
    Scaled = notebook_layer()

    def build():
        return compiled(keras.Sequential([keras.Input((DIM,)), Scaled(UNIT),
                                          keras.layers.Dense(32, activation="relu"),
                                          keras.layers.Dense(CLASSES, activation="softmax")]))

    fitted = fit("ADAG", build(), df)
    acc = accuracy(lambda x: fitted.predict([x]), test)
    reference = keras_accuracy(build, train, test)
    assert acc >= reference - 0.03, (acc, reference)      # as model.fit (chance is 0.33)
    scored = fitted.transform(spark.createDataFrame(
        [(list(map(float, row)),) for row in test[0][:50]], "features array<float>"))
    probabilities = np.array([r.probability.toArray() for r in scored.collect()])
    np.testing.assert_allclose(probabilities, fitted.keras_model.predict(test[0][:50], verbose=0),
                               rtol=1e-5, atol=1e-6)
    fitted.save(str(tmp_path / "model"))
    keras.saving.get_custom_objects().pop("notebook>Scaled")   # a fresh process would not know it
    with pytest.raises(TypeError, match=r"needs a custom object .*custom_objects="):
        dk.load_model(str(tmp_path / "model"))
    again = dk.load_model(str(tmp_path / "model"), custom_objects={"notebook>Scaled": Scaled})
    np.testing.assert_allclose(again.predict([test[0][:50]]), fitted.predict([test[0][:50]]),
                               rtol=1e-6)


def test_an_unregistered_custom_layer_travels_as_custom_objects(data):
    import keras

    df, _, test = data

    class Clip(keras.layers.Layer):           # not registered: Keras looks it up by name
        def call(self, x):
            return keras.ops.clip(x, -5.0, 5.0)

    model = compiled(keras.Sequential([keras.Input((DIM,)), keras.layers.Rescaling(UNIT),
                                       Clip(), keras.layers.Dense(32, activation="relu"),
                                       keras.layers.Dense(CLASSES, activation="softmax")]))
    fitted = fit("DOWNPOUR", model, df, custom_objects={"Clip": Clip})
    assert accuracy(lambda x: fitted.predict([x]), test) > 0.55      # learned (chance: 0.33)


def test_a_layer_whose_config_forgets_an_argument_is_refused_at_once(data):
    """Rebuilt from its config on the executors it would be another model: refused in a
    second, naming the layer and the argument, instead of training something else."""
    import keras

    df, _, _ = data

    class Forgetful(keras.layers.Layer):
        def __init__(self, factor=1.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor

        def get_config(self):            # the classic slip: factor is left out
            return super().get_config()

    model = keras.Sequential([keras.Input((DIM,)), Forgetful(1e-3, name="forgetful"),
                              keras.layers.Dense(CLASSES, activation="softmax")])
    t0 = time.monotonic()
    with pytest.raises(dk.ModelError, match=r"'forgetful' \(Forgetful\) has factor=0.001 in "
                                            r"your model but factor=1.0 .*get_config"):
        fit("ADAG", compiled(model), df, custom_objects={"Forgetful": Forgetful})
    assert time.monotonic() - t0 < 5
    # a trainer's copy (fit with a param map, CrossValidator) is checked as fit checks
    trainer = dk.trainers.ADAG(compiled(model), num_workers=2,
                               custom_objects={"Forgetful": Forgetful})
    with pytest.raises(dk.ModelError, match=r"has factor=0.001 in your model but factor=1.0"):
        trainer.fit(df, {trainer.learning_rate: 3e-3})

    class Frozen(keras.layers.Layer):       # the same slip, on what decides trainability
        def __init__(self, learn=True, **kwargs):
            super().__init__(**kwargs)
            self.learn = learn

        def build(self, shape):
            self.w = self.add_weight(name="w", shape=(shape[-1],), initializer="ones",
                                     trainable=self.learn)

        def call(self, x):
            return x * self.w

        def get_config(self):            # learn is left out
            return super().get_config()

    model = keras.Sequential([keras.Input((DIM,)), Frozen(False, name="frozen"),
                              keras.layers.Dense(CLASSES, activation="softmax")])
    with pytest.raises(dk.ModelError, match=r"frozen/w.* is not trainable in your model but "
                                            r"trainable when the model is rebuilt"):
        fit("ADAG", compiled(model), df, custom_objects={"Frozen": Frozen})


# -- subclassed models ----------------------------------------------------------------------------
class Subclassed:
    """Built lazily: keras is imported inside the tests."""

    @staticmethod
    def serialisable():
        import keras

        class TwoLayers(keras.Model):
            def __init__(self, units=32, **kwargs):
                super().__init__(**kwargs)
                self.units = units
                self.scale = keras.layers.Rescaling(UNIT)
                self.hidden = keras.layers.Dense(units, activation="relu")
                self.out = keras.layers.Dense(CLASSES, activation="softmax")

            def call(self, x):
                return self.out(self.hidden(self.scale(x)))

        return TwoLayers

    @staticmethod
    def own_step():
        TwoLayers = Subclassed.serialisable()

        class Reversed(TwoLayers):
            """Its own train_step: it trains on the classes in reverse order (something no
            loss says, so a trainer that skipped it would learn the classes as they are)."""

            def train_step(self, *args):      # (data) on TF and PyTorch, (state, data) on JAX
                *state, data = args
                x, y, *rest = data
                return super().train_step(*state, (x, (CLASSES - 1) - y, *rest))

        return Reversed

    @staticmethod
    def opaque():
        import keras

        class Stack(keras.Model):            # its __init__ takes layers: no config Keras can write
            def __init__(self, layers):
                super().__init__()
                self.stack = layers

            def call(self, x):
                for layer in self.stack:
                    x = layer(x)
                return x

        return Stack


def test_a_subclassed_model_called_on_data_trains(data):
    df, train, test = data
    TwoLayers = Subclassed.serialisable()

    def build():
        model = TwoLayers()
        model(train[0][:2])                 # built, as a Keras user builds it
        return compiled(model)

    fitted = fit("AveragingTrainer", build(), df)
    assert type(fitted.keras_model).__name__ == "TwoLayers"
    acc, reference = accuracy(lambda x: fitted.predict([x]), test), keras_accuracy(build, train,
                                                                                   test)
    assert acc >= reference - 0.03, (acc, reference)


def test_a_model_with_its_own_train_step_trains_with_it_or_is_refused(data):
    """The windows run the model's own ``train_step``, as ``model.fit`` does; AR-SGD, which
    computes gradients itself, refuses the model before reading the data instead of training
    it as if it had no ``train_step``."""
    df, train, test = data
    Reversed = Subclassed.own_step()

    def build():
        model = Reversed()
        model(train[0][:2])
        return compiled(model)

    reversed_test = (test[0], (CLASSES - 1) - test[1])
    reference = keras_accuracy(build, train, reversed_test)
    assert reference > 0.8, reference            # the premise: model.fit ran the train_step
    fitted = fit("ADAG", build(), df)
    assert accuracy(lambda x: fitted.predict([x]), reversed_test) >= reference - 0.03
    t0 = time.monotonic()
    with pytest.raises(dk.ModelError, match=r"ARSGD: Reversed overrides train_step.*LocalSGD"):
        fit("ARSGD", build(), df)
    assert time.monotonic() - t0 < 5


def test_subclassed_models_keras_cannot_rebuild_are_refused_with_the_fix(data):
    import keras

    df, train, _ = data
    Stack = Subclassed.opaque()
    model = Stack([keras.layers.Dense(8), keras.layers.Dense(CLASSES, activation="softmax")])
    model(train[0][:2])
    t0 = time.monotonic()
    with pytest.raises(dk.ModelError, match=r"Stack is a subclassed keras.Model that Keras "
                                            r"cannot rebuild .*get_config\(\).*functional API"):
        fit("ADAG", compiled(model), df)
    unbuilt = Subclassed.serialisable()()
    with pytest.raises(dk.ModelError, match=r"no weights yet: .*model\(x\[:1\]\)"):
        fit("ADAG", compiled(unbuilt), df)
    assert time.monotonic() - t0 < 5


# -- state that is not trainable -----------------------------------------------------------------
def test_the_state_layout_says_what_is_exchanged_and_what_is_kept():
    import keras

    from distkeras.state import StateLayout

    norm = keras.layers.Normalization(name="norm")
    norm.adapt(np.random.default_rng(0).normal(size=(64, DIM)).astype("float32"))
    frozen = keras.layers.Dense(4, name="frozen")
    model = keras.Sequential([keras.Input((DIM,)), norm, frozen,
                              keras.layers.BatchNormalization(name="bn"),
                              keras.layers.Dropout(0.1), keras.layers.Dense(CLASSES, name="head")],
                             name="net")
    frozen.trainable = False
    layout = StateLayout.of(model)
    paths = [w.path for w in model.weights]
    assert [paths[i] for i in layout.parameters] == ["net/bn/gamma", "net/bn/beta",
                                                     "net/head/kernel", "net/head/bias"]
    assert [paths[i] for i in layout.statistics] == ["net/bn/moving_mean",
                                                     "net/bn/moving_variance"]
    assert set(layout.fixed) == {"norm/mean", "norm/variance", "norm/count",
                                 "net/frozen/kernel", "net/frozen/bias"}
    assert layout.params == 2 * 4 + 4 * CLASSES + CLASSES and layout.size == layout.params + 8


@pytest.mark.parametrize("trainer", ["DOWNPOUR", "ARSGD", "SlowMo"])
def test_an_adapted_normalization_keeps_its_statistics_bit_exactly(spark, data, trainer,
                                                                   tmp_path):
    import keras

    df, train, test = data
    norm = keras.layers.Normalization()
    norm.adapt(train[0])
    model = compiled(keras.Sequential([keras.Input((DIM,)), norm,
                                       keras.layers.Dense(32, activation="relu"),
                                       keras.layers.Dense(CLASSES, activation="softmax")]))
    mean, variance = np.array(norm.mean), np.array(norm.variance)
    fitted = fit(trainer, model, df)
    again = fitted.keras_model.layers[0]
    np.testing.assert_array_equal(np.array(again.mean), mean)
    np.testing.assert_array_equal(np.array(again.variance), variance)
    assert accuracy(lambda x: fitted.predict([x]), test) > 0.75       # normalised inputs learn
    fitted.save(str(tmp_path / "norm"))
    loaded = dk.load_model(str(tmp_path / "norm")).keras_model.layers[0]
    np.testing.assert_array_equal(np.array(loaded.mean), mean)
    scored = fitted.transform(spark.createDataFrame(
        [(list(map(float, row)),) for row in test[0][:20]], "features array<float>"))
    got = np.array([r.probability.toArray() for r in scored.collect()])
    np.testing.assert_allclose(got, fitted.keras_model.predict(test[0][:20], verbose=0),
                               rtol=1e-5, atol=1e-6)


def batchnorm_model():
    import keras

    return compiled(keras.Sequential([
        keras.Input((DIM,)), keras.layers.BatchNormalization(),
        keras.layers.Dense(32, activation="relu"), keras.layers.BatchNormalization(),
        keras.layers.Dropout(0.2), keras.layers.Dense(CLASSES, activation="softmax")]))


@pytest.fixture(scope="module")
def batchnorm_reference(data):
    _, train, test = data
    return keras_accuracy(batchnorm_model, train, test)


@pytest.mark.parametrize("trainer", ["ADAG", "AveragingTrainer", "ARSGD", "ADPSGD", "SlowMo",
                                     "EnsembleTrainer"])
def test_a_batchnorm_model_reaches_keras_accuracy(data, batchnorm_reference, trainer):
    """One algorithm of every family (asynchronous and synchronous parameter server, ring,
    gossip, SlowMo, ensemble), at its defaults, within 3 points of Keras' own model.fit."""
    df, _, test = data
    fitted = fit(trainer, batchnorm_model(), df)
    acc = accuracy(lambda x: fitted.predict([x]), test)
    print(f"{trainer}: {acc:.3f} (keras {batchnorm_reference:.3f})")
    assert acc >= batchnorm_reference - 0.03, (acc, batchnorm_reference)
    for model in fitted.members or [fitted.keras_model]:   # the statistics came back trained
        assert np.abs(np.array(model.layers[0].moving_mean)).max() > 1.0


# -- several inputs and outputs, weights --------------------------------------------------------
def two_inputs_two_outputs(named: bool = False):
    """Two inputs; outputs ``cls`` then ``big``: a list, or a dict in that order (Keras then
    orders them by name, ``big`` first, so an order taken from the dict would swap them)."""
    import keras

    a, b = keras.Input((5,), name="a"), keras.Input((5,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Normalization(name="na")(a),
                                    keras.layers.Normalization(name="nb")(b)])
    h = keras.layers.Dense(32, activation="relu")(h)
    cls = keras.layers.Dense(CLASSES, activation="softmax", name="cls")(h)
    big = keras.layers.Dense(1, activation="sigmoid", name="big")(h)
    return keras.Model([a, b], {"cls": cls, "big": big} if named else [cls, big])


@pytest.mark.parametrize("named", [False, True], ids=["list", "dict"])
def test_several_inputs_and_outputs_train_and_transform_each_output(spark, data, named):
    df, train, test = data
    big = (train[0][:, 9] > np.median(train[0][:, 9])).astype("int64")
    labels = {"cls": "label", "big": "big"} if named else ["label", "big"]

    def build():
        model = two_inputs_two_outputs(named)
        model.get_layer("na").adapt(train[0][:, :5])
        model.get_layer("nb").adapt(train[0][:, 5:])
        model.compile(optimizer="adam", loss={"cls": "sparse_categorical_crossentropy",
                                              "big": "binary_crossentropy"},
                      loss_weights={"cls": 1.0, "big": 0.5},
                      metrics={"cls": ["accuracy"], "big": ["accuracy"]})
        return model

    def scores(cls, big_out):
        truth = test[0][:, 9] > np.median(train[0][:, 9])
        return (float((cls.argmax(1) == test[1]).mean()),
                float(((big_out[:, 0] > 0.5) == truth).mean()))

    import keras

    keras.utils.set_random_seed(1)
    reference = build()
    reference.fit([train[0][:, :5], train[0][:, 5:]],
                  {"cls": train[1], "big": big} if named else [train[1], big],
                  batch_size=BATCH, epochs=EPOCHS, verbose=0)
    predicted = reference.predict([test[0][:, :5], test[0][:, 5:]], verbose=0)
    want = scores(*((predicted["cls"], predicted["big"]) if named else predicted))
    fitted = fit("DOWNPOUR", build(), df, features_col=["a", "b"], label_col=labels)
    assert {"cls_accuracy", "big_accuracy"} <= set(fitted.history)
    by_name = dict(zip(("big", "cls") if named else ("cls", "big"),
                       fitted.predict([test[0][:, :5], test[0][:, 5:]])))   # Keras' order
    got = scores(by_name["cls"], by_name["big"])
    assert got[0] >= want[0] - 0.03 and got[1] >= want[1] - 0.03, (got, want)
    scored = fitted.transform(df.limit(30))
    for column in ("prediction_cls", "probability_cls", "rawPrediction_cls", "prediction_big",
                   "probability_big"):
        assert column in scored.columns
    rows = scored.collect()
    assert all(r.prediction_cls in (0.0, 1.0, 2.0) and r.prediction_big in (0.0, 1.0)
               for r in rows)
    with pytest.raises(ValueError, match=r"2 outputs \((cls, big|big, cls)\) but label_col "
                                         r"names 1"):
        fit("DOWNPOUR", build(), df, features_col=["a", "b"], label_col="label")
    if named:   # a list has no order to follow; a dict must name the outputs there are
        with pytest.raises(ValueError, match=r"outputs as a dict .* label_col=\{'big': \.\.\."):
            fit("DOWNPOUR", build(), df, features_col=["a", "b"], label_col=["label", "big"])
        with pytest.raises(ValueError, match=r"outputs are big, cls"):
            fit("DOWNPOUR", build(), df, features_col=["a", "b"],
                label_col={"cls": "label", "large": "big"})


def test_one_hot_label_columns_train_as_class_indices_do(data):
    """A label column of one-hot vectors with categorical_crossentropy is the same training
    as class indices with sparse_categorical_crossentropy, class weights included."""
    import keras

    df, _, test = data

    def build(loss):
        keras.utils.set_random_seed(1)      # the same initial weights for both
        model = keras.Sequential([keras.Input((DIM,)), keras.layers.Rescaling(UNIT),
                                  keras.layers.Dense(CLASSES, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
        return model

    by_index = fit("SingleTrainer", build("sparse_categorical_crossentropy"), df,
                   class_weight={2: 4.0})
    by_vector = fit("SingleTrainer", build("categorical_crossentropy"), df, label_col="onehot",
                    class_weight={2: 4.0})
    np.testing.assert_allclose(by_vector.history["loss"], by_index.history["loss"], rtol=1e-4)
    np.testing.assert_allclose(np.asarray(by_vector.predict([test[0]])),
                               np.asarray(by_index.predict([test[0]])), atol=1e-4)


def test_sample_and_class_weights_weigh_the_loss_as_in_keras(data):
    """A weight column and class_weight= tilt the model towards class 2 as Keras' own
    sample_weight / class_weight do; the model's compiled ``weighted_metrics`` are reported
    beside its metrics, as ``model.fit`` reports them."""
    import keras

    df, train, test = data

    def build(**kw):
        return compiled(keras.Sequential([keras.Input((DIM,)), keras.layers.Rescaling(UNIT),
                                          keras.layers.Dense(CLASSES, activation="softmax")]),
                        **kw)

    def share_of_two(predict):
        return float((np.asarray(predict(test[0])).argmax(1) == 2).mean())

    plain = fit("DOWNPOUR", build(), df)
    weighted = fit("DOWNPOUR", build(weighted_metrics=["accuracy"]), df, weight_col="weight",
                   class_weight={2: 4.0})
    assert "weighted_accuracy" not in plain.history
    assert len(weighted.history["weighted_accuracy"]) == EPOCHS
    assert weighted.history["weighted_accuracy"] != weighted.history["accuracy"]
    tilted = share_of_two(lambda x: weighted.predict([x]))
    assert tilted > share_of_two(lambda x: plain.predict([x])) + 0.05
    keras.utils.set_random_seed(1)
    reference = build()      # Keras takes one or the other: their product, as distkeras does
    reference.fit(train[0], train[1], sample_weight=np.where(train[1] == 2, 2.0 * 4.0, 1.0),
                  batch_size=BATCH, epochs=EPOCHS, verbose=0)
    assert abs(tilted - share_of_two(lambda x: reference.predict(x, verbose=0))) < 0.15


# -- mixed precision ----------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_with_float32_exchanges(data, policy):
    import keras

    df, train, test = data

    def build():
        keras.mixed_precision.set_global_policy(policy)
        try:
            return compiled(keras.Sequential([
                keras.Input((DIM,)), keras.layers.Rescaling(UNIT),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(CLASSES, activation="softmax", dtype="float32")]))
        finally:
            keras.mixed_precision.set_global_policy("float32")

    reference = keras_accuracy(build, train, test)
    for trainer in ("ADAG", "ARSGD"):
        fitted = fit(trainer, build(), df)
        acc = accuracy(lambda x: fitted.predict([x]), test)
        assert acc >= reference - 0.03, (trainer, acc, reference)
        assert fitted.keras_model.layers[1].dtype_policy.name == policy
        assert fitted.keras_model.layers[1].kernel.dtype == "float32"


def test_ar_sgd_skips_the_steps_whose_scaled_loss_overflows_as_keras_does(data):
    """mixed_float16 with a loss scale too large for float16 at first: Keras' loss scaling
    skips each step that overflows and halves the scale. AR-SGD's replicas average the same
    non-finite gradient, so they all skip the same steps and learn as ``model.fit`` does,
    instead of stopping as if the loss had diverged."""
    import keras

    df, train, test = data

    def build():
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            model = keras.Sequential([
                keras.Input((DIM,)), keras.layers.Rescaling(UNIT),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(CLASSES, activation="softmax", dtype="float32")])
        finally:
            keras.mixed_precision.set_global_policy("float32")
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3),
                                                        initial_scale=2.0 ** 40)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    overflowing = build()           # the premise: at this scale float16 overflows
    gradient = overflowing.optimizer.scale_loss(keras.ops.convert_to_tensor(1.0))
    assert not np.isfinite(host(keras.ops.cast(gradient, "float16")))
    reference = keras_accuracy(build, train, test)
    fitted = fit("ARSGD", build(), df)
    acc = accuracy(lambda x: fitted.predict([x]), test)
    assert acc >= reference - 0.03, (acc, reference)


def test_mixed_float16_replicas_scale_the_loss():
    import keras

    from distkeras.executor.replica import build_model
    from distkeras.portable import PortableModel

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((DIM,)), keras.layers.Dense(CLASSES)])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    replica = build_model(PortableModel.of(model), "mse", {"class_name": "Adam", "config": {}})
    assert isinstance(replica.optimizer, keras.optimizers.LossScaleOptimizer)


def test_an_explicit_loss_scale_optimizer_builds_every_replica_as_compiled():
    """Keras' ``LossScaleOptimizer.from_config`` pops the inner optimizer from the config it
    is given: the one config must still build the driver's model and then every replica, with
    the user's scale; a tuning trial's learning rate goes to the inner optimizer."""
    import keras

    from distkeras.executor.replica import build_model
    from distkeras.portable import PortableModel
    from distkeras.tuning.trial import make_optimizer

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((DIM,)), keras.layers.Dense(CLASSES)])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(0.05), initial_scale=2.0 ** 40), loss="mse")
    config = keras.optimizers.serialize(model.optimizer)
    for _ in range(2):
        replica = build_model(PortableModel.of(model), "mse", config)
        assert isinstance(replica.optimizer, keras.optimizers.LossScaleOptimizer)
        assert float(replica.optimizer.initial_scale) == 2.0 ** 40
        assert float(replica.optimizer.inner_optimizer.learning_rate) == pytest.approx(0.05)
    tuned = make_optimizer(config, 0.2)
    assert float(tuned.inner_optimizer.learning_rate) == pytest.approx(0.2)
    assert float(tuned.initial_scale) == 2.0 ** 40


def test_an_optimizer_with_a_moving_average_is_told_the_model_returned_is_not_one(data, caplog):
    """Keras' fit swaps the optimizer's moving average (use_ema=True) into the model at the
    end; distkeras returns the trained weights, and says so instead of doing it silently."""
    import keras

    df, _, _ = data
    model = keras.Sequential([keras.Input((DIM,)), keras.layers.Rescaling(UNIT),
                              keras.layers.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3, use_ema=True),
                  loss="sparse_categorical_crossentropy")
    with caplog.at_level("WARNING", logger="distkeras"):
        dk.trainers.SingleTrainer(model, batch_size=BATCH, epochs=1, verbose=False).fit(df)
    assert any("use_ema=True" in r.getMessage() and "not a moving average" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


# -- a worker that raises ----------------------------------------------------------------------
def raising_layer():
    import keras

    class Fragile(keras.layers.Layer):
        """Fine for inference (the driver's checks), broken in training (the workers)."""

        def call(self, x, training=False):
            if training:
                return x.no_such_attribute
            return x

    return Fragile


def test_a_worker_that_raises_is_reported_as_itself(data):
    """An exception in a synchronous worker reaches the user as what it is, where it
    happened and the line of user code, not as a worker 'lost during training'."""
    import keras

    from distkeras.driver.job import TrainingError

    df, _, _ = data
    Fragile = raising_layer()
    model = compiled(keras.Sequential([keras.Input((DIM,)), Fragile(),
                                       keras.layers.Dense(CLASSES, activation="softmax")]))
    with pytest.raises(TrainingError) as caught:
        fit("AveragingTrainer", model, df, custom_objects={"Fragile": Fragile})
    message = str(caught.value)
    assert message.startswith("worker "), message
    assert "raised AttributeError" in message and "no_such_attribute" in message
    assert "while training, epoch 0, step 0" in message
    assert "test_user_models.py" in message and "in call" in message
    assert "was lost" not in message.split("(Spark:")[0]


# -- defaults that learn ----------------------------------------------------------------------------
@pytest.mark.parametrize("trainer", ["ADAG", "AEASGD", "AGN", "EASGD"])
def test_defaults_learn_with_the_optimizer_the_model_was_compiled_with(data, trainer):
    """Adam at 1e-3 compiled into the model, the trainer at its defaults: the rules with a
    step size of their own (α, the λ normalisation) learn as model.fit does."""
    import keras

    df, train, test = data

    def build():
        return compiled(keras.Sequential([keras.Input((DIM,)), keras.layers.Rescaling(UNIT),
                                          keras.layers.Dense(32, activation="relu"),
                                          keras.layers.Dense(CLASSES, activation="softmax")]))

    reference = keras_accuracy(build, train, test)
    fitted = fit(trainer, build(), df)
    acc = accuracy(lambda x: fitted.predict([x]), test)
    assert acc >= reference - 0.03, (trainer, acc, reference)


# -- everything at once, on every family --------------------------------------------------------
def kitchen_sink(train, shift: float = 0.0):
    """A model with each thing users bring at once: two inputs, a custom layer defined in a
    notebook, an adapted Normalization (to the features + ``shift``), BatchNorm and Dropout,
    computing in mixed_bfloat16."""
    import keras

    Scaled = notebook_layer()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        a, b = keras.Input((5,), name="a"), keras.Input((5,), name="b")
        norm = keras.layers.Normalization(name="norm_b")
        norm.adapt(train[0][:, 5:] + shift)
        h = keras.layers.Concatenate()([Scaled(UNIT[:5], name="scaled_a")(a), norm(b)])
        h = keras.layers.Dense(32, activation="relu")(h)
        h = keras.layers.BatchNormalization(name="bn")(h)
        h = keras.layers.Dropout(0.2)(h)
        out = keras.layers.Dense(CLASSES, activation="softmax", dtype="float32")(h)
        return compiled(keras.Model([a, b], out))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def kitchen_sink_reference(data):
    _, train, test = data
    two = lambda x: [x[:, :5], x[:, 5:]]  # noqa: E731
    return keras_accuracy(lambda: kitchen_sink(train), (two(train[0]), train[1]),
                          (two(test[0]), test[1]))


@pytest.mark.parametrize("trainer", ["DOWNPOUR", "EASGD", "ARSGD", "DPSGD", "SlowMo",
                                     "EnsembleTrainer"])
def test_everything_users_bring_at_once_trains_on_every_family(data, kitchen_sink_reference,
                                                               trainer, tmp_path):
    df, train, test = data
    model = kitchen_sink(train)
    norm = model.get_layer("norm_b")
    mean = host(norm.mean)
    fitted = fit(trainer, model, df, features_col=["a", "b"])
    acc = accuracy(lambda x: fitted.predict([x[:, :5], x[:, 5:]]), test)
    assert acc >= kitchen_sink_reference - 0.03, (trainer, acc, kitchen_sink_reference)
    result = fitted.members[0] if fitted.members else fitted.keras_model
    np.testing.assert_array_equal(host(result.get_layer("norm_b").mean), mean)
    assert type(result.get_layer("scaled_a")).__qualname__ == "Scaled"
    assert result.get_layer("bn").dtype_policy.name == "mixed_bfloat16"
    assert np.abs(host(result.get_layer("bn").moving_mean)).max() > 0.01
    if fitted.members:      # the ensemble is one Keras model: the mean of its members' outputs
        two = [test[0][:200, :5], test[0][:200, 5:]]
        want = fitted.predict(two)
        np.testing.assert_allclose(fitted.keras_model.predict(two, verbose=0), want, atol=1e-3)
        fitted.save(str(tmp_path / "ensemble"))
        again = dk.load_model(str(tmp_path / "ensemble"))
        np.testing.assert_allclose(again.keras_model.predict(two, verbose=0), want, atol=1e-3)


# -- the next fit of the same model ----------------------------------------------------------
def test_a_reused_compiled_replica_trains_exactly_as_a_new_one(data):
    """The next fit of a model of the same architecture reuses the compiled replica a Python
    worker kept (``history.startup["reused_replicas"]``) and trains exactly as a new replica
    would: nothing of the previous fit leaks into it (weights, the adapted Normalization,
    BatchNorm statistics, Adam's moments, metrics, Dropout's random seeds)."""
    import keras

    df, train, _ = data

    def model(seed: int, shift: float):
        keras.utils.set_random_seed(seed)
        return kitchen_sink(train, shift)

    def run(built, reuse: bool):
        return dk.trainers.SingleTrainer(built, batch_size=BATCH, epochs=2, verbose=False,
                                         features_col=["a", "b"], reuse_compiled=reuse).fit(df)

    def reused_run(seed: int, shift: float):
        for _ in range(5):   # Spark hands a task to each of its idle Python workers in turn
            fitted = run(model(seed, shift), True)
            if fitted.history.startup["reused_replicas"]:
                return fitted
        raise AssertionError("no fit reused a compiled replica")

    def weights(fitted):
        return [np.asarray(w, np.float32) for w in fitted.keras_model.get_weights()]

    results = {}
    # other initial weights: the replica trained on the first model is reused; other adapted
    # state (a constant of the compiled program): a program of its own
    for seed, shift in ((1, 0.0), (2, 0.0), (3, 5.0)):
        new, reused = run(model(seed, shift), False), reused_run(seed, shift)
        assert new.history.startup["reused_replicas"] == 0
        for a, b in zip(weights(new), weights(reused)):
            np.testing.assert_allclose(b, a, atol=1e-6)
        np.testing.assert_allclose(reused.history["loss"], new.history["loss"], rtol=1e-6)
        results[seed] = weights(new)
    for other in (2, 3):
        assert any(not np.allclose(a, b, atol=1e-3) for a, b in zip(results[1], results[other]))
