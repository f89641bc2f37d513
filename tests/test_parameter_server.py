"""The driver's parameter server over the real transport: each algorithm's server rule, the
synchronous round, worker loss and garbage on the port (control, the stop flag and epochs are the
coordinator's: ``test_coordinator``)."""
from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np
import pytest

from distkeras import algorithms, messages
from distkeras.driver.parameter_server import ParameterServer
from distkeras.transport import Client, PSConnectionError, PSRemoteError

N = 1000


def serve(name, num_workers=2, initial=None, **params):
    algorithm = algorithms.get(name, num_workers=num_workers, learning_rate=0.1, **params)
    start = np.zeros(N, np.float32) if initial is None else initial
    return ParameterServer(algorithm, start, num_workers)


def client(ps, worker):
    return Client(*ps.address, ps.secret, worker, connect_timeout=5)


def commit_in_background(c, payload):
    """A commit that waits in a synchronous round; returns (thread, errors it got)."""
    errors: list[str] = []

    def commit():
        try:
            c.request(messages.COMMIT, payload=payload)
        except (PSRemoteError, PSConnectionError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    t = threading.Thread(target=commit)
    t.start()
    time.sleep(0.3)
    return t, errors


def test_downpour_adds_commits_and_replies_the_centre():
    with serve("downpour") as ps, client(ps, 0) as c:
        assert np.array_equal(c.request(messages.PULL).payload, np.zeros(N, np.float32))
        delta = np.arange(N, dtype=np.float32)
        reply = c.request(messages.COMMIT, payload=delta, aux=32).payload.copy()
        reply2 = c.request(messages.COMMIT, payload=delta, aux=32).payload
        assert np.array_equal(reply, delta) and np.array_equal(reply2, 2 * delta)
        assert np.array_equal(ps.centre, 2 * delta)
        assert ps.updates == 2 and ps.stats()["workers"][0]["commits"] == 2


def test_adag_scales_each_weight_by_its_drift_since_the_pull():
    eta = 0.1
    with serve("adag") as ps, client(ps, 0) as c0, client(ps, 1) as c1:
        c0.request(messages.PULL)
        c1.request(messages.PULL)
        other = np.zeros(N, np.float32)
        other[:10] = 1.0                      # worker 1 moves the first ten weights
        c1.request(messages.COMMIT, payload=other)
        mine = np.full(N, 0.5, np.float32)
        c0.request(messages.COMMIT, payload=mine)
        expected = other + mine / (1.0 + other ** 2 / eta)
        np.testing.assert_allclose(ps.centre, expected, rtol=1e-6)
        assert ps.centre[0] < 1.0 + 0.5 and ps.centre[-1] == pytest.approx(0.5)


def test_dynsgd_divides_by_staleness_plus_one():
    with serve("dynsgd") as ps, client(ps, 0) as c0, client(ps, 1) as c1:
        c0.request(messages.PULL)
        for _ in range(3):                    # three updates by worker 1 since worker 0 pulled
            c1.request(messages.COMMIT, payload=np.zeros(N, np.float32))
        c0.request(messages.COMMIT, payload=np.full(N, 4.0, np.float32))
        np.testing.assert_allclose(ps.centre, 1.0)
        assert ps.stats()["workers"][0]["staleness_histogram"] == {3: 1}


def test_aeasgd_replies_the_elastic_difference():
    start = np.ones(N, np.float32)
    with serve("aeasgd", initial=start, rho=5.0) as ps, client(ps, 0) as c:   # α = 5 × 0.1
        theta = np.full(N, 3.0, np.float32)
        elastic = c.request(messages.COMMIT, payload=theta).payload
        np.testing.assert_allclose(elastic, 0.5 * (3.0 - 1.0))
        np.testing.assert_allclose(ps.centre, 2.0)


def _round(ps, payloads):
    replies = {}

    def run(w):
        with client(ps, w) as c:
            replies[w] = c.request(messages.COMMIT, payload=payloads[w]).payload.copy()

    threads = [threading.Thread(target=run, args=(w,)) for w in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return replies


def test_averaging_round_gives_every_worker_the_mean():
    with serve("averaging") as ps:
        replies = _round(ps, {0: np.full(N, 1.0, np.float32), 1: np.full(N, 3.0, np.float32)})
        assert all(np.allclose(r, 2.0) for r in replies.values())
        np.testing.assert_allclose(ps.centre, 2.0)


def test_easgd_round_is_the_elastic_symmetric_update():
    with serve("easgd", alpha=0.25) as ps:
        replies = _round(ps, {0: np.full(N, 1.0, np.float32), 1: np.full(N, 3.0, np.float32)})
        np.testing.assert_allclose(replies[0], 0.0)          # workers get the old centre
        np.testing.assert_allclose(ps.centre, 0.25 * (1 + 3))


def test_lost_synchronous_worker_fails_the_round_quickly():
    with serve("averaging") as ps:
        gone = client(ps, 1)
        gone._sock.close()                    # vanishes without BYE
        time.sleep(0.3)
        t0 = time.monotonic()
        with pytest.raises(PSRemoteError, match="worker 1 was lost"):
            with client(ps, 0) as c:   # the round is refused at once
                c.request(messages.COMMIT, payload=np.zeros(N, np.float32))
        assert time.monotonic() - t0 < 5


def test_garbage_on_the_port_leaves_the_centre_untouched():
    start = np.arange(N, dtype=np.float32)
    with serve("downpour", initial=start) as ps:
        rng = np.random.default_rng(0)
        for _ in range(5):
            with socket.create_connection(ps.address, timeout=5) as s:
                s.sendall(rng.bytes(4096))
        with client(ps, 0) as c:
            c.request(messages.PULL)
        time.sleep(0.3)
        assert np.array_equal(ps.centre, start)
        assert sum(ps.stats()["transport"]["dropped"].values()) >= 5


def test_wrong_worker_id_is_an_error_not_a_crash():
    with serve("downpour", num_workers=1) as ps:
        with pytest.raises(PSConnectionError, match="worker id 5 outside 0..0"):
            client(ps, 5)                     # refused at authentication
        with client(ps, 0) as c:
            assert c.request(messages.PULL).payload.shape == (N,)


def test_worker_lost_while_another_waits_in_the_round():
    with serve("easgd") as ps:
        waiting = client(ps, 0)
        leaving = client(ps, 1)
        t, errors = commit_in_background(waiting, np.zeros(N, np.float32))
        leaving._sock.close()
        t.join(5)
        assert not t.is_alive() and errors and "worker 1 was lost" in errors[0]
        waiting.close()


@pytest.mark.parametrize("name", ["downpour", "adag", "dynsgd", "aeasgd", "agn", "averaging"])
def test_poisoned_commits_never_reach_the_centre(name):
    """NaN, inf and wrong-sized commits are refused with a message naming the worker and what
    it sent, in every rule; θ̃ is unchanged and good commits are still served."""
    start = np.arange(N, dtype=np.float32)
    with serve(name, num_workers=1, initial=start) as ps, client(ps, 0) as c:
        c.request(messages.PULL)
        for bad, what in ((np.full(N, np.nan, np.float32), "1000 non-finite values"),
                          (np.where(np.arange(N) == 7, np.inf, 0).astype(np.float32),
                           "1 non-finite values"),
                          (np.zeros(N + 1, np.float32), "of 1001 values, but the model has 1000")):
            with pytest.raises(PSRemoteError, match=f"worker 0 sent a commit.*{what}"):
                c.request(messages.COMMIT, payload=bad)
            assert np.array_equal(ps.centre, start) and ps.updates == 0
            if name == "averaging":     # a synchronous run cannot go on: it stays failed
                with pytest.raises(PSRemoteError, match="refused"):
                    c.request(messages.COMMIT, payload=np.zeros(N, np.float32))
                return
        c.request(messages.COMMIT, payload=np.zeros(N, np.float32))
        assert ps.updates == 1 and np.isfinite(ps.centre).all()


def test_a_bad_synchronous_commit_releases_the_round_at_once():
    with serve("averaging") as ps, client(ps, 0) as good, \
            client(ps, 1) as bad:
        t, errors = commit_in_background(good, np.ones(N, np.float32))   # waits in the round
        t0 = time.monotonic()
        with pytest.raises(PSRemoteError, match="worker 1 sent a commit of 10 values"):
            bad.request(messages.COMMIT, payload=np.ones(10, np.float32))
        t.join(5)
        assert not t.is_alive() and time.monotonic() - t0 < 5
        assert errors and "worker 1 sent a commit" in errors[0], errors
        assert np.array_equal(ps.centre, np.zeros(N, np.float32))


class Relay:
    """A man in the middle on loopback between a worker and the server that does not know the
    secret: it forwards the handshake, then flips, replays or injects one COMMIT frame."""

    AUTH = 36 + 64                    # the worker's AUTH frame
    PULL = 36 + 16                    # a PULL frame and its tag
    COMMIT = 36 + 4 * N + 16

    def __init__(self, target, mode: str):
        self.target, self.mode = target, mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        threading.Thread(target=self._run, daemon=True).start()

    def _pipe(self, src, dst, tamper=None):
        passed, held = 0, b""          # the handshake and the PULL pass, the COMMIT is held
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if tamper is None or passed < 0:
                    dst.sendall(data)
                    continue
                free = max(0, self.AUTH + self.PULL - passed)
                dst.sendall(data[:free])
                passed += len(data[:free])
                held += data[free:]
                if len(held) >= self.COMMIT:
                    dst.sendall(tamper(held[:self.COMMIT]) + held[self.COMMIT:])
                    passed = -1
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _tamper(self, commit: bytes) -> bytes:
        if self.mode == "flip":            # one bit of one weight of Δ
            return commit[:40] + bytes([commit[40] ^ 1]) + commit[41:]
        if self.mode == "replay":          # the same, valid commit twice
            return commit + commit
        return commit[:-16] + os.urandom(16) + commit   # inject: a guessed tag, then the real

    def _run(self):
        client, _ = self.listener.accept()
        upstream = socket.create_connection(self.target)
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream, self._tamper)


@pytest.mark.parametrize("mode", ["flip", "replay", "inject"])
def test_a_relay_cannot_flip_replay_or_inject_a_frame(mode):
    with serve("downpour", num_workers=1) as ps:
        relay = Relay(ps.address, mode)
        c = Client(*relay.address, ps.secret, 0, connect_timeout=5, io_timeout=10)
        c.request(messages.PULL)
        delta = np.ones(N, np.float32)
        if mode == "replay":       # the first copy is genuine; its replay is caught
            c.request(messages.COMMIT, payload=delta)
            deadline = time.monotonic() + 5
            while ps.stats()["transport"]["dropped"].get("bad_mac") != 1 \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ps.updates == 1 and np.array_equal(ps.centre, delta)
        else:
            with pytest.raises(PSConnectionError):
                c.request(messages.COMMIT, payload=delta)
            assert ps.updates == 0 and not ps.centre.any()
        assert ps.stats()["transport"]["dropped"].get("bad_mac") == 1
        c.close()


@pytest.mark.parametrize("name", ["downpour", "aeasgd"])
def test_overlapped_commits_lose_no_window_and_fold_the_replies_in(name):
    """Each commit is in flight during the next window; after the epoch-end settle, the centre
    holds every window's progress. One DOWNPOUR worker: θ̃ ends exactly where the worker is (the
    identity of the non-overlapped exchange). Two workers: their windows missed each other's
    commits, and the replies carry θ̃'s update count."""
    from distkeras.exchange import OverlappedParameterServerExchange, WorkerContext

    rng = np.random.default_rng(0)
    for workers in (1, 2):
        with serve(name, num_workers=workers) as ps:
            contexts = [WorkerContext(worker=w, num_workers=workers, secret=ps.secret,
                                      coordinator=ps.address, parameter_server=ps.address,
                                      connect_timeout=5, overlap=True) for w in range(workers)]
            assert all(isinstance(ps.algorithm.exchange(c), OverlappedParameterServerExchange)
                       for c in contexts)
            steps = [rng.normal(size=(8, N)).astype(np.float32) * 0.01 for _ in contexts]
            done = {}

            def train(w):
                with ps.algorithm.exchange(contexts[w]) as exchange:
                    theta = exchange.start(None)
                    for step in steps[w]:
                        theta = exchange.after_window(theta + step, 1)
                        time.sleep(0.002)
                    settled = exchange.settle(theta)
                    done[w] = (settled, exchange.stats, exchange.settle(settled))

            threads = [threading.Thread(target=train, args=(w,)) for w in range(workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert len(done) == workers
            assert ps.updates == 8 * workers                     # every window committed
            assert all(again is None for _, _, again in done.values())   # nothing left in flight
            assert all(stats.exchanges == 8 for _, stats, _ in done.values())
            if workers == 1 and name == "downpour":
                np.testing.assert_allclose(ps.centre, steps[0].sum(0), atol=1e-5)
                np.testing.assert_allclose(done[0][0], ps.centre, atol=1e-5)
                assert done[0][1].missed_commits == 0
            if workers == 2:
                assert sum(stats.missed_commits for _, stats, _ in done.values()) > 0


# -- real faults: silent crashes, contested ids, finite commits that overflow ------------------
SILENT_WORKER = """
import sys, time
import numpy as np
from distkeras import messages
from distkeras.transport import Client
host, port, secret = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
c = Client(host, port, secret, 0, connect_timeout=10)
c.request(messages.PULL)
c.request(messages.COMMIT, payload=np.ones(int(sys.argv[4]), np.float32))
print("COMMITTED", flush=True)
time.sleep(600)
"""


def test_a_silently_crashed_worker_is_replaced_by_its_retried_task():
    """A worker whose process stops dead (SIGSTOP: no FIN, its socket looks alive forever) is
    replaced at once by a new connection for its id, which trains on; the old connection's
    later frames are never applied, and the worker is not reported lost."""
    import signal
    import subprocess
    import sys

    with serve("downpour") as ps:
        proc = subprocess.Popen([sys.executable, "-c", SILENT_WORKER, *map(str, ps.address),
                                 ps.secret.hex(), str(N)], stdout=subprocess.PIPE, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        try:
            assert proc.stdout.readline().strip() == "COMMITTED"
            os.kill(proc.pid, signal.SIGSTOP)
            t0 = time.monotonic()
            with client(ps, 0) as retried:
                assert time.monotonic() - t0 < 2
                start = retried.request(messages.PULL).payload.copy()
                assert np.array_equal(start, np.ones(N, np.float32))
                for _ in range(3):
                    retried.request(messages.COMMIT, payload=np.ones(N, np.float32))
            assert np.array_equal(ps.centre, 4 * np.ones(N, np.float32)) and ps.updates == 4
            assert ps.failure is None
            assert ps.stats()["transport"]["dropped"].get("superseded") == 1
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_clean_reconnects_under_cpu_load_are_all_accepted():
    """100 close-and-reconnect cycles of one worker id while both cores are busy: none is
    refused (the old connection's goodbye may still be in flight: the newest wins)."""
    import multiprocessing

    burners = [multiprocessing.Process(target=_burn, args=(8.0,), daemon=True) for _ in range(2)]
    for b in burners:
        b.start()
    try:
        with serve("downpour", num_workers=1) as ps:
            for _ in range(100):
                with client(ps, 0) as c:
                    c.request(messages.COMMIT, payload=np.ones(N, np.float32))
            assert ps.updates == 100
    finally:
        for b in burners:
            b.terminate()


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_contested_worker_id_never_holds_up_anyone_else():
    """Worker 0 waits in a synchronous round; a new connection claims id 0. It is served at
    once, and a third worker gets its challenge within the pre-auth deadline meanwhile (no
    liveness check that waits on a socket under the admission lock)."""
    with serve("averaging", num_workers=3) as ps:
        waiting = client(ps, 0)
        t, errors = commit_in_background(waiting, np.ones(N, np.float32))
        t0 = time.monotonic()
        claimant = client(ps, 0)
        other = client(ps, 1)
        assert time.monotonic() - t0 < 2.0
        assert other.request(messages.PULL).payload.shape == (N,)
        assert ps.failure is None        # replaced, not lost
        t.join(5)
        # the replaced connection was closed under its commit, which was dropped, not applied
        assert errors and "closed the connection" in errors[0], errors
        assert ps.updates == 0
        for c in (claimant, other, waiting):
            c.close()


def test_a_commit_of_a_replaced_connection_is_never_applied_after_the_newer_ones():
    """Worker 0's commit waits for θ̃'s lock; meanwhile its retried task connects and commits.
    The old frame, once it gets the lock, is dropped: θ̃ holds only the newer commit."""
    with serve("downpour") as ps:
        old = client(ps, 0)
        old.request(messages.PULL)
        ps._lock.acquire()                    # a long commit of another worker, say
        try:
            t, errors = commit_in_background(old, np.full(N, 5.0, np.float32))
            new = client(ps, 0)               # replaces the old connection at once
        finally:
            ps._lock.release()
        t.join(5)
        new.request(messages.PULL)
        new.request(messages.COMMIT, payload=np.ones(N, np.float32))
        assert np.array_equal(ps.centre, np.ones(N, np.float32)) and ps.updates == 1, errors
        new.close()
        old.close()


def test_a_synchronous_round_never_completes_with_a_replaced_connections_payload():
    """Worker 0 commits, then comes back on a new connection before the round completes: the
    round waits for the newer commit and uses it, not the stale one."""
    with serve("averaging") as ps:
        old, other = client(ps, 0), client(ps, 1)
        t_old, _ = commit_in_background(old, np.full(N, 100.0, np.float32))
        new = client(ps, 0)
        t_other, errors = commit_in_background(other, np.full(N, 2.0, np.float32))
        assert ps.updates == 0 and t_other.is_alive()     # w0's stale payload does not count
        new.request(messages.COMMIT, payload=np.full(N, 4.0, np.float32))
        t_other.join(5)
        assert ps.updates == 1 and not errors, errors
        assert np.allclose(ps.centre, 3.0)                # mean of 4 and 2, not of 100 and 2
        t_old.join(5)
        for c in (new, other, old):
            c.close()


BIG = 3e38      # finite; twice it is not


# rule -> (θ̃ at the start, commits that leave θ̃ finite, the commit that overflows)
OVERFLOWS = {
    "downpour": (0.0, [BIG], BIG), "hogwild": (0.0, [BIG], BIG), "agn": (0.0, [BIG], BIG),
    "adag": (0.0, [BIG], BIG), "dynsgd": (0.0, [BIG], BIG),
    "aeasgd": (BIG, [], -BIG),            # E = α(θ − θ̃): −3e38 − 3e38 overflows
}


@pytest.mark.parametrize("name", sorted(OVERFLOWS))
def test_finite_commits_that_overflow_are_refused_and_the_centre_stays_finite(name):
    """Two commits of 3e38 are each finite, their sum is not: the rule's result is checked,
    the commit refused with the overflow named, θ̃ rolled back and still served."""
    initial, fine, overflowing = OVERFLOWS[name]
    with serve(name, num_workers=1, initial=np.full(N, initial, np.float32)) as ps, \
            client(ps, 0) as c:
        c.request(messages.PULL)
        for value in fine:
            c.request(messages.COMMIT, payload=np.full(N, value, np.float32))
        before, updates = ps.centre, ps.updates
        with pytest.raises(PSRemoteError, match=r"worker 0's commit would have made θ̃ "
                                                r"non-finite: the \w+ rule overflowed float32"):
            c.request(messages.COMMIT, payload=np.full(N, overflowing, np.float32))
        assert np.isfinite(ps.centre).all() and np.array_equal(ps.centre, before)
        assert ps.updates == updates
        c.request(messages.COMMIT, payload=np.zeros(N, np.float32))     # still served
        assert ps.updates == updates + 1


def test_a_synchronous_round_that_overflows_fails_at_once_and_averaging_never_does():
    """EASGD's round sums the replicas: two of 3e38 overflow, the round fails for both
    workers with the overflow named. Averaging's mean of the same stays finite (3e38)."""
    for name in ("easgd", "averaging"):
        with serve(name) as ps, client(ps, 0) as a, client(ps, 1) as b:
            t, errors = commit_in_background(a, np.full(N, BIG, np.float32))
            if name == "averaging":
                b.request(messages.COMMIT, payload=np.full(N, BIG, np.float32))
                t.join(5)
                assert not errors and np.allclose(ps.centre, BIG, rtol=1e-6)
                continue
            with pytest.raises(PSRemoteError, match="the synchronous round would have made "
                                                    "θ̃ non-finite"):
                b.request(messages.COMMIT, payload=np.full(N, BIG, np.float32))
            t.join(5)
            assert errors and "non-finite" in errors[0]
            assert np.array_equal(ps.centre, np.zeros(N, np.float32))
