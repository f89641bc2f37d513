"""The parameter server hosted on the driver: the centre variable θ̃ and the algorithm's server
rule, served over the authenticated binary transport (``distkeras.transport``).

The rule works on the parameters of θ̃ only; the statistics at the end of each vector
(BatchNorm's moving moments, ``distkeras.state``) are the mean of every worker's latest ones.

It is one data service among others (ring all-reduce and gossip run between the workers' own
peer endpoints): control (progress, epoch logs, the stop flag) is the coordinator's
(``distkeras.driver.coordinator``). It keeps what its rule needs (update count, each worker's
pulled version or centre) and per-worker statistics (commits, bytes, staleness histogram, time
waiting for the lock or the round).

Example::

    with ParameterServer(algorithm, initial_weights, num_workers=2, host="127.0.0.1") as ps:
        host, port = ps.address      # ship host, port and ps.secret to the executors
        ...
        final = ps.centre
"""
from __future__ import annotations

import collections
import logging
import secrets
import threading
import time

import numpy as np

from distkeras import messages
from distkeras.algorithms import Algorithm, WorkerRecord
from distkeras.driver.coordinator import WorkerLostError
from distkeras.compression import compressor
from distkeras.transport import FrameServer, Reply, frame_limit, payload_size
from distkeras.vectors import all_finite, mean_of, split

log = logging.getLogger(__name__)


class _WorkerStats:
    def __init__(self) -> None:
        self.commits = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.wait_seconds = 0.0
        self.staleness = collections.Counter()

    def as_dict(self) -> dict:
        return {"commits": self.commits, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "wait_seconds": round(self.wait_seconds, 4),
                "staleness_histogram": dict(sorted(self.staleness.items()))}


class ParameterServer:
    """Centre variable + server rule + statistics, behind a ``FrameServer``."""

    def __init__(self, algorithm: Algorithm, initial: np.ndarray, num_workers: int,
                 host: str = "127.0.0.1", port: int = 0, secret: bytes | None = None,
                 ssl_context=None, round_timeout: float = 600.0, updates: int = 0,
                 compression: str | None = None,
                 params: int | None = None):
        self.algorithm = algorithm
        self.num_workers = int(num_workers)
        self.secret = secret or secrets.token_bytes(32)
        self.round_timeout = float(round_timeout)
        self._centre = np.array(initial, dtype=np.float32, copy=True).ravel()
        self._params, self._statistics = split(self._centre, params)   # views of θ̃
        self._backup = np.empty_like(self._params)   # θ̃'s parameters before the commit in hand
        self._round_conns: dict[int, object] = {}     # the connection of each round payload
        self._latest: dict[int, np.ndarray] = {}     # each worker's latest statistics
        self._version = int(updates)      # a resumed run goes on counting
        self._lock = threading.Lock()
        self._records = {w: WorkerRecord() for w in range(self.num_workers)}
        self._stats = {w: _WorkerStats() for w in range(self.num_workers)}
        self._compressor = compressor(compression)
        self._streams: dict[int, object] = {}     # this end of each worker's commit stream
        self.failure: str | None = None
        # synchronous rounds
        self._cond = threading.Condition()
        self._round = 0
        self._round_payloads: dict[int, np.ndarray] = {}
        self._round_reply: np.ndarray | None = None
        self._server = FrameServer(self._handle, self.secret, host=host, port=port,
                                   ssl_context=ssl_context, on_disconnect=self._on_disconnect,
                                   num_workers=self.num_workers, unique_workers=True,
                                   max_payload=frame_limit(self._centre.nbytes),
                                   name="parameter server")

    # -- life cycle -------------------------------------------------------------------------------
    def __enter__(self) -> "ParameterServer":
        self._server.__enter__()
        log.info("parameter server for %s listening on %s:%d", self.algorithm, *self.address)
        return self

    def __exit__(self, *exc) -> None:
        self.fail("the parameter server was closed")
        self._server.__exit__(*exc)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    def fail(self, reason: str) -> None:
        """Release every worker waiting in a synchronous round with ``reason`` (a lost worker)."""
        with self._cond:
            self.failure = self.failure or reason
            self._cond.notify_all()

    # -- what the driver reads --------------------------------------------------------------------
    @property
    def centre(self) -> np.ndarray:
        """A copy of the centre variable θ̃."""
        with self._lock:
            return self._centre.copy()

    @property
    def updates(self) -> int:
        return self._version

    def stats(self) -> dict:
        return {"updates": self._version, "transport": self._server.stats,
                "workers": {w: s.as_dict() for w, s in self._stats.items()}}

    # -- request handling -------------------------------------------------------------------------
    def _handle(self, conn, frame):
        worker = frame.worker_id    # authenticated, and in range (the FrameServer checks)
        stats = self._stats[worker]
        op = frame.op
        if op == messages.PULL:
            with self._lock:
                reply = self._reply_buffer(conn)
                np.copyto(reply, self._centre)
                self._note_pull(worker)
                version = self._version
                if self._compressor is not None:    # the worker starts its end here too
                    self._streams[worker] = self.algorithm.commit_stream(self._compressor,
                                                                         self._params)
            stats.bytes_out += reply.nbytes
            return Reply(op, payload=reply, aux=version)
        if op == messages.COMMIT:
            stats.bytes_in += payload_size(frame.payload)
            payload = self._decompress(worker, frame.payload)
            self._refuse_poison(worker, payload)
            stats.commits += 1
            reply, version = (self._sync_commit(conn, worker, payload)
                              if self.algorithm.synchronous
                              else self._async_commit(conn, worker, payload))
            stats.bytes_out += reply.nbytes
            return Reply(op, payload=reply, aux=version)    # aux: θ̃'s update count
        raise ValueError(f"unknown op {op}")

    def _decompress(self, worker: int, payload):
        """A compressed commit as the float32 vector the rule takes: the parameters from this
        worker's stream, the statistics as sent (anything else is refused as a poisoned
        commit)."""
        if self._compressor is None:
            return payload
        problem = None
        stream = self._streams.get(worker)
        if stream is None:
            problem = "before its pull (no compressed stream to decode it with)"
        elif not isinstance(payload, bytes):
            problem = (f"uncompressed ({type(payload).__name__}) in a run with "
                       f"compression={self._compressor.spec!r}")
        else:
            size, expected = self._params.size, 4 * self._statistics.size
            try:        # every check before the stream moves (a mirrored view must not drift)
                rest = memoryview(payload)[self._compressor.body(payload, size)[1]:]
                if rest.nbytes != expected:
                    raise ValueError(f"{rest.nbytes} bytes of statistics, expected {expected}")
                params = stream.receive(payload, size)
            except ValueError as exc:
                problem = f"that does not decode ({exc})"
            else:
                vector = np.empty(self._centre.size, np.float32)
                vector[:size] = params
                vector[size:] = np.frombuffer(rest, "<f4")
                return vector
        self._refuse(worker, problem)

    def _refuse_poison(self, worker: int, payload) -> None:
        """A commit that is not a finite float32 vector of the model's size never reaches θ̃:
        the worker gets an error naming what it sent; a synchronous round fails at once (it
        could never complete)."""
        size = self._centre.size
        if not isinstance(payload, np.ndarray):
            problem = f"of {type(payload).__name__}, not a float32 vector"
        elif payload.shape != (size,):
            problem = f"of {payload.size} values, but the model has {size}"
        elif not all_finite(payload):
            bad = int(np.count_nonzero(~np.isfinite(payload)))
            problem = (f"with {bad} non-finite values (NaN/inf): its loss diverged; lower the "
                       "learning rate or clip gradients")
        else:
            return
        self._refuse(worker, problem)

    def _refuse(self, worker: int, problem: str) -> None:
        message = f"worker {worker} sent a commit {problem}. It was refused: θ̃ is unchanged"
        if self.algorithm.synchronous:
            self.fail(f"{message}, and the synchronous round cannot complete")
        log.warning("%s", message)
        raise ValueError(message)

    def _backup_for(self, conn) -> np.ndarray:
        """Where θ̃'s parameters are kept while a commit is applied: one buffer under the lock,
        one per connection for a lock-free rule (commits in flight side by side)."""
        if self.algorithm.lock or conn is None:
            return self._backup
        buf = conn.state.get("backup")
        if buf is None:
            buf = conn.state["backup"] = np.empty_like(self._params)
        return buf

    def _refuse_overflow(self, worker: int | None, result: np.ndarray,
                         backup: np.ndarray) -> None:
        """Refuse a commit (``worker``) or a round (None) whose rule left θ̃ or the reply
        non-finite, though every payload was finite (e.g. two commits of 3e38 overflow): θ̃ is
        rolled back, the sender gets the error naming the overflow, a synchronous round fails.
        A lock-free rule (Hogwild) cannot undo the part of the commit that others may already
        have built on: its overflowed values are restored, the rest of the commit stays."""
        if all_finite(self._params) and (result is self._params or all_finite(result)):
            return
        bad = int(np.count_nonzero(~np.isfinite(self._params)))
        if self.algorithm.lock:
            np.copyto(self._params, backup)
        else:
            with self._lock:
                overflowed = ~np.isfinite(self._params)
                self._params[overflowed] = backup[overflowed]
        who = f"worker {worker}'s commit" if worker is not None else "the synchronous round"
        if not all_finite(self._params):      # cannot happen with a finite backup: say so
            self.fail(f"θ̃ is non-finite after {who} was rolled back; the run cannot go on")
        message = (f"{who} would have made θ̃ non-finite: the {self.algorithm.name} rule "
                   f"overflowed float32 in {bad or 'its reply'} value(s) although every "
                   "payload was finite. It was refused and θ̃ is unchanged; lower the learning "
                   "rate or clip gradients (an optimizer with clipnorm=1.0)")
        if self.algorithm.synchronous:
            self.fail(message)
        log.warning("%s", message)
        raise FloatingPointError(message)

    def _reply_buffer(self, conn) -> np.ndarray:
        buf = conn.state.get("reply")
        if buf is None:
            buf = conn.state["reply"] = np.empty_like(self._centre)
        return buf

    def _note_pull(self, worker: int) -> None:
        record = self._records[worker]
        record.pulled_version = self._version
        if self.algorithm.keeps_pulled_centre:
            if record.pulled_centre is None:
                record.pulled_centre = self._params.copy()
            else:
                np.copyto(record.pulled_centre, self._params)

    def _take_statistics(self, worker: int, payload: np.ndarray) -> None:
        """θ̃'s statistics ← the mean of every worker's latest (exact when they agree)."""
        if self._statistics.size:
            self._latest[worker] = split(payload, self._params.size)[1].copy()
            np.copyto(self._statistics, mean_of([self._latest[w] for w in sorted(self._latest)]))

    def _reply(self, reply: np.ndarray, result: np.ndarray) -> None:
        """The rule's reply for the parameters, then θ̃'s statistics."""
        params, statistics = split(reply, self._params.size)
        np.copyto(params, result)
        np.copyto(statistics, self._statistics)

    def _async_commit(self, conn, worker, payload):
        stats = self._stats[worker]
        reply = self._reply_buffer(conn)
        record = self._records[worker]
        t0 = time.perf_counter()
        backup = self._backup_for(conn)
        if self.algorithm.lock:
            self._lock.acquire()
        try:
            stats.wait_seconds += time.perf_counter() - t0
            _not_superseded(conn, worker)
            staleness = self._version - record.pulled_version
            np.copyto(backup, self._params)
            result = self.algorithm.server_commit(self._params, payload[:self._params.size],
                                                  record, self._version)
            self._refuse_overflow(worker, result, backup)
            stats.staleness[staleness] += 1
            self._take_statistics(worker, payload)
            self._version += 1
            version = self._version
            self._reply(reply, result)
            self._note_pull(worker)
        finally:
            if self.algorithm.lock:
                self._lock.release()
        return reply, version

    def _sync_commit(self, conn, worker, payload):
        stats = self._stats[worker]
        t0 = time.perf_counter()
        with self._cond:
            if self.failure:
                raise WorkerLostError(self.failure)
            my_round = self._round
            _not_superseded(conn, worker)
            # the payload is a view of this connection's receive buffer: valid while we wait here
            self._round_payloads[worker], self._round_conns[worker] = payload, conn
            for w in [w for w, c in self._round_conns.items() if getattr(c, "superseded", False)]:
                del self._round_payloads[w], self._round_conns[w]   # its worker is back: wait
            if len(self._round_payloads) == self.num_workers:
                with self._lock:
                    payloads = [self._round_payloads[w] for w in sorted(self._round_payloads)]
                    n = self._params.size
                    np.copyto(self._backup, self._params)
                    result = self.algorithm.server_round(self._params, [p[:n] for p in payloads])
                    self._refuse_overflow(None, result, self._backup)
                    for w in sorted(self._round_payloads):
                        self._take_statistics(w, self._round_payloads[w])
                    self._round_reply = np.empty_like(self._centre)
                    self._reply(self._round_reply, result)
                    self._version += 1
                self._round_payloads.clear()
                self._round_conns.clear()
                self._round += 1
                self._cond.notify_all()
            else:
                finished = self._cond.wait_for(lambda: self._round != my_round or self.failure,
                                               timeout=self.round_timeout)
                if self.failure:
                    raise WorkerLostError(self.failure)
                if not finished:
                    missing = sorted(set(range(self.num_workers)) - set(self._round_payloads))
                    self.failure = (f"synchronous round {my_round} timed out after "
                                    f"{self.round_timeout:.0f}s waiting for workers {missing}")
                    self._cond.notify_all()
                    raise WorkerLostError(self.failure)
            reply = self._reply_buffer(conn)
            np.copyto(reply, self._round_reply)
            version = self._version
        stats.wait_seconds += time.perf_counter() - t0
        stats.staleness[0] += 1
        return reply, version

    def _on_disconnect(self, conn, clean: bool) -> None:
        worker = conn.worker_id
        if worker is None or clean or conn.superseded:
            return          # said goodbye, or back on a newer connection: not lost
        if self.algorithm.synchronous:
            self.fail(f"worker {worker} was lost during training; {self.algorithm.name} is "
                      "synchronous and cannot continue without it (use an asynchronous "
                      "algorithm, e.g. ADAG or DOWNPOUR, for fault-tolerant training)")


def _not_superseded(conn, worker: int) -> None:
    """Refuse a frame of a connection that a newer one for its worker replaced while the frame
    waited (for the lock, or in a round): it is dropped, never applied after the newer's."""
    if getattr(conn, "superseded", False):
        raise ConnectionAbortedError(f"worker {worker} is back on a newer connection; this "
                                     "frame of its old one is dropped")
