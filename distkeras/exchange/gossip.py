"""Gossip between workers: neighbour averaging (D-PSGD) and pairwise averaging (AD-PSGD,
SwarmSGD), over the peer endpoints of ``peers`` and the graphs of ``topology``.

Pairwise averaging never makes a worker wait for another worker's training loop: the callee's
endpoint answers from its :class:`SharedReplica` (the replica as its peers see it), and the
correction each side receives is folded into its replica at its next window boundary. The two
corrections cancel, (x_j − x_i)/2 + (x_i − x_j)/2 = 0, so every interaction preserves the mean of
the replicas exactly, even while both sides keep training.

Example::

    shared = SharedReplica(theta)
    theta = shared.fold(theta)        # at a window boundary: apply corrections, publish theta
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

import numpy as np

from distkeras import messages
from distkeras.compression import Mirror
from distkeras.exchange.base import WorkerContext
from distkeras.exchange.peers import PeerExchange, PeerLostError, Rounds, ack, reply_buffer
from distkeras.exchange.topology import Topology
from distkeras.transport import Reply
from distkeras.vectors import all_finite, check_finite

log = logging.getLogger(__name__)


class SharedReplica:
    """A worker's replica as its peers see it: the weights it last published plus the gossip
    corrections received since. Publishing keeps a reference (the training loop never writes
    into a window's output), so a window without gossip costs no copy."""

    def __init__(self, theta: np.ndarray):
        self._lock = threading.Lock()
        self._current = np.asarray(theta, dtype=np.float32)
        self._correction = np.zeros_like(self._current)
        self._dirty = False

    @property
    def size(self) -> int:
        return self._correction.size

    def fold(self, theta: np.ndarray) -> np.ndarray:
        """θ ← θ + (corrections since the last fold); publish θ; return it."""
        with self._lock:
            if self._dirty:
                theta = theta + self._correction
                self._correction.fill(0.0)
                self._dirty = False
            self._current = theta
        return theta

    def snapshot(self) -> np.ndarray:
        with self._lock:
            return self._current + self._correction if self._dirty else self._current.copy()

    def respond(self, other: np.ndarray, out: np.ndarray, compressor=None):
        """Callee side of x_i, x_j ← (x_i + x_j)/2: reply x_j (into ``out``), move to the mean.
        With a (dense) ``compressor`` the reply is C(x_j) and the move uses its decoding, the
        value the caller sees, so both moves still cancel exactly."""
        with self._lock:
            np.add(self._current, self._correction, out=out)
            reply = out
            if compressor is not None:
                reply = compressor.encode(out)
                out = compressor.decode(reply, out.size)[0]
            self._correction += _half_difference(other, out)
            self._dirty = True
        return reply

    def absorb(self, sent: np.ndarray, answer: np.ndarray) -> None:
        """Caller side: having sent ``sent`` and got the callee's ``answer``, move by
        (answer − sent)/2, the mirror of the callee's move."""
        with self._lock:
            self._correction += _half_difference(answer, sent)
            self._dirty = True


def _half_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a − b)/2 as a/2 − b/2: finite for any finite a and b (a − b can overflow float32), and
    still the exact negative of ``_half_difference(b, a)``, so both sides' moves cancel."""
    half = np.float32(0.5)
    return a * half - b * half


def refuse_non_finite(payload: np.ndarray, sender: int) -> None:
    """A peer's replica with NaN/inf never reaches this one (the sender gets the error)."""
    if not all_finite(payload):
        raise ValueError(f"refused a replica with non-finite values (NaN/inf) from worker "
                         f"{sender}")


class NeighbourExchange(PeerExchange):
    """D-PSGD's synchronous neighbour averaging: every window, x_i ← Σ_j W_ij x_j over i's
    neighbours in ``topology`` (W the Metropolis–Hastings mixing matrix).

    With ``compression=`` it is CHOCO gossip (Koloskova et al. 2019): every worker keeps the
    public copies x̂_j of itself and its neighbours (all equal to the common start), sends
    C(x_i − x̂_i), adds what it sent and received to the copies, and moves
    x_i ← x_i + γ Σ_j W_ij (x̂_j − x̂_i), γ the algorithm's ``consensus_step`` (else the
    compressor's). The mean of the replicas is kept exactly (W symmetric), and uncompressed
    with γ = 1 it is D-PSGD's mixing.
    """

    def __init__(self, algorithm, worker: WorkerContext, topology: Topology):
        super().__init__(algorithm, worker)
        self.topology = topology
        self.neighbours = topology.neighbours(worker.worker)
        self.weights = topology.mixing_weights(worker.worker)
        self.rounds = Rounds(worker.round_timeout)
        self._round = 0
        self.copies: dict[int, Mirror] = {}     # CHOCO's public copies x̂ (self and neighbours)

    @classmethod
    def refusal(cls, compressor):
        if compressor is not None and compressor.collective:
            return (f"compression={compressor.spec!r} is an all-reduce (the ring's); D-PSGD "
                    "mixes with its neighbours: use 'int8', 'fp16', 'bf16' or "
                    "'topk:<fraction>' (CHOCO gossip)")
        return None

    def handlers(self):
        return {messages.MIX: self._on_mix}

    def open(self) -> None:
        super().open()
        self.peer_endpoint.on_lost(lambda w: w in self.neighbours and self.rounds.fail(
            f"worker {self.worker.worker}: neighbour worker {w} was lost mid-round"))

    def start(self, theta: np.ndarray) -> np.ndarray:
        self.group.meet(wait_for_all=True)
        if self.compressor is not None:     # every replica starts from the same θ
            self.copies = {j: Mirror(self.compressor, theta)
                           for j in [self.worker.worker, *self.neighbours]}
        return theta

    def _on_mix(self, conn, frame):
        if conn.worker_id not in self.weights or conn.worker_id == self.worker.worker:
            raise ValueError(f"worker {conn.worker_id} is not a neighbour of "
                             f"{self.worker.worker} in the {self.topology.name} topology")
        if self.compressor is None:
            refuse_non_finite(frame.payload, conn.worker_id)
        elif not isinstance(frame.payload, bytes):
            raise ValueError(f"an uncompressed replica from worker {conn.worker_id} in a run "
                             f"with compression={self.compressor.spec!r}")
        self.rounds.deliver(frame.aux, frame)
        return ack(frame)

    def after_window(self, theta: np.ndarray, steps: int) -> np.ndarray:
        return self.timed(self._mix if self.compressor is None else self._choco, theta)

    def _choco(self, theta: np.ndarray) -> np.ndarray:
        """One CHOCO gossip round: send C(x_i − x̂_i), update the copies, move by γ."""
        me, size = self.worker.worker, theta.size
        mine = self.copies[me]
        blob = mine.send(theta)
        round_, self._round = self._round, self._round + 1
        self.rounds.open(round_, lambda frame: self.copies[frame.worker_id].receive(
            frame.payload, size))
        for peer in self.neighbours:
            self.group.request(peer, messages.MIX, blob, aux=round_)
        with self.stats.waiting():
            self.rounds.wait(len(self.neighbours), self._check, f"neighbours {self.neighbours}")
        step = np.zeros(size, np.float32)
        for j in self.neighbours:
            step += np.float32(self.weights[j]) * (self.copies[j].view - mine.view)
        gamma = getattr(self.algorithm, "consensus_step", None) or self.compressor.consensus_step
        mixed = theta + np.float32(gamma) * step
        check_finite(mixed, "replica mixed with its neighbours",
                     f"worker {me}, CHOCO gossip round {round_}")
        self.stats.raw_bytes_sent += theta.nbytes * len(self.neighbours)
        self.stats.feedback_norm = mine.norm
        self.stats.exchanges += 1
        self.stats.peers.update(self.neighbours)
        return mixed

    def _mix(self, theta: np.ndarray) -> np.ndarray:
        mixed = theta * np.float32(self.weights[self.worker.worker])
        round_, self._round = self._round, self._round + 1

        def apply(frame):
            if frame.payload.shape != mixed.shape:
                raise ValueError(f"neighbour replica of {frame.payload.size} values, expected "
                                 f"{mixed.size}")
            mixed.__iadd__(frame.payload * np.float32(self.weights[frame.worker_id]))

        self.rounds.open(round_, apply)
        for peer in self.neighbours:
            self.group.request(peer, messages.MIX, theta, aux=round_)
        with self.stats.waiting():
            self.rounds.wait(len(self.neighbours), self._check,
                             f"neighbours {self.neighbours}")
        check_finite(mixed, "replica mixed with its neighbours",
                     f"worker {self.worker.worker}, D-PSGD round {round_}")
        self.stats.exchanges += 1
        self.stats.peers.update(self.neighbours)
        return mixed

    def _check(self) -> None:
        table = self.group.refresh()
        gone = [p for p in self.neighbours if p not in table]
        if gone:
            raise PeerLostError(f"worker {self.worker.worker}: neighbour workers {gone} are no "
                                "longer registered with the driver (lost)")


class PairwiseGossip(PeerExchange):
    """Pairwise averaging with one random peer every window.

    ``overlap=True`` (AD-PSGD): wait-free; the averaging runs in a background thread on a
    snapshot while the next window computes, and its correction is folded in at the next
    boundary; only active (even) workers call passive (odd) neighbours, so no two workers wait on
    each other. ``overlap=False`` (SwarmSGD): the worker averages with a random neighbour before
    it goes on (any worker may call any neighbour; callees answer from their shared replica).

    A passive worker that finishes its data before its active neighbours keeps answering them
    until they are done or lost (at most ``round_timeout``): its replica goes on mixing, which
    keeps the mean of the replicas exact, and no active worker is left to train alone.
    """

    # an endpoint is listening before it is registered: a refused connection means a finished
    # or lost peer, skipped at once rather than retried
    peer_timeouts = (0.5, 30.0)
    linger = 0.0

    def __init__(self, algorithm, worker: WorkerContext, topology: Topology, overlap: bool):
        super().__init__(algorithm, worker)
        self.topology, self.overlap = topology, overlap
        self.rng = np.random.default_rng([worker.seed, worker.worker, 7919])
        self.candidates = (topology.passive_neighbours(worker.worker) if overlap
                           else topology.neighbours(worker.worker))
        #: the workers that call this one and never answer it (AD-PSGD's active neighbours)
        self.callers = ([j for j in topology.neighbours(worker.worker)
                         if worker.worker in topology.passive_neighbours(j)] if overlap else [])
        self.shared: Optional[SharedReplica] = None
        self._thread: Optional[threading.Thread] = None
        self._unreachable: set[int] = set()     # peers whose last gossip failed
        self._refreshed = 0.0

    def handlers(self):
        return {messages.GOSSIP: self._on_gossip}

    @classmethod
    def refusal(cls, compressor):
        if compressor is not None and not compressor.dense:
            return (f"compression={compressor.spec!r}: pairwise gossip (AD-PSGD, SwarmSGD) "
                    "averages whole replicas, answered asynchronously from a shared replica, "
                    "so it takes only compressors with a bounded error on every value ('fp16', "
                    "'bf16', 'int8'); top-k and PowerSGD need differences against copies both "
                    "sides keep in step: use DPSGD (CHOCO gossip) or a ring algorithm")
        return None

    def start(self, theta: np.ndarray) -> np.ndarray:
        self.shared = SharedReplica(theta)
        # wait for the peers that are still to come (a cold executor imports TensorFlow first),
        # not for those already done (a retried worker rejoining late)
        self.group.meet(wait_for_all=True, required=False)
        return theta

    def _on_gossip(self, conn, frame):
        if self.shared is None:
            raise ValueError("not training yet")
        size = self.shared.size
        other = frame.payload
        if self.compressor is not None:
            if not isinstance(other, bytes):
                raise ValueError(f"an uncompressed replica from worker {conn.worker_id} in a "
                                 f"run with compression={self.compressor.spec!r}")
            other = self.compressor.decode(other, size)[0]
        elif other.shape != (size,):
            raise ValueError(f"gossip of {other.size} values, the model has {size}")
        refuse_non_finite(other, conn.worker_id)
        out = self.shared.respond(other, reply_buffer(conn, other), self.compressor)
        if self.compressor is not None:
            self.stats.raw_bytes_sent += other.nbytes
        self.stats.peers.add(conn.worker_id)
        self.stats.exchanges += 1      # answered: an interaction for this worker too
        return Reply(frame.op, payload=out)

    def after_window(self, theta: np.ndarray, steps: int) -> np.ndarray:
        return self.timed(self._after_window, theta)

    def _after_window(self, theta: np.ndarray) -> np.ndarray:
        theta = self.shared.fold(theta)
        busy = self._thread is not None and self._thread.is_alive()
        if not busy and self.candidates and self._pick() is None:
            self._refresh(min_interval=1.0)   # every candidate failed: a retried peer moved?
        if not self.overlap:
            self._gossip_once()
            return self.shared.fold(theta)
        if not busy:
            self._thread = threading.Thread(target=self._gossip_once, daemon=True,
                                            name=f"distkeras-gossip-{self.worker.worker}")
            self._thread.start()
        return theta

    def _pick(self) -> Optional[int]:
        table = self.group.table
        live = [p for p in self.candidates if p in table and p not in self._unreachable]
        if not live:
            return None
        return int(live[self.rng.integers(len(live))])

    def _gossip_once(self) -> None:
        peer = self._pick()
        if peer is None:
            return
        sent = self.shared.snapshot()
        message = sent
        if self.compressor is not None:      # both sides move by the decoded values
            message = self.compressor.encode(sent)
            sent = self.compressor.decode(message, sent.size)[0]
            self.stats.raw_bytes_sent += sent.nbytes
        try:
            answer = self.group.request(peer, messages.GOSSIP, message).payload
        except PeerLostError as exc:   # asynchronous: skip the peer, look it up again later
            self._unreachable.add(peer)
            log.log(logging.INFO if self.stats.exchanges else logging.WARNING,
                    "gossip skipped: %s", exc)
            return
        self._mix_in(peer, sent, answer)

    def _mix_in(self, peer: int, sent: np.ndarray, answer) -> None:
        """Move this replica by half of (``peer``'s ``answer`` − what it was ``sent``), unless
        the answer is refused (it does not decode, or is not finite)."""
        if self.compressor is not None:
            try:
                answer = self.compressor.decode(answer, sent.size)[0]
            except ValueError as exc:    # refused, as a non-finite answer is
                log.warning("worker %d answered gossip with %s: not mixed in", peer, exc)
                self._unreachable.add(peer)
                return
        if not all_finite(answer):     # the peer diverged (it finds out itself): not mixed in
            self._unreachable.add(peer)
            log.warning("worker %d answered gossip with non-finite values (NaN/inf): not mixed "
                        "in", peer)
            return
        self._unreachable.discard(peer)
        self.shared.absorb(sent, answer)
        self.stats.exchanges += 1
        self.stats.peers.add(peer)

    def _refresh(self, min_interval: float) -> None:
        """Look the peers up again at the coordinator (a retried task comes back at a new
        address); called from the training thread only, at most every ``min_interval`` s."""
        now = time.monotonic()
        if now - self._refreshed < min_interval:
            return
        self._refreshed = now
        self._join()
        self.group.refresh()
        self._unreachable.clear()

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def finish(self, theta: np.ndarray) -> np.ndarray:
        self._join()
        if self.shared is not None:
            theta = self.shared.fold(theta)     # callers see the finished replica
            self._serve_callers()
        self.stop_serving()     # no more corrections after this
        return self.shared.fold(theta) if self.shared is not None else theta

    def _serve_callers(self, poll: float = 0.1) -> None:
        """Keep the endpoint up while an active neighbour still trains (registered and not
        done), up to ``round_timeout``; the run's failure ends the wait (the driver reports it)."""
        deadline = time.monotonic() + self.worker.round_timeout
        while self.callers:
            try:
                table = self.group.refresh()
            except PeerLostError:
                return
            training = [c for c in self.callers if c in table]
            if not training:
                return
            if time.monotonic() > deadline:
                log.warning("worker %d: stopped answering workers %s, still training %g s after "
                            "this one finished (round_timeout=)", self.worker.worker, training,
                            self.worker.round_timeout)
                return
            time.sleep(poll)

    def close(self) -> None:
        self._join()
        super().close()

