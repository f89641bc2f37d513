"""Identities that hold to float tolerance, checked on the executors' real training loop
(``remote._train_worker``: real Keras replicas, real coordinator, real ring over sockets) with
the workers as threads of this process, so the data order is known exactly:

- AR-SGD on 2 workers with plain SGD and batch B is single-worker SGD with batch 2B on the same
  batches;
- SlowMo with β = 0, α = 1 over LocalSGD is LocalSGD (and with β = 0.7 it is not).
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from distkeras import algorithms
from distkeras.driver.coordinator import Coordinator
from distkeras.executor import remote
from distkeras.feed import Window
from distkeras.executor.sources import MemorySource
from distkeras.portable import PortableModel
from distkeras.state import StateLayout
from tests.data import blobs, mlp

SEED, BATCH, EPOCHS, LR = 3, 16, 2, 0.05


def train_in_process(algorithm, parts, initial_model, epochs=EPOCHS, batch=BATCH):
    """Run one ``_train_worker`` thread per data part; return the workers' final weights."""
    import keras

    from distkeras.backends import FlatWeights

    n = len(parts)
    initial = FlatWeights(initial_model).get()
    steps = min(len(y) for _, y in parts) // batch
    with Coordinator(n, initial, synchronous=algorithm.synchronous) as coord:
        spec = {"model": PortableModel.of(initial_model),
                "layout": StateLayout.of(initial_model).to_dict(),
                "compile": {"loss": "categorical_crossentropy", "optimizer":
                            keras.optimizers.serialize(keras.optimizers.SGD(LR)), "metrics": []},
                "seed": SEED, "batch_size": batch, "steps_per_epoch": steps,
                "epochs": epochs, "num_workers": n, "algorithm": algorithm,
                "jit_compile": False,
                "run": {"coordinator": list(coord.address), "ps": None, "secret": coord.secret,
                        "connect_timeout": 10, "round_timeout": 60, "peer_host": "127.0.0.1"}}
        errors = []

        def work(w):
            try:
                x, y = parts[w]
                remote._train_worker(spec, MemorySource(Window([x], [y]), SEED, w), w, 0, None)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        assert len(coord.final_models) == n
        return [coord.final_models[w] for w in range(n)], steps


def onehot(y):
    return np.eye(3, dtype=np.float32)[y]


@pytest.fixture(scope="module")
def parts():
    x, y = blobs(2 * 10 * BATCH + 8, seed=5)       # 10 steps per epoch per worker
    half = len(y) // 2
    return [(x[:half], onehot(y[:half])), (x[half:], onehot(y[half:]))]


def test_arsgd_equals_single_worker_sgd_on_the_concatenated_batch(parts):
    import keras

    from distkeras.backends import FlatWeights

    keras.utils.set_random_seed(0)
    model = mlp()
    finals, steps = train_in_process(algorithms.ARSGD(num_workers=2, learning_rate=LR), parts,
                                     model)
    np.testing.assert_array_equal(finals[0], finals[1])     # replicas stay identical

    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    reference.compile(optimizer=keras.optimizers.SGD(LR), loss="categorical_crossentropy")
    sources = [MemorySource(Window([x], [y]), SEED, w) for w, (x, y) in enumerate(parts)]
    for epoch in range(EPOCHS):
        for s in sources:
            s.start_epoch(epoch)
        for _ in range(steps):
            batches = [s.take(BATCH) for s in sources]
            x = np.concatenate([b.xs[0] for b in batches])
            y = np.concatenate([b.ys[0] for b in batches])
            reference.train_on_batch(x, y)
    expected = FlatWeights(reference).get()
    moved = np.abs(expected - FlatWeights(model).get()).max()
    assert moved > 1e-2, "training did not move the weights: the test would prove nothing"
    np.testing.assert_allclose(finals[0], expected, rtol=1e-5, atol=2e-6)


def test_slowmo_with_zero_momentum_is_localsgd(parts):
    import keras

    keras.utils.set_random_seed(1)
    model = mlp()
    window = 4
    local, _ = train_in_process(
        algorithms.Averaging(communication_window=window, num_workers=2, learning_rate=LR,
                             via="ring"), parts, model)
    slow, _ = train_in_process(
        algorithms.SlowMo(base="localsgd", slow_momentum=0.0, slow_learning_rate=1.0,
                          slow_period=window, communication_window=window, num_workers=2,
                          learning_rate=LR), parts, model)
    np.testing.assert_allclose(slow[0], local[0], rtol=1e-5, atol=1e-6)
    momentum, _ = train_in_process(
        algorithms.SlowMo(base="localsgd", slow_momentum=0.7, slow_period=window,
                          communication_window=window, num_workers=2, learning_rate=LR),
        parts, model)
    assert np.abs(momentum[0] - local[0]).max() > 1e-3, "the slow momentum step never ran"
