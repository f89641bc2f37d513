"""The driver's coordinator (control for every algorithm) over the real transport: registration
and rendezvous, progress and the stop flag, epochs, replicas' mean and consensus distance, lost
workers, and the checks on what workers report."""
from __future__ import annotations

import time

import numpy as np
import pytest

from distkeras import messages
from distkeras.driver.coordinator import Coordinator
from distkeras.transport import Client, PSRemoteError

N = 100


def client(coord, worker, endpoint=None):
    c = Client(*coord.address, coord.secret, worker, connect_timeout=5)
    c.request(messages.HELLO, payload={"pid": 1, "host": "test", "endpoint": endpoint})
    return c


def test_stop_flag_progress_and_epochs():
    with Coordinator(2, np.zeros(N, np.float32)) as coord, client(coord, 0) as c0, \
            client(coord, 1) as c1:
        assert not c0.request(messages.PROGRESS, aux=10, payload={"exchanges": 3}).flags
        for c in (c0, c1):
            c.request(messages.EPOCH_END, payload={"epoch": 0, "logs": {"loss": 1.0}}, aux=5)
        assert coord.completed_epochs() == 1 and coord.epoch_logs[0][1] == {"loss": 1.0}
        assert coord.samples_seen == 20 and coord.stats()["workers"][0]["exchanges"] == 3
        coord.request_stop()
        assert c0.request(messages.PROGRESS, aux=1).flags & messages.FLAG_STOP


def test_replicas_give_the_mean_and_the_consensus_distance():
    a, b = np.full(N, 1.0, np.float32), np.full(N, 3.0, np.float32)
    with Coordinator(2, np.zeros(N, np.float32)) as coord, client(coord, 0) as c0, \
            client(coord, 1) as c1:
        np.testing.assert_array_equal(c0.request(messages.PULL).payload, 0.0)   # initial
        c0.request(messages.REPLICA, payload=a, aux=0)
        c1.request(messages.REPLICA, payload=b, aux=0)
        np.testing.assert_allclose(coord.model(epoch=0), 2.0)
        assert coord.consensus_distance[0] == pytest.approx(2 * N * 1.0)   # Σᵢ‖x̄ − xᵢ‖²
        np.testing.assert_allclose(c1.request(messages.PULL).payload, 2.0)  # a rejoiner's start
        poisoned = a.copy()
        poisoned[3] = np.nan
        with pytest.raises(PSRemoteError, match="non-finite"):
            c0.request(messages.REPLICA, payload=poisoned, aux=1)
        with pytest.raises(PSRemoteError, match="5 values, the model has 100"):
            c0.request(messages.FINAL, payload=np.zeros(5, np.float32))
        assert 1 not in coord.epoch_means


def test_rendezvous_table_and_bookkeeping_checks():
    with Coordinator(2, np.zeros(N, np.float32)) as coord, \
            client(coord, 0, endpoint="10.0.0.1:7000") as c0:
        assert c0.request(messages.PEERS).payload["peers"] == {"0": "10.0.0.1:7000"}
        with pytest.raises(PSRemoteError, match="bad epoch number"):
            c0.request(messages.EPOCH_END, payload={"epoch": "zero", "logs": {}})
        with pytest.raises(PSRemoteError, match="sample count -5 outside"):
            c0.request(messages.PROGRESS, aux=-5)
        with pytest.raises(PSRemoteError, match="sample count .* outside"):
            c0.request(messages.PROGRESS, aux=1 << 50)
        with pytest.raises(PSRemoteError, match="bad epoch number True"):
            c0.request(messages.EPOCH_END, payload={"epoch": True, "logs": {}})
        with pytest.raises(PSRemoteError, match="bad epoch number 4294967295"):
            c0.request(messages.REPLICA, payload=np.zeros(N, np.float32), aux=(1 << 32) - 1)
        assert coord.samples_seen == 0 and not coord.epoch_logs
        c0.request(messages.EPOCH_END, payload={"epoch": 0, "logs": {
            "loss": "high", "acc": 0.5, "flag": True, "nested": {"a": 1}, "inf": float("inf")}})
        assert coord.epoch_logs[0][0] == {"acc": 0.5}   # non-numeric log values are dropped


def test_lost_synchronous_worker_fails_the_run_quickly():
    with Coordinator(2, np.zeros(N, np.float32), synchronous=True, name="dpsgd") as coord:
        gone = client(coord, 1)
        gone._sock.close()                     # vanishes without DONE
        time.sleep(0.3)
        t0 = time.monotonic()
        with pytest.raises(PSRemoteError, match="worker 1 was lost during training; dpsgd is "
                                                "synchronous"):
            client(coord, 0)
        assert time.monotonic() - t0 < 5
        assert "worker 1 was lost" in coord.failure


def test_a_synchronous_worker_that_says_goodbye_mid_run_names_the_peer_that_was_lost():
    """A worker whose peer vanished leaves cleanly (BYE), and its goodbye can reach the driver
    before the vanished peer's dropped connection does: the run names the peer, not the
    worker that said goodbye. A goodbye with no other loss is named itself, after the grace."""
    from distkeras.driver.coordinator import LOST_GRACE

    with Coordinator(2, np.zeros(N, np.float32), synchronous=True, name="dpsgd") as coord:
        vanished, leaving = client(coord, 1), client(coord, 0)
        leaving.close()                        # BYE first: its peer failed it
        time.sleep(0.2)
        assert coord.failure is None           # not named yet: the grace runs
        vanished._sock.close()                 # then the vanished worker's connection drops
        assert coord.settled_failure().startswith("worker 1 was lost during training")
        time.sleep(LOST_GRACE + 0.3)           # the goodbye's grace ends: the first cause stays
        assert coord.failure.startswith("worker 1 was lost")
    with Coordinator(2, np.zeros(N, np.float32), synchronous=True, name="dpsgd") as coord:
        t0 = time.monotonic()
        client(coord, 0).close()
        time.sleep(0.2)                        # the goodbye reaches the coordinator
        assert coord.settled_failure().startswith("worker 0 was lost during training")
        assert LOST_GRACE - 0.5 < time.monotonic() - t0 < LOST_GRACE + 1.5
    with Coordinator(2, np.zeros(N, np.float32), synchronous=True, name="dpsgd") as coord:
        assert coord.settled_failure() is None         # nothing waiting: no wait
