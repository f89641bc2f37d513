"""The coordinator: the driver's control service, the same for every algorithm.

Workers report here whatever the algorithm and however they exchange weights (parameter server,
ring all-reduce, gossip): who they are and where their peer endpoint listens (the rendezvous),
samples trained (the progress bar), epoch logs, the replicas of a decentralised run at each
epoch end (its mean is the model validated and returned; Γ = Σᵢ‖x̄ − xᵢ‖² its consensus distance)
and that they are done. It answers with the stop flag (EarlyStopping, interrupts) and, with an
epoch barrier, holds workers at an epoch end until the driver has validated that epoch. Data
never travels here on the hot path: that is the parameter server's or the peers' job.

Example::

    with Coordinator(num_workers=2, initial=theta0, synchronous=False) as coord:
        host, port = coord.address            # ship host, port and coord.secret to executors
        ...
        coord.completed_epochs(), coord.epoch_logs[0], coord.model()
"""
from __future__ import annotations

import collections
import logging
import math
import secrets
import threading
import time

import numpy as np

from distkeras import messages
from distkeras.transport import FrameServer, Reply, frame_limit
from distkeras.vectors import all_finite, mean_of

log = logging.getLogger(__name__)

LOST_GRACE = 2.0    # seconds before a synchronous worker that said goodbye mid-run is named
                    # as lost: the peer whose loss made it leave is named first if that shows


MAX_EPOCHS = 1_000_000
MAX_SAMPLES_PER_REPORT = 1 << 40     # a report counts the samples since the last one


def _epoch_number(value) -> int:
    """An epoch number from the wire, checked before it indexes anything."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_EPOCHS:
        raise ValueError(f"bad epoch number {value!r} (expected 0..{MAX_EPOCHS - 1})")
    return value


def _said(worker: int, raised: dict) -> str:
    at = f"; at {raised['line']}" if raised["line"] else ""
    return f"worker {worker} raised {raised['error']} (while {raised['where']}{at})"


class WorkerLostError(RuntimeError):
    """A worker of a synchronous algorithm disappeared: the run can never complete."""


class _WorkerControl:
    def __init__(self) -> None:
        self.connections = 0
        self.lost = 0
        self.pid = None
        self.host = None
        self.endpoint: str | None = None
        self.samples = 0
        self.exchanges = 0
        self.done = False

    def as_dict(self) -> dict:
        return {"connections": self.connections, "lost_connections": self.lost,
                "pid": self.pid, "host": self.host, "endpoint": self.endpoint,
                "samples": self.samples, "exchanges": self.exchanges, "done": self.done}


class Coordinator:
    """Control service of one training run, behind an authenticated ``FrameServer``.

    Args:
        num_workers: workers of the run (ids ``0..num_workers-1``).
        initial: the initial flat weights (what a decentralised worker starts from).
        synchronous: a lost worker fails the run (it cannot complete without it).
        name: the algorithm's name, for messages.
        data_service: the parameter server, when the algorithm has one: its θ̃ is the run's
            model and its statistics join ``stats()``.
        epoch_barrier: a worker's ``EPOCH_END`` waits for :meth:`epoch_processed`.
            ``"driver"``: only while the epoch is complete everywhere and the driver has not
            processed it yet (asynchronous parameter-server runs: a fast worker never waits
            for a straggler, only for the driver's validation and callbacks).
        start_epoch: epochs already done (a run resumed from a checkpoint): workers start there.
        params: where the statistics start in a flat vector (the consensus distance is over the
            parameters).
    """

    def __init__(self, num_workers: int, initial: np.ndarray, synchronous: bool = False,
                 name: str = "training", host: str = "127.0.0.1", port: int = 0,
                 secret: bytes | None = None, ssl_context=None, round_timeout: float = 600.0,
                 epoch_barrier: bool | str = False, data_service=None, start_epoch: int = 0,
                 params: int | None = None):
        self.num_workers = int(num_workers)
        self.synchronous = synchronous
        self.name = name
        self.secret = secret or secrets.token_bytes(32)
        self.round_timeout = float(round_timeout)
        self.epoch_barrier = epoch_barrier
        self.data_service = data_service
        self._initial = np.array(initial, dtype=np.float32, copy=True).ravel()
        self._params = self._initial.size if params is None else int(params)
        self._workers = {w: _WorkerControl() for w in range(self.num_workers)}
        self._completed_epochs = [int(start_epoch)] * self.num_workers
        self.epoch_logs: dict[int, dict[int, dict]] = collections.defaultdict(dict)
        self.epoch_finished_at: dict[int, float] = {}   # perf_counter when the last worker ended it
        self.final_models: dict[int, np.ndarray] = {}
        self._replicas: dict[int, dict[int, np.ndarray]] = collections.defaultdict(dict)
        self.epoch_means: dict[int, np.ndarray] = {}
        self.consensus_distance: dict[int, float] = {}
        self.samples_seen = 0
        self._learning_rate: tuple[int, float] = (0, 0.0)   # (version, value) for the workers
        self.failure: str | None = None
        self._naming = 0         # goodbyes of workers mid-run, waiting to be named (LOST_GRACE)
        self.raised: list[tuple[int, dict]] = []    # (worker, report) of exceptions, in order
        self.unrecoverable: str | None = None  # a worker's error that a task retry cannot fix
        self._stop = False
        self._epochs_processed = int(start_epoch)
        self._cond = threading.Condition()
        self._server = FrameServer(self._handle, self.secret, host=host, port=port,
                                   ssl_context=ssl_context, on_disconnect=self._on_disconnect,
                                   num_workers=self.num_workers, unique_workers=True,
                                   max_payload=frame_limit(np.asarray(initial).size * 4),
                                   name="coordinator")

    # -- life cycle -------------------------------------------------------------------------------
    def __enter__(self) -> "Coordinator":
        self._server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.request_stop()
        with self._cond:
            self.failure = self.failure or "the coordinator was closed"
            self._cond.notify_all()
        self._server.__exit__(*exc)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    # -- what the driver reads and does -----------------------------------------------------------
    def completed_epochs(self) -> int:
        """Epochs that every worker has finished."""
        return min(self._completed_epochs)

    def all_done(self) -> bool:
        """Every worker said DONE (its task has finished training)."""
        return all(c.done for c in self._workers.values())

    def set_learning_rate(self, value: float) -> None:
        """A new learning rate for every worker's optimizer (a driver callback changed it,
        e.g. ``ReduceLROnPlateau``): each worker takes it at its next report."""
        with self._cond:
            self._learning_rate = (self._learning_rate[0] + 1, float(value))

    def _control_payload(self) -> dict | None:
        version, value = self._learning_rate
        return {"learning_rate": value, "lr_version": version} if version else None

    def request_stop(self) -> None:
        """Ask every worker to stop (asynchronous ones at their next report, synchronous ones at
        the next epoch end, so that they all stop at the same round)."""
        self._stop = True
        with self._cond:
            self._cond.notify_all()

    def wait(self, predicate, timeout: float) -> bool:
        """Wait until ``predicate()`` holds, for at most ``timeout`` seconds; it is checked
        again whenever a worker ends an epoch and at :meth:`wake`."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wake(self) -> None:
        """Check the predicates of :meth:`wait` now (something outside the coordinator changed)."""
        with self._cond:
            self._cond.notify_all()

    def epoch_processed(self, epoch: int) -> None:
        """The driver has evaluated ``epoch``: release workers waiting at the epoch barrier."""
        with self._cond:
            self._epochs_processed = max(self._epochs_processed, epoch + 1)
            self._cond.notify_all()

    def model(self, epoch: int | None = None) -> np.ndarray:
        """The model the run defines: θ̃ of the parameter server, else the mean of the replicas
        reported at the end of ``epoch`` (default: the latest), else the initial weights."""
        if self.data_service is not None:
            return self.data_service.centre
        if self.final_models and epoch is None and len(self.final_models) == self.num_workers:
            return mean_of([self.final_models[w] for w in sorted(self.final_models)])
        with self._cond:
            if epoch is None:
                epoch = max(self.epoch_means, default=None)
            mean = self.epoch_means.get(epoch) if epoch is not None else None
            return (self._initial if mean is None else mean).copy()

    def stats(self) -> dict:
        """Per-worker control statistics, merged with the data service's."""
        data = self.data_service.stats() if self.data_service is not None else {}
        workers = {w: dict(s.as_dict(), epochs_completed=self._completed_epochs[w])
                   for w, s in self._workers.items()}
        for w, extra in data.get("workers", {}).items():
            workers[w].update(extra)
        commits = sum(w.get("commits", 0) for w in workers.values())
        for w in workers.values():      # a straggler's share of the updates
            if "commits" in w:
                w["commit_share"] = w["commits"] / commits if commits else 0.0
        out = {"samples": self.samples_seen, "transport": self._server.stats, "workers": workers}
        if data:
            out.update(updates=data["updates"], ps_transport=data["transport"])
        return out

    # -- request handling -------------------------------------------------------------------------
    def _handle(self, conn, frame):
        worker = frame.worker_id    # authenticated, and in range (the FrameServer checks)
        control = self._workers[worker]
        op = frame.op
        if op == messages.HELLO:
            return self._hello(conn, worker, frame.payload if isinstance(frame.payload, dict) else {})
        if op == messages.PULL:
            return Reply(op, payload=self.model(), flags=self._flags())
        if op == messages.PROGRESS:
            self._count(control, frame.aux)
            body = frame.payload if isinstance(frame.payload, dict) else {}
            exchanges = body.get("exchanges")
            if isinstance(exchanges, int) and exchanges >= control.exchanges:
                control.exchanges = exchanges
            return Reply(op, flags=0 if self.synchronous else self._flags(),
                         payload=self._control_payload())
        if op == messages.REPLICA:
            self._replica(worker, _epoch_number(frame.aux), frame.payload)
            return Reply(op)
        if op == messages.EPOCH_END:
            return self._epoch_end(worker, control, frame)
        if op == messages.FINAL:
            self._check_vector(frame.payload, "final model")
            self.final_models[worker] = frame.payload.copy()
            return Reply(op)
        if op == messages.PEERS:
            return Reply(op, payload={"peers": self.peers(), "failure": self.failure,
                                      "done": [w for w, c in self._workers.items() if c.done]})
        if op == messages.DONE:
            control.done = True
            conn.state["done"] = True
            return Reply(op)
        if op == messages.FAILED:
            self._raised(worker, control, frame.payload if isinstance(frame.payload, dict) else {})
            conn.state["done"] = True      # going down on purpose: not lost
            return Reply(op)
        raise ValueError(f"unknown op {op}")

    def _raised(self, worker: int, control: _WorkerControl, report: dict) -> None:
        """A worker reports the exception it raised. A synchronous run cannot go on without it:
        it fails now, with this cause (not with the loss of the worker it leads to). An error
        that a retry of the task would raise again (``final``: a diverged loss) ends any run
        now, rather than after Spark's retries."""
        text = lambda key: str(report.get(key) or "")[:4000]  # noqa: E731
        raised = {"error": text("error"), "where": text("where"), "line": text("line")}
        if len(self.raised) < 64:      # the first ones matter; a flood stays bounded
            self.raised.append((worker, raised))
        log.warning("%s", _said(worker, raised))
        if report.get("final") is True:
            self.unrecoverable = self.unrecoverable or _said(worker, raised)
        if self.synchronous or self.unrecoverable:
            self._fail(self.worker_error())

    def _fail(self, message: str, named_late: bool = False) -> None:
        """The run fails with ``message``, unless it failed already (or, ``named_late``: a
        goodbye's grace ended, unless it stopped meanwhile); the data service's waits end."""
        with self._cond:
            if named_late:
                self._naming -= 1
            if not (named_late and self._stop):
                self.failure = self.failure or message
            self._cond.notify_all()
        if self.data_service is not None and self.failure:
            self.data_service.fail(self.failure)

    def settled_failure(self) -> str | None:
        """:attr:`failure`, once the loss of a worker that said goodbye mid-run is named (at
        most ``LOST_GRACE`` seconds; at once when none is waiting)."""
        with self._cond:
            self._cond.wait_for(lambda: self.failure or not self._naming, LOST_GRACE + 1.0)
            return self.failure

    def worker_error(self) -> str | None:
        """The first exception a worker reported, said as the user needs it, or None."""
        return _said(*self.raised[0]) if self.raised else None

    def peers(self) -> dict[str, str]:
        """The rendezvous table: worker id → ``host:port`` of its live peer endpoint."""
        return {str(w): c.endpoint for w, c in self._workers.items()
                if c.endpoint and not c.done}

    def _flags(self) -> int:
        return messages.FLAG_STOP if self._stop else 0

    def _count(self, control: _WorkerControl, samples: int) -> None:
        if not 0 <= samples <= MAX_SAMPLES_PER_REPORT:
            raise ValueError(f"sample count {samples} outside 0..{MAX_SAMPLES_PER_REPORT}")
        control.samples += samples
        self.samples_seen += samples

    def _check_vector(self, payload, what: str) -> None:
        if not isinstance(payload, np.ndarray) or payload.size != self._initial.size:
            size = getattr(payload, "size", None)
            raise ValueError(f"{what} of {size} values, the model has {self._initial.size}")
        if not all_finite(payload):
            raise ValueError(f"{what} has non-finite values (NaN/inf): the worker diverged")

    def _hello(self, conn, worker: int, info: dict):
        if self.failure:
            raise WorkerLostError(self.failure)
        conn.state["worker"] = worker
        control = self._workers[worker]
        control.connections += 1
        control.pid, control.host = info.get("pid"), info.get("host")
        endpoint = info.get("endpoint")
        control.endpoint = endpoint if isinstance(endpoint, str) else None
        control.done = False
        if control.connections > 1:
            log.warning("worker %d rejoined (attempt %s) from %s, resuming at epoch %d",
                        worker, info.get("attempt"), control.host, self._completed_epochs[worker])
        updates = self.data_service.updates if self.data_service is not None else 0
        return Reply(messages.HELLO, payload={"start_epoch": self._completed_epochs[worker],
                                              "updates": updates})

    def _replica(self, worker: int, epoch: int, payload) -> None:
        self._check_vector(payload, f"replica of epoch {epoch}")
        with self._cond:
            replicas = self._replicas[epoch]
            replicas[worker] = payload.copy()
            if len(replicas) == self.num_workers:
                stack = np.stack([replicas[w] for w in sorted(replicas)])
                mean = mean_of(stack)
                self.epoch_means[epoch] = mean
                n = self._params
                self.consensus_distance[epoch] = float(sum(
                    np.square(row[:n] - mean[:n], dtype=np.float64).sum() for row in stack))
                self._replicas.pop(epoch)

    def _epoch_end(self, worker: int, control: _WorkerControl, frame):
        body = frame.payload if isinstance(frame.payload, dict) else {}
        epoch = _epoch_number(body.get("epoch"))
        logs = body.get("logs", {})
        if not isinstance(logs, dict):
            raise ValueError("epoch logs must be a JSON object")
        self._count(control, frame.aux)
        self.epoch_logs[epoch][worker] = {
            str(k): float(v) for k, v in logs.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        self._completed_epochs[worker] = max(self._completed_epochs[worker], epoch + 1)
        if self.completed_epochs() > epoch:
            self.epoch_finished_at.setdefault(epoch, time.perf_counter())
        with self._cond:
            self._cond.notify_all()                     # the epoch may be complete now
        if self.epoch_barrier:
            others = self.epoch_barrier == "driver"     # others still on this epoch: go on
            with self._cond:
                if not self._cond.wait_for(lambda: self._epochs_processed > epoch or self._stop
                                           or self.failure
                                           or (others and self.completed_epochs() <= epoch),
                                           timeout=self.round_timeout):
                    raise WorkerLostError(f"no verdict on epoch {epoch} from the driver after "
                                          f"{self.round_timeout:.0f}s")
        return Reply(frame.op, flags=self._flags(), payload=self._control_payload())

    def _on_disconnect(self, conn, clean: bool) -> None:
        worker = conn.state.get("worker")
        if worker is None or conn.state.get("done"):
            return          # finished: not lost
        control = self._workers[worker]
        control.lost += 1
        if conn.superseded:
            log.warning("worker %d came back on a new connection; its old one is closed", worker)
            return          # the worker is back on a newer connection: training goes on
        control.endpoint = None
        if self.synchronous and not self._stop:
            lost = (f"worker {worker} was lost during training; {self.name} is synchronous and "
                    "cannot continue without it (use an asynchronous algorithm, e.g. ADAG, "
                    "DOWNPOUR or ADPSGD, for fault-tolerant training)")
            if not clean:
                self._fail(lost)
                return
            # It said goodbye: a peer or a service failed it (a worker that raised anything
            # else reports it first). That one is named, if its own loss shows meanwhile.
            with self._cond:
                self._naming += 1
            timer = threading.Timer(LOST_GRACE, self._fail, args=(lost, True))
            timer.daemon = True
            timer.start()
        else:
            log.warning("worker %d disconnected mid-training; Spark retries the task and it "
                        "rejoins", worker)
