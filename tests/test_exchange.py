"""The exchanges between workers over real sockets (no Spark, no TensorFlow): ring all-reduce,
neighbour mixing, pairwise gossip, the topologies' mixing matrices, and the peer endpoints'
behaviour with garbage, strangers and unreachable peers. Workers are threads with their own
endpoints, meeting through a real coordinator."""
from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np
import pytest

from distkeras import messages
from distkeras.driver.coordinator import Coordinator
from distkeras.exchange import (NeighbourExchange, PairwiseGossip, PeerLostError, RingExchange,
                                SharedReplica, Topology, WorkerContext)
from distkeras.transport import Client, PSRemoteError


@contextlib.contextmanager
def workers(n, size=10, synchronous=True, **ctx_kwargs):
    """A coordinator and ``n`` worker contexts, each with its own control client."""
    with Coordinator(n, np.zeros(size, np.float32), synchronous=synchronous) as coord:
        clients = [Client(*coord.address, coord.secret, w, connect_timeout=5) for w in range(n)]
        contexts = [WorkerContext(worker=w, num_workers=n, secret=coord.secret,
                                  coordinator=coord.address, connect_timeout=5, round_timeout=20,
                                  peer_host="127.0.0.1", control=clients[w], **ctx_kwargs)
                    for w in range(n)]
        try:
            yield coord, contexts
        finally:
            for c in clients:
                c.close()


def hello(ctx, exchange):
    ctx.control.request(messages.HELLO, payload={"pid": 0, "host": "test",
                                                 "endpoint": exchange.endpoint})


def run_all(fns, timeout=60):
    """Run one function per worker in threads; re-raise the first error."""
    results, errors = {}, []

    def call(i, fn):
        try:
            results[i] = fn()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i, f)) for i, f in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    if errors:
        raise errors[0]
    return [results[i] for i in range(len(fns))]


@pytest.mark.parametrize("n", [2, 3, 4])
def test_ring_all_reduce_is_the_exact_mean_on_every_worker(n):
    rng = np.random.default_rng(n)
    vectors = [rng.normal(size=1003).astype(np.float32) for _ in range(n)]   # not divisible by n
    with workers(n, size=1003) as (coord, contexts):
        exchanges = [RingExchange(None, c) for c in contexts]

        def worker(i):
            with exchanges[i] as ex:
                hello(contexts[i], ex)
                ex.start(vectors[i])
                first = ex.mean(vectors[i])
                second = ex.mean(vectors[i] * 2)          # a second round on the same ring
                return first, second, ex.stats

        out = run_all([lambda i=i: worker(i) for i in range(n)])
    expected = np.mean(vectors, axis=0)
    for first, second, stats in out:
        np.testing.assert_allclose(first, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(second, 2 * expected, rtol=1e-5, atol=1e-6)
        # bandwidth-optimal: each worker sends 2(n-1)/n of the vector per round
        assert stats.bytes_sent == pytest.approx(2 * 2 * (n - 1) / n * 1003 * 4, rel=0.01)
    assert all(np.array_equal(out[0][0], o[0]) for o in out), "replicas must be identical"


def test_mixing_matrices_are_symmetric_and_doubly_stochastic():
    for name in Topology.NAMES:
        for n in (1, 2, 3, 4, 6, 8):
            w = Topology.named(name, n).mixing_matrix()
            np.testing.assert_allclose(w, w.T)
            np.testing.assert_allclose(w.sum(axis=0), 1.0)
            np.testing.assert_allclose(w.sum(axis=1), 1.0)
            assert (w >= 0).all()
    assert Topology.named("ring", 4).neighbours(0) == [1, 3]
    with pytest.raises(ValueError, match="unknown topology 'star'"):
        Topology.named("star", 4)


def test_neighbour_mixing_is_W_x_and_preserves_the_mean():
    n, size = 4, 50
    rng = np.random.default_rng(0)
    x = [rng.normal(size=size).astype(np.float32) for _ in range(n)]
    ring = Topology.named("ring", n)
    with workers(n, size) as (coord, contexts):
        exchanges = [NeighbourExchange(None, c, ring) for c in contexts]

        def worker(i):
            with exchanges[i] as ex:
                hello(contexts[i], ex)
                ex.start(x[i])
                return ex.after_window(x[i], steps=1)

        mixed = run_all([lambda i=i: worker(i) for i in range(n)])
    expected = ring.mixing_matrix() @ np.stack(x)
    np.testing.assert_allclose(np.stack(mixed), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.mean(mixed, axis=0), np.mean(x, axis=0), atol=1e-6)


def test_pairwise_gossip_preserves_the_mean_while_both_sides_train():
    size = 200
    rng = np.random.default_rng(1)
    a, b = (rng.normal(size=size).astype(np.float32) for _ in range(2))
    shared_a, shared_b = SharedReplica(a), SharedReplica(b)
    # a calls b: b answers from its shared replica; meanwhile both take local steps
    answer = shared_b.respond(shared_a.snapshot(), np.empty(size, np.float32))
    shared_a.absorb(a, answer)
    step_a, step_b = (rng.normal(size=size).astype(np.float32) * 0.1 for _ in range(2))
    new_a = shared_a.fold(a + step_a)
    new_b = shared_b.fold(b + step_b)
    np.testing.assert_allclose(new_a + new_b, a + step_a + b + step_b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_a - step_a, (a + b) / 2, atol=1e-6)   # they really averaged


@pytest.mark.parametrize("compression", [None, "int8"])
@pytest.mark.parametrize("overlap", [True, False], ids=["adpsgd", "swarmsgd"])
def test_gossip_over_the_wire_preserves_the_mean(overlap, compression):
    """Exactly, compressed too: both sides of a pair move by the values the wire carried."""
    n, size = 4, 300
    rng = np.random.default_rng(2)
    x = [rng.normal(size=size).astype(np.float32) for _ in range(n)]
    with workers(n, size, synchronous=False, compression=compression) as (coord, contexts):
        exchanges = [PairwiseGossip(None, c, Topology.named("complete", n), overlap=overlap)
                     for c in contexts]
        for ex, ctx in zip(exchanges, contexts):
            ex.open()
            hello(ctx, ex)
        barrier = threading.Barrier(n)

        def worker(i):
            theta = exchanges[i].start(x[i])
            exchanges[i].group.meet(wait_for_all=True)
            for _ in range(20):
                time.sleep(0.005)       # the local steps
                theta = exchanges[i].after_window(theta, steps=1)
            barrier.wait()              # nobody closes its endpoint while others still call
            exchanges[i]._join()
            barrier.wait()
            return exchanges[i]

        done = run_all([lambda i=i: worker(i) for i in range(n)])
        finals = [ex.shared.snapshot() for ex in done]     # with corrections not yet folded
        for ex in exchanges:
            ex.close()
    assert sum(ex.stats.exchanges for ex in done) >= 10
    np.testing.assert_allclose(np.mean(finals, axis=0), np.mean(x, axis=0), atol=1e-5)
    if compression:                     # int8 on the wire: ~3.9x fewer bytes than float32
        assert all(ex.stats.raw_bytes_sent > 3 * ex.stats.bytes_sent for ex in done)
    spread = lambda v: float(np.square(np.stack(v) - np.mean(v, axis=0)).sum())  # noqa: E731
    assert spread(finals) < 0.5 * spread(x)      # and they moved toward consensus


def test_a_passive_worker_that_finished_first_keeps_answering_until_its_callers_are_done():
    """AD-PSGD: worker 1 (passive) has no data left before worker 0 (active) starts gossiping;
    it still answers every call, and the mean of the final replicas is exact."""
    size = 50
    x = [np.full(size, v, np.float32) for v in (0.0, 4.0)]
    with workers(2, size, synchronous=False) as (coord, contexts):
        exchanges = [PairwiseGossip(None, c, Topology.named("ring", 2), overlap=True)
                     for c in contexts]
        assert exchanges[1].callers == [0] and exchanges[0].callers == []
        for ex, ctx in zip(exchanges, contexts):
            ex.open()
            hello(ctx, ex)
        passive_done = threading.Event()

        def active():
            theta = exchanges[0].start(x[0])
            for _ in range(10):
                time.sleep(0.02)
                theta = exchanges[0].after_window(theta, steps=1)
                exchanges[0]._join()
            assert not passive_done.is_set(), "the passive worker stopped serving too early"
            theta = exchanges[0].finish(theta)
            contexts[0].control.request(messages.DONE)
            return theta

        def passive():
            theta = exchanges[1].finish(exchanges[1].start(x[1]))   # no windows at all
            passive_done.set()
            contexts[1].control.request(messages.DONE)
            return theta

        finals = run_all([active, passive])
        for ex in exchanges:
            ex.close()
    assert exchanges[0].stats.exchanges == 10 and exchanges[1].stats.exchanges == 10
    np.testing.assert_allclose(finals[0] + finals[1], x[0] + x[1], atol=1e-5)
    assert abs(float(finals[0][0] - finals[1][0])) < 0.1     # 10 pairwise averages: consensus


def test_garbage_and_strangers_on_a_peer_endpoint_are_dropped_and_counted():
    size = 64
    theta = np.arange(size, dtype=np.float32)
    with workers(2, size, synchronous=False) as (coord, contexts):
        ex = PairwiseGossip(None, contexts[1], Topology.named("ring", 2), overlap=True)
        with ex:
            hello(contexts[1], ex)
            ex.start(theta)
            host, port = ex.endpoint.rsplit(":", 1)
            rng = np.random.default_rng(0)
            for _ in range(5):
                with socket.create_connection((host, int(port)), timeout=5) as s:
                    s.sendall(rng.bytes(4096))
            with pytest.raises(Exception, match="authentication"):
                Client(host, int(port), b"x" * 32, 0, connect_timeout=2)   # wrong secret
            time.sleep(0.3)
            assert sum(ex.peer_endpoint.dropped.values()) >= 6
            assert np.array_equal(ex.shared.snapshot(), theta)            # replica untouched
            # an authenticated peer's NaN replica is refused, and nothing of it is kept
            with Client(host, int(port), coord.secret, 0, connect_timeout=2) as peer:
                poisoned = np.full(size, np.nan, np.float32)
                with pytest.raises(PSRemoteError, match="non-finite values"):
                    peer.request(messages.GOSSIP, payload=poisoned)
                with pytest.raises(PSRemoteError, match="gossip of 3 values"):
                    peer.request(messages.GOSSIP, payload=np.zeros(3, np.float32))
            assert np.array_equal(ex.shared.snapshot(), theta)
            # and it still serves its real peer
            with Client(host, int(port), coord.secret, 0, connect_timeout=2) as peer:
                reply = peer.request(messages.GOSSIP, payload=np.zeros(size, np.float32))
                np.testing.assert_array_equal(reply.payload, theta)
            np.testing.assert_allclose(ex.shared.snapshot(), theta / 2)


def test_unreachable_peer_names_worker_address_and_setting():
    with workers(2) as (coord, contexts):
        ex = RingExchange(None, contexts[0])
        with ex:
            with socket.socket() as s:           # a port nobody listens on
                s.bind(("127.0.0.1", 0))
                dead = s.getsockname()[1]
            ex.group.table = {0: ex.endpoint, 1: f"127.0.0.1:{dead}"}
            ex.group.connect_timeout = 0.5
            t0 = time.monotonic()
            with pytest.raises(PeerLostError) as err:
                ex.mean(np.ones(10, np.float32))
            assert time.monotonic() - t0 < 10
    message = str(err.value)
    assert f"peer worker 1 at 127.0.0.1:{dead}" in message
    assert "peer_host=" in message and "peer_ports=" in message


def test_lost_ring_peer_fails_the_round_quickly_naming_it():
    with workers(2) as (coord, contexts):
        exchanges = [RingExchange(None, c) for c in contexts]
        for ex, ctx in zip(exchanges, contexts):
            ex.open()
            hello(ctx, ex)
        run_all([lambda i=i: exchanges[i].start(np.zeros(10, np.float32)) for i in range(2)])
        # worker 1 goes away without a word: its control connection and endpoint close
        exchanges[1].close()
        contexts[1].control._sock.close()
        t0 = time.monotonic()
        with pytest.raises(PeerLostError, match="worker 1"):
            exchanges[0].mean(np.ones(10, np.float32))
        assert time.monotonic() - t0 < 10
        exchanges[0].close()


# -- finite inputs whose combination overflows float32 ------------------------------------------
BIG = np.float32(3e38)


def on_a_ring(body) -> list:
    """``body(i, exchange)`` on each of two workers of a started ring; what each returned."""
    with workers(2, size=16) as (coord, contexts):
        exchanges = [RingExchange(None, c) for c in contexts]

        def worker(i):
            with exchanges[i] as ex:
                hello(contexts[i], ex)
                ex.start(np.zeros(16, np.float32))
                return body(i, ex)

        return run_all([lambda i=i: worker(i) for i in range(2)])


@pytest.mark.parametrize("case", ["overflow", "NaN in chunk 0", "NaN in chunk 1"])
def test_a_non_finite_ring_mean_fails_every_worker_at_once(case):
    """3e38 + 3e38 is not a float32, and a NaN in one worker's vector, in either chunk of the
    ring (each cut into several segments), poisons the mean: every worker stops with it named,
    instead of training on (or sending) it."""
    from distkeras.exchange import DivergedError

    def vector(i):
        if case == "overflow":
            return np.full(16, BIG, np.float32)
        v = np.ones(16, np.float32)
        if i == 0:
            v[2 if case.endswith("0") else 13] = np.nan
        return v

    def worker(i, ex):
        ex.ring.segment = 3             # chunks of 8 values in 3 segments
        try:
            ex.mean(vector(i))
        except DivergedError as exc:
            return str(exc)
        return None

    out = on_a_ring(worker)
    assert all(o is not None and "all-reduced mean became non-finite" in o for o in out), out


def test_a_ring_mean_unchecked_brings_an_overflow_to_every_worker_and_stays_in_step():
    """Under loss scaling an overflow is expected, and handled (every replica skips the same
    step): with ``check=False`` the non-finite mean reaches every worker, and the next round
    is exact again."""
    def worker(i, ex):
        scaled = np.full(16, np.inf if i == 0 else 1.0, np.float32)
        first = ex.mean(scaled, check=False).copy()
        return first, ex.mean(np.full(16, float(i), np.float32)).copy()

    for first, second in on_a_ring(worker):
        assert np.isposinf(first).all(), first
        np.testing.assert_array_equal(second, np.full(16, 0.5, np.float32))


def test_pairwise_gossip_of_extreme_replicas_stays_finite_and_keeps_the_mean():
    """(3e38 − (−3e38))/2 overflows as written; the gossip step computes x/2 − y/2: both
    sides land on the exact mean, 0, and every value stays finite."""
    caller = SharedReplica(np.full(8, BIG, np.float32))
    callee = SharedReplica(np.full(8, -BIG, np.float32))
    sent = caller.snapshot()
    answer = callee.respond(sent, np.empty(8, np.float32))
    caller.absorb(sent, answer)
    a, b = caller.fold(sent), callee.fold(answer)      # neither trained meanwhile
    assert np.isfinite(a).all() and np.isfinite(b).all()
    np.testing.assert_array_equal(a, np.zeros(8, np.float32))
    np.testing.assert_array_equal(b, np.zeros(8, np.float32))


def test_a_neighbour_mix_that_overflows_is_refused_naming_the_round():
    """D-PSGD checks the mixed replica before the next window trains on it."""
    from distkeras.exchange import DivergedError

    ring = Topology.named("ring", 3)
    with workers(3, size=8) as (coord, contexts):
        exchanges = [NeighbourExchange(None, c, ring) for c in contexts]

        def worker(i):
            with exchanges[i] as ex:
                hello(contexts[i], ex)
                ex.start(np.zeros(8, np.float32))
                ex.weights = {j: np.float32(1.0) for j in ex.weights}   # a matrix gone wrong
                try:
                    ex.after_window(np.full(8, BIG, np.float32), steps=1)
                except DivergedError as exc:
                    return str(exc)
                return None

        out = run_all([lambda i=i: worker(i) for i in range(3)])
    assert all(o and "replica mixed with its neighbours became non-finite" in o for o in out), out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_finds_every_nan_and_inf_and_passes_finite_vectors_whose_norm_overflows(dtype):
    from distkeras.vectors import all_finite

    big = np.finfo(dtype).max / 2
    assert all_finite(np.full(1000, big, dtype))         # x·x overflows: still finite
    assert all_finite(np.zeros((3, 4), dtype))
    for bad in (np.nan, np.inf, -np.inf):
        for where in (0, 517, 999):
            v = np.full(1000, big if where == 517 else 1.0, dtype)
            v[where] = bad
            assert not all_finite(v), (bad, where)
            assert not all_finite(v.reshape(10, 100))
    assert not all_finite(np.array([1.0, np.nan], np.float16))
