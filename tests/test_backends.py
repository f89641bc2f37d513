"""Keras 3 on every backend: the replica's compiled window is Keras' own training on the backend
this process runs (``KERAS_BACKEND``), a worker refuses a backend other than the driver's with
the fix, and a model fitted on one backend loads on another.

CI runs this file (with the trainers, exchanges, identities, ml stages and a search) once per
backend: ``KERAS_BACKEND=jax pytest ...`` and ``KERAS_BACKEND=torch pytest ...``.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from distkeras.backends import configured
from tests.data import blobs, blobs_df, mlp

STEPS, BATCH = 6, 32


def _models():
    import keras

    def bn():        # BatchNorm (statistics in the flat vector), dropout (a seed generator)
        keras.utils.set_random_seed(0)
        inp = keras.Input((8,))
        h = keras.layers.Dense(16, activation="relu")(inp)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.Dropout(0.0)(h)
        return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))

    def two_in_two_out():
        keras.utils.set_random_seed(0)
        a, b = keras.Input((5,), name="a"), keras.Input((3,), name="b")
        h = keras.layers.Dense(8, activation="tanh")(keras.layers.Concatenate()([a, b]))
        return keras.Model([a, b], [keras.layers.Dense(3, activation="softmax", name="cls")(h),
                                    keras.layers.Dense(1, name="reg")(h)])

    def plain():
        keras.utils.set_random_seed(0)
        return mlp()

    return {"mlp-sgd": (plain, "sgd"), "bn-adam": (bn, "adam"), "two-in-two-out": (two_in_two_out,
                                                                                   "adam")}


def _batches(name: str):
    x, y = blobs(STEPS * BATCH, seed=3)
    onehot = np.eye(3, dtype=np.float32)[y]
    if name == "two-in-two-out":
        return [x[:, :5], x[:, 5:]], [onehot, x[:, :1].copy()]
    return [x], [onehot]


def _compiled(portable, name, optimizer):
    import keras

    from distkeras.executor.replica import build_model

    loss = (["categorical_crossentropy", "mse"] if name == "two-in-two-out"
            else "categorical_crossentropy")
    return build_model(portable, loss, keras.optimizers.serialize(keras.optimizers.get(optimizer)),
                       ["accuracy"] if name != "two-in-two-out" else None)


# (model, jit_compile); PyTorch's compiler (20-90 s per model on CPU) on the MLP only
CASES = [(name, jit) for name in ("mlp-sgd", "bn-adam", "two-in-two-out") for jit in (True, False)
         if not (jit and name != "mlp-sgd" and configured() == "torch")]


@pytest.mark.parametrize("name,jit", CASES)
def test_a_window_is_keras_own_fit_on_this_backend(name, jit):
    """λ steps of the replica from the model's weights = Keras' model.fit on the same batches
    (shuffle off), weights, statistics and metrics; and so are λ gradient steps (AR-SGD)."""
    from distkeras import backends
    from distkeras.executor.replica import Replica
    from distkeras.feed import Window
    from distkeras.portable import PortableModel

    backend = backends.current()
    build, optimizer = _models()[name]
    portable = PortableModel.of(build())
    xs, ys = _batches(name)
    reference = _compiled(portable, name, optimizer)
    history = reference.fit(xs if len(xs) > 1 else xs[0], ys if len(ys) > 1 else ys[0],
                            batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history

    replica = Replica(_compiled(portable, name, optimizer), backend, jit)
    start = replica.weights.get()
    window = Window(xs, ys).steps(STEPS)
    theta = replica.train(window, start=start)
    expected = backend.flat_weights(reference, replica.weights.layout).get()
    assert np.abs(theta - start).max() > 1e-3
    np.testing.assert_allclose(theta, expected, rtol=1e-5, atol=1e-6)
    assert replica.metrics()["loss"] == pytest.approx(history["loss"][-1], rel=1e-5)
    replica.learning_rate = 0.05                       # the next window reads the new rate
    assert replica.learning_rate == pytest.approx(0.05)
    reference.optimizer.learning_rate = 0.05
    reference.fit(xs if len(xs) > 1 else xs[0], ys if len(ys) > 1 else ys[0], batch_size=BATCH,
                  epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(replica.train(window), backend.flat_weights(
        reference, replica.weights.layout).get(), rtol=1e-4, atol=1e-5)

    stepped = Replica(_compiled(portable, name, optimizer), backend, jit)
    for i in range(STEPS):
        stepped.apply_gradient(stepped.gradient(window, i, start=start if i == 0 else None))
    np.testing.assert_allclose(stepped.read(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,jit", CASES)
def test_rows_gathered_inside_the_compiled_window_are_keras_own_fit_on_those_rows(name, jit):
    """A window named by row indices into a partition held whole (what a worker trains on,
    gathered inside the backend's compiled call) = Keras' model.fit on those rows in that
    order, with sample weights; its gradient steps too; a partition whose memory the backend
    cannot take in place (not 64-byte aligned) is copied, not misread; and once released, the
    replica keeps none of it."""
    import gc
    import weakref

    from distkeras import backends
    from distkeras.executor.replica import Replica
    from distkeras.feed import IndexedWindow, Window, aligned_empty
    from distkeras.portable import PortableModel

    backend = backends.current()
    build, optimizer = _models()[name]
    portable = PortableModel.of(build())
    xs, ys = _batches(name)
    rows = len(xs[0])
    weights = np.random.default_rng(4).uniform(0.5, 2.0, rows).astype(np.float32)

    def held(a):      # aligned (taken in place where the backend can) or 16 bytes off
        out = aligned_empty(a.shape, a.dtype) if jit else np.empty_like(a)
        out[...] = a
        return out

    partition = Window([held(x) for x in xs], [held(y) for y in ys], held(weights))
    order = np.random.default_rng(5).permutation(rows)
    window = IndexedWindow(partition, order).steps(STEPS)
    reference = _compiled(portable, name, optimizer)
    pick = lambda arrays: [a[order] for a in arrays]  # noqa: E731
    reference.fit(*(v if len(v) > 1 else v[0] for v in (pick(xs), pick(ys))),
                  sample_weight=weights[order], batch_size=BATCH, epochs=1, shuffle=False,
                  verbose=0)

    replica = Replica(_compiled(portable, name, optimizer), backend, jit)
    start = replica.weights.get()
    first = replica.train(window[:2], start=start)       # two lengths: 2 steps, then the rest
    theta = replica.train(window[2:])
    expected = backend.flat_weights(reference, replica.weights.layout).get()
    assert np.abs(theta - first).max() > 1e-3
    np.testing.assert_allclose(theta, expected, rtol=1e-5, atol=1e-6)

    stepped = Replica(_compiled(portable, name, optimizer), backend, jit)
    for i in range(STEPS):
        stepped.apply_gradient(stepped.gradient(window, i, start=start if i == 0 else None))
    np.testing.assert_allclose(stepped.read(), expected, rtol=1e-5, atol=1e-6)

    # a partition read from Arrow is held as its storage: a power of two of rows, so that
    # partitions of similar sizes share one compiled window
    read = Window([held(x)[:-1] for x in xs], [held(y)[:-1] for y in ys], None,
                  storage=Window([held(x) for x in xs], [held(y) for y in ys]))
    tensors, _, _ = replica.steps.held(read)
    assert [tuple(t.shape) for t in tensors] == [x.shape for x in xs]
    replica.train(IndexedWindow(read, order[order < rows - 1][:BATCH]).steps(1))

    gone = weakref.ref(partition.xs[0])
    replica.release()
    del partition, window
    gc.collect()
    assert gone() is None, "a released replica still holds its partition"


def test_mixed_float16_window_is_keras_own_fit_with_its_loss_scaling():
    """Under mixed_float16 the workers' optimizer is Keras' LossScaleOptimizer on every backend,
    and a window still equals model.fit."""
    import keras

    from distkeras import backends
    from distkeras.executor.replica import Replica
    from distkeras.feed import Window
    from distkeras.portable import PortableModel

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        inp = keras.Input((8,))
        hidden = keras.layers.Dense(16, activation="relu")(inp)
        portable = PortableModel.of(keras.Model(inp, keras.layers.Dense(
            3, activation="softmax", dtype="float32")(hidden)))
        xs, ys = _batches("mlp")
        reference = _compiled(portable, "mlp", "adam")
        reference.fit(xs[0], ys[0], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        replica = Replica(_compiled(portable, "mlp", "adam"), backends.current(), "auto")
        assert replica.loss_scaling
        theta = replica.train(Window(xs, ys).steps(STEPS), start=replica.weights.get())
        expected = backends.current().flat_weights(reference, replica.weights.layout).get()
        # float16 arithmetic: XLA's fusion rounds differently from Keras' own step (2e-6 seen);
        # a step missed or doubled would move weights by ~1e-3
        np.testing.assert_allclose(theta, expected, rtol=1e-3, atol=1e-4)
    finally:
        keras.config.set_dtype_policy(before)


def test_a_worker_refuses_another_backend_than_the_drivers_with_the_fix():
    import keras

    from distkeras import backends

    running = keras.backend.backend()
    other = next(n for n in ("jax", "torch", "tensorflow") if n != running)
    with pytest.raises(backends.BackendMismatch, match=f"KERAS_BACKEND={other}"):
        backends.prepare(other)
    assert backends.prepare(other, strict=False).name == running   # predictions: any backend
    with pytest.raises(ValueError, match="not supported by distkeras"):
        backends.named("mxnet")


def test_a_fit_runs_the_drivers_backend_in_every_worker_and_loads_on_another(spark, tmp_path):
    """Workers report the backend they ran; the fitted model, saved as a pyspark.ml stage, loads
    and predicts the same in a process running another Keras backend."""
    import keras

    import distkeras as dk

    running = keras.backend.backend()
    fitted = dk.trainers.ADAG(mlp(), loss="categorical_crossentropy", num_workers=2,
                              batch_size=32, epochs=1, verbose=False).fit(blobs_df(spark, 1000))
    assert [w["backend"] for w in fitted.history.workers] == [running, running]
    path = str(tmp_path / "fitted")
    fitted.save(path)
    x, _ = blobs(50, seed=5)
    np.save(tmp_path / "x.npy", x)
    ours = fitted.predict([x])
    # another backend where this environment has one (CI: JAX -> PyTorch), else a fresh process
    other = next((n for n in ("jax", "torch", "tensorflow") if n != running and _installed(n)),
                 running)
    code = ("import sys, numpy as np, keras; from distkeras.model import KerasModel; "
            "m = KerasModel.load(sys.argv[1]); assert keras.backend.backend() == sys.argv[3]; "
            "np.save(sys.argv[2], m.predict([np.load(sys.argv[4])]))")
    subprocess.run([sys.executable, "-c", code, path, str(tmp_path / "theirs.npy"), other,
                    str(tmp_path / "x.npy")], check=True, timeout=300,
                   env={**os.environ, "KERAS_BACKEND": other})
    np.testing.assert_allclose(np.load(tmp_path / "theirs.npy"), ours, rtol=1e-4, atol=1e-5)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
