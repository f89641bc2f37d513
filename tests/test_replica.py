"""The executor-side replica: λ local steps in one compiled call, with and without XLA."""
from __future__ import annotations

import numpy as np
import pytest

from tests.data import blobs, mlp


def _replica(model, jit_compile):
    import keras

    from distkeras import backends
    from distkeras.executor.replica import Replica, build_model
    from distkeras.portable import PortableModel

    backends.current().setup()
    keras.utils.set_random_seed(0)
    optimizer = keras.optimizers.serialize(keras.optimizers.SGD(0.1))
    compiled = build_model(PortableModel.of(model), "categorical_crossentropy", optimizer,
                           ["accuracy"])
    return Replica(compiled, jit_compile=jit_compile)


def _window(k=6, batch=32):
    from distkeras.feed import Window

    x, y = blobs(k * batch, seed=3)
    return Window([x], [np.eye(3, dtype=np.float32)[y]]).steps(k)


def test_xla_window_matches_plain_window():
    """XLA is only a faster way to run the same steps: same start, same data, same weights."""
    model = mlp()
    window = _window()
    results = {}
    for jit in (False, True):
        replica = _replica(model, jit)
        start = replica.weights.get()
        results[jit] = replica.train(window, start=start)
        assert replica.jit_compile is jit
        assert np.abs(results[jit] - start).max() > 1e-3          # the steps moved the weights
    np.testing.assert_allclose(results[True], results[False], rtol=1e-4, atol=1e-5)


def test_continues_from_last_window_and_loads_start():
    replica = _replica(mlp(), "auto")
    window = _window()
    first = replica.train(window, start=replica.weights.get())
    second = replica.train(window)                     # no start: where the last window ended
    again = replica.train(window, start=first)         # start given: the same steps again
    np.testing.assert_allclose(again, second, rtol=1e-4, atol=1e-5)
    assert not np.allclose(second, first)


def test_auto_compiles_once_the_plan_shows_a_fit_long_enough_to_pay_for_it(monkeypatch):
    """``jit_compile="auto"``: a fit planning fewer than XLA_PLAN_STEPS steps runs a dense
    model's windows as a graph until XLA_AFTER_STEPS steps ran, then XLA compiles them if the
    plan leaves as many to run, so the shortest never compiles; a longer plan, or a recurrent
    model, is compiled at once. Every path takes the same steps."""
    import keras

    from distkeras.backends import tensorflow as backend

    monkeypatch.setattr(backend, "XLA_AFTER_STEPS", 6)
    monkeypatch.setattr(backend, "XLA_PLAN_STEPS", 40)
    at_once = _replica(mlp(), "auto")
    at_once.plan(40)
    at_once.train(_window(3))
    assert at_once.steps._run_steps.experimental_get_tracing_count() == 1
    long, short = _replica(mlp(), "auto"), _replica(mlp(), "auto")
    long.plan(30)
    short.plan(9)
    start = long.weights.get()
    for replica in (long, short):
        for _ in range(3):
            replica.train(_window(3), start=start)
    xla = lambda r: r.steps._run_steps.experimental_get_tracing_count()  # noqa: E731
    assert xla(long) == 1 and long.steps._traced.experimental_get_tracing_count() == 1
    assert xla(short) == 0           # 9 steps planned: 3 left after 6 ran, not worth compiling
    np.testing.assert_allclose(long.theta, short.theta, rtol=1e-4, atol=1e-5)

    long.restart(long.model)        # the next fit, planned short: the first windows as graphs
    long.plan(3)
    long.train(_window(3), start=start)
    assert long.steps.schedule.compiled == set()

    inp = keras.Input((4, 8))
    gru = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.GRU(4)(inp)))
    recurrent = _replica(gru, "auto")
    recurrent.plan(3)
    x, y = blobs(3 * 32 * 4, seed=3)
    from distkeras.feed import Window

    recurrent.train(Window([x.reshape(-1, 4, 8)], [np.eye(3, dtype=np.float32)[y[::4]]]).steps(3))
    assert recurrent.steps._run_steps.experimental_get_tracing_count() == 1


def test_a_compilation_deferred_by_auto_falls_back_without_xla_when_it_fails(monkeypatch, caplog):
    """XLA's first program may come after windows that ran as graphs: if it cannot compile
    the model, the replica says so and goes on as a graph, losing no step."""
    from distkeras.backends import tensorflow as backend

    monkeypatch.setattr(backend, "XLA_AFTER_STEPS", 3)
    replica = _replica(_host_op_model(), "auto")
    replica.plan(100)
    start = replica.weights.get()
    with caplog.at_level("WARNING"):
        for _ in range(3):
            theta = replica.train(_window(3))
    assert "XLA could not compile" in caplog.text and replica.steps.jit_compile is False
    plain = _replica(_host_op_model(), False)
    for i in range(3):
        plain.train(_window(3), start=start if i == 0 else None)
    np.testing.assert_allclose(theta, plain.theta, rtol=1e-5, atol=1e-6)


def _host_op_model():
    import keras
    import tensorflow as tf

    class HostOp(keras.layers.Layer):
        def call(self, x):
            out = tf.numpy_function(lambda a: a * np.float32(1.0), [x], tf.float32)
            return tf.reshape(out, tf.shape(x))

    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(HostOp()(inp)))


def test_falls_back_without_xla_when_it_cannot_compile(caplog):
    """A model XLA cannot compile (here: a host-side numpy op) still trains, with a warning."""
    import keras
    import tensorflow as tf

    from distkeras.backends import FlatWeights
    from distkeras.executor.replica import Replica

    class HostOp(keras.layers.Layer):
        def call(self, x):
            out = tf.numpy_function(lambda a: a * np.float32(1.0), [x], tf.float32)
            return tf.reshape(out, tf.shape(x))

    inp = keras.Input((8,))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(HostOp()(inp)))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    replica = Replica(model, jit_compile=True)
    window = _window()
    start = FlatWeights(model).get()
    with caplog.at_level("WARNING"):
        theta = replica.train(window, start=start)
    assert replica.jit_compile is False
    assert "XLA could not compile" in caplog.text
    assert np.abs(theta - start).max() > 1e-3


def test_trainer_rejects_unknown_jit_setting():
    import distkeras as dk

    with pytest.raises(TypeError, match="param \"jit_compile\". 'sometimes' is not one of "
                                        "'auto', True, False"):
        dk.trainers.ADAG(mlp(), loss="categorical_crossentropy", jit_compile="sometimes")


def test_xla_compiles_the_first_window_length_at_once_and_others_once_they_run_often(
        monkeypatch):
    """A second window length (an epoch's shorter last window) runs without XLA, traced once,
    until it ran ``XLA_AFTER_STEPS`` steps, then compiled; a short fit pays one compilation,
    not one per length. Every path takes the same steps, and a restarted replica counts anew."""
    from distkeras.backends import tensorflow as backend

    monkeypatch.setattr(backend, "XLA_AFTER_STEPS", 6)
    replica = _replica(mlp(), True)
    start = replica.weights.get()
    replica.train(_window(6), start=start)
    steps = replica.steps
    compiled = steps._run_steps.experimental_get_tracing_count()
    assert compiled == 1 and steps._traced.experimental_get_tracing_count() == 0
    short = _window(3)
    first, second = (replica.train(short, start=start) for _ in range(2))   # 6 steps
    assert steps._run_steps.experimental_get_tracing_count() == compiled
    assert steps._traced.experimental_get_tracing_count() == 1
    third = replica.train(short, start=start)                               # now compiled
    assert steps._run_steps.experimental_get_tracing_count() == compiled + 1
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(third, first, rtol=1e-4, atol=1e-5)
    steps.restart()
    replica.train(_window(6), start=start)
    replica.train(short, start=start)
    assert steps.schedule.uncompiled[3] == 3     # without XLA again: its steps counted anew
