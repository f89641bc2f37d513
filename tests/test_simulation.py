"""The virtual-time simulation (``distkeras.simulation``): the α–β model's arithmetic, runs that
are the same for the same seed, synchronous runs equal to real ones on Spark, and the scaling
the model demands (a ring's time per batch grows with n, gossip's stays flat)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import distkeras as dk
from distkeras.simulation import Network, Simulation, TimeModel
from distkeras.simulation.clock import VirtualClock
from tests.data import blobs, blobs_df, mlp

COMMON = dict(loss="categorical_crossentropy", worker_optimizer="adam", learning_rate=0.01,
              batch_size=32, epochs=2, verbose=False)


@pytest.fixture(scope="module")
def data(spark):
    train = blobs_df(spark, 2048, seed=0, partitions=2).cache()
    train.count()
    x, y = blobs(500, seed=1)
    return train, (x, np.eye(3, dtype=np.float32)[y])


def fit(name, data, **kwargs):
    import keras

    train, val = data
    keras.utils.set_random_seed(0)         # the same initial weights for every fit
    return getattr(dk.trainers, name)(mlp(), **{**COMMON, **kwargs}).fit(
        train, validation_data=val)


def weights(fitted) -> np.ndarray:
    return np.concatenate([w.ravel() for w in fitted.keras_model.get_weights()])


# -- the model's arithmetic ----------------------------------------------------------------------
def test_the_network_model_is_alpha_beta():
    net = Network.parse("10gbit:0.1ms")
    assert net.bandwidth == pytest.approx(1.25e9) and net.latency == pytest.approx(1e-4)
    assert net.message(4e6) == pytest.approx(1e-4 + 4e6 / 1.25e9)
    assert net.ring_allreduce(4e6, 16) == pytest.approx(30 * (1e-4 + 0.25e6 / 1.25e9))
    assert net.ring_allreduce(4e6, 1) == 0.0
    assert Network.parse("ideal").message(1e9) == 0.0
    shared = Network.parse("1gbit:50us:shared")
    assert shared.shared and shared.neighbours(1e6, 4) == pytest.approx(50e-6 + 4e6 / 1.25e8)
    assert Network.parse(net.spec).spec == net.spec == "10gbit:0.1ms"
    for bad in ("fast", "10gbit:soon", "10parsecs:1ms", ""):
        with pytest.raises(ValueError, match="network spec|bandwidth|latency"):
            Network.parse(bad)


def test_simulation_text_round_trips_and_bad_fields_say_what_is_known():
    made = Simulation.parse("network=1gbit:50us,step=2ms,stragglers=lognormal:0.2,seed=3")
    assert made.step_seconds == pytest.approx(2e-3) and made.seed == 3
    assert Simulation.parse(made.spec).spec == made.spec
    with pytest.raises(ValueError, match="unknown field 'speed'"):
        Simulation.parse("speed=3")
    with pytest.raises(ValueError, match="stragglers="):
        Simulation.parse("stragglers=gamma:2")
    with pytest.raises(TypeError, match="network spec"):       # when the Param is set
        dk.trainers.ADAG(mlp(), num_workers=2, simulate="fast")


def test_stragglers_are_seeded_and_have_the_mean_they_say():
    a, b = (TimeModel(1e-3, stragglers="lognormal:0.3", seed=5) for _ in range(2))
    draws = [a.window(2, 10) for _ in range(2000)]
    assert draws[:50] == [b.window(2, 10) for _ in range(50)]
    assert np.mean(draws) == pytest.approx(1e-2, rel=0.05)
    slow = TimeModel(1e-3, stragglers="slow:3:0.25", num_workers=8)
    assert [slow.factor(w) for w in range(8)] == [3.0, 3.0] + [1.0] * 6


def test_the_clock_runs_what_comes_first_and_gathers_at_the_last_arrival():
    clock, seen = VirtualClock(), []

    def worker(w):
        clock.sleep(w, 0.3 if w == 0 else 0.1)
        seen.append((w, clock.now[w]))
        values, t, _ = clock.gather(w, "round", 2, w * 10)
        seen.append(("gathered", w, t, values))

    clock.run({0: lambda: worker(0), 1: lambda: worker(1)})
    assert seen[:2] == [(1, 0.1), (0, 0.3)]          # in virtual time, not thread order
    assert sorted(seen[2:]) == [("gathered", 0, 0.3, {0: 0, 1: 10}),
                                ("gathered", 1, 0.3, {0: 0, 1: 10})]


def test_workers_stuck_in_rounds_that_cannot_complete_fail_with_a_message():
    clock = VirtualClock()
    with pytest.raises(RuntimeError, match="cannot complete"):
        clock.run({0: lambda: clock.gather(0, "a", 2), 1: lambda: clock.gather(1, "b", 2)})


# -- simulated fits --------------------------------------------------------------------------------
def test_a_simulation_is_the_same_run_for_the_same_seed(data):
    spec = "network=1gbit:0.2ms,step=1ms,service=20us,stragglers=lognormal:0.5,seed=7"
    runs = [fit("ADPSGD", data, num_workers=4, simulate=spec) for _ in range(2)]
    assert runs[0].history["val_loss"] == runs[1].history["val_loss"]
    assert runs[0].history["epoch_seconds"] == runs[1].history["epoch_seconds"]
    np.testing.assert_array_equal(weights(runs[0]), weights(runs[1]))
    other = fit("ADPSGD", data, num_workers=4, simulate=spec.replace("seed=7", "seed=8"))
    assert other.history["epoch_seconds"] != runs[0].history["epoch_seconds"]
    h = runs[0].history
    assert h.simulation["network"] == Network.parse("1gbit:0.2ms").spec
    assert h.simulation["virtual_seconds"] == pytest.approx(sum(h["epoch_seconds"]), rel=0.05)
    assert h["val_accuracy"][-1] > 0.8


@pytest.mark.parametrize("name,kwargs", [("ARSGD", {}), ("DPSGD", {}),
                                         ("LocalSGD", dict(communication_window=4, via="ring")),
                                         ("EASGD", {})])
def test_two_simulated_workers_train_exactly_as_two_real_ones(name, kwargs, data):
    """Same batches, same rule code: a synchronous run's curve and model equal the real run's
    (on Spark, over sockets) to float tolerance."""
    real = fit(name, data, num_workers=2, **kwargs)
    simulated = fit(name, data, num_workers=2, simulate="ideal", **kwargs)
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(simulated.history[key], real.history[key], rtol=1e-5,
                                   err_msg=key)
    np.testing.assert_allclose(weights(simulated), weights(real), rtol=1e-5, atol=1e-6)


def test_a_ring_step_costs_more_with_more_workers_and_gossip_does_not(data):
    spec = "network=1gbit:0.5ms,step=2ms,service=0s"
    per_batch = {}
    for name in ("ARSGD", "ADPSGD"):
        for n in (2, 8):
            h = fit(name, data, num_workers=n, simulate=spec, epochs=1).history
            steps = 2048 // n // 32
            per_batch[name, n] = h["epoch_seconds"][0] / steps
    net = Network.parse("1gbit:0.5ms")
    # AR-SGD: a step is its compute plus a ring all-reduce of the gradient, 2(n−1)(α + b/nβ)
    b = 4 * sum(int(np.prod(w.shape)) for w in mlp().weights)
    for n in (2, 8):
        assert per_batch["ARSGD", n] == pytest.approx(2e-3 + net.ring_allreduce(b, n), rel=0.02)
    assert per_batch["ARSGD", 8] > 2 * per_batch["ARSGD", 2]
    # AD-PSGD: its gossip overlaps its steps: a batch costs a step, whatever n
    assert per_batch["ADPSGD", 8] == pytest.approx(per_batch["ADPSGD", 2], rel=0.02)
    assert per_batch["ADPSGD", 8] == pytest.approx(2e-3, rel=0.02)
    assert math.isfinite(per_batch["ADPSGD", 8])


def test_the_parameter_server_serves_one_commit_at_a_time(data):
    """On a slow link the server's NIC is the bottleneck: an epoch's commits queue there, so
    more workers do not make the epoch shorter (the queue holds, whatever n)."""
    spec = "network=0.01gbit:0.1ms,step=0.1ms,service=0s"
    b = 4 * sum(int(np.prod(w.shape)) for w in mlp().weights)
    seconds = {}
    for n in (2, 8):
        h = fit("DOWNPOUR", data, num_workers=n, simulate=spec, epochs=1,
                communication_window=1).history
        seconds[n] = h["epoch_seconds"][0]
        commits = n * (2048 // n // 32)
        assert seconds[n] >= commits * 2 * b / 1.25e6        # every commit and its reply
    assert seconds[8] == pytest.approx(seconds[2], rel=0.1)


def test_what_the_simulation_cannot_model_is_refused_with_the_fix(data):
    with pytest.raises(ValueError, match="compression=None"):
        fit("ADAG", data, num_workers=2, simulate="ideal", compression="int8")
    with pytest.raises(ValueError, match="overlap_communication=False"):
        fit("ADAG", data, num_workers=2, simulate="ideal", overlap_communication=True)
