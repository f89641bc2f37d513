"""Virtual time for simulated workers: a discrete-event scheduler over real threads.

Each simulated worker is a thread running the real training loop. Only one thread runs at a time
(it holds the **turn**), and the turn always goes to whatever comes first in virtual time: the
worker whose next action is earliest, or a timed event (a gossip message landing at a peer).
A worker gives the turn back only at points where time passes: :meth:`VirtualClock.at` (its
compute or a message took time), :meth:`gather` (a synchronous round) or :meth:`outside`
(a real blocking call, such as a synchronous parameter-server round). Because an action at
time t runs only once nothing is left before t, what a worker reads from another (θ̃, a peer's
replica) is what that other had published by t: the order of events, and so the run, is the
same for the same time model and seed, whatever the machine's load.

Example::

    clock = VirtualClock()
    def worker(w):
        clock.at(w, 0.5)          # computed for 0.5 s
        values, t = clock.gather(w, ("round", 0), 2, w)   # both workers' values, at the last
    clock.run({0: lambda: worker(0), 1: lambda: worker(1)})
"""
from __future__ import annotations

import heapq
import itertools
import threading
from typing import Any, Callable, Hashable


class SimulationAborted(RuntimeError):
    """Another simulated worker failed: this one stops (the run reports that worker's error)."""


class VirtualClock:
    """The scheduler: ``now[w]`` is worker w's virtual time (seconds)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list = []                  # (time, seq, worker or event)
        self._seq = itertools.count()
        self._turn: Any = None                  # the worker that runs now
        self._returning: dict[int, float] = {}  # out of turn in a real call, back at a time
        self._gathers: dict[Hashable, dict] = {}
        self.now: dict[int, float] = {}
        self.time = 0.0                         # the latest time anything happened at
        self.finished: dict[int, float] = {}
        self._awaiting: dict[int, set] = {}     # worker → the workers it waits to see finish
        self.error: BaseException | None = None

    # -- running workers -------------------------------------------------------------------------
    def run(self, workers: dict[int, Callable[[], Any]]) -> dict[int, Any]:
        """Run every worker's function from virtual time 0 to its end; return their results
        (the first error a worker raised is raised here)."""
        results: dict[int, Any] = {}
        threads = []
        with self._cond:
            for w in sorted(workers):
                self.now[w] = 0.0
                self._push(0.0, w)
        for w in sorted(workers):
            thread = threading.Thread(target=self._main, args=(w, workers[w], results),
                                      name=f"distkeras-simulated-{w}", daemon=True)
            thread.start()
            threads.append(thread)
        with self._cond:
            self._dispatch()
        for thread in threads:
            thread.join()
        if self.error is not None:
            raise self.error
        return results

    def _main(self, worker: int, fn: Callable[[], Any], results: dict) -> None:
        try:
            self._wait_turn(worker)
            results[worker] = fn()
        except SimulationAborted:
            pass
        except BaseException as exc:  # noqa: BLE001 - the first failure ends the run
            self.fail(exc)
        finally:
            with self._cond:
                self.finished[worker] = self.now.get(worker, self.time)
                for waiter, others in list(self._awaiting.items()):
                    if others <= self.finished.keys():      # its last one just finished
                        del self._awaiting[waiter]
                        self.now[waiter] = max(self.now[waiter], self.finished[worker])
                        self._push(self.now[waiter], waiter)
                self._returning.pop(worker, None)
                if self._turn == worker:
                    self._turn = None
                self._dispatch()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            if self.error is None:
                self.error = exc
            self._cond.notify_all()

    # -- where time passes -----------------------------------------------------------------------
    def at(self, worker: int, t: float) -> None:
        """Worker ``worker`` (holding the turn) continues at virtual time ``t``."""
        with self._cond:
            self._yield(worker, max(t, self.now[worker]))

    def sleep(self, worker: int, seconds: float) -> None:
        self.at(worker, self.now[worker] + max(0.0, seconds))

    def event(self, t: float, action: Callable[[], None]) -> None:
        """Run ``action`` at virtual time ``t`` (on whichever thread dispatches then; it must
        not wait for anything)."""
        with self._cond:
            self._push(t, action)

    def gather(self, worker: int, key: Hashable, size: int, value: Any = None
               ) -> tuple[dict[int, Any], float, dict]:
        """Wait until ``size`` workers called ``gather`` with ``key``; return every caller's
        value by worker, the virtual time of the last arrival (every caller goes on from it)
        and a dict the callers share (to compute a result once)."""
        with self._cond:
            round_ = self._gathers.setdefault(key, {"values": {}, "shared": {}})
            round_["values"][worker] = value
            if len(round_["values"]) < size:      # the last arrival queues this worker
                self._release(worker)
                self._cond.wait_for(lambda: self._turn == worker or self.error is not None)
                self._check()
            else:                      # the last: everyone goes on at this time, in worker order
                del self._gathers[key]
                round_["time"] = self.now[worker]
                for w in sorted(round_["values"]):
                    self.now[w] = round_["time"]
                    if w != worker:
                        self._push(round_["time"], w)
                self._cond.notify_all()
            return round_["values"], round_["time"], round_["shared"]

    def wait_finished(self, worker: int, others) -> None:
        """Worker ``worker`` goes on once every one of ``others`` has finished (at the last
        one's finishing time)."""
        with self._cond:
            others = set(others)
            if others <= self.finished.keys():
                return
            self._awaiting[worker] = others
            self._release(worker)
            self._cond.wait_for(lambda: self._turn == worker or self.error is not None)
            self._check()

    def outside(self, worker: int, call: Callable[[], Any]) -> Any:
        """Run a real call that may block on other workers' calls (all at this virtual time)
        without the turn; nothing later than this time runs until it is back."""
        with self._cond:
            self._returning[worker] = self.now[worker]
            self._release(worker)
        try:
            return call()
        finally:
            with self._cond:
                del self._returning[worker]
                if self.error is None:
                    self._yield(worker, self.now[worker])

    # -- the scheduler ---------------------------------------------------------------------------
    def _push(self, t: float, who: Any) -> None:
        heapq.heappush(self._queue, (t, next(self._seq), who))

    def _yield(self, worker: int, t: float) -> None:
        self._check()
        self.now[worker] = t
        self._push(t, worker)
        self._release(worker)
        self._wait_turn(worker)

    def _release(self, worker: int) -> None:
        if self._turn == worker:
            self._turn = None
        self._dispatch()

    def _wait_turn(self, worker: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._turn == worker or self.error is not None)
            self._check()

    def _check(self) -> None:
        if self.error is not None:
            raise SimulationAborted("another simulated worker failed")

    def _dispatch(self) -> None:
        """Give the turn to the first in virtual time (caller holds the lock)."""
        while self._turn is None and self._queue and self.error is None:
            t, _, who = self._queue[0]
            if self._returning and t > min(self._returning.values()):
                return               # a worker in a real call comes back before this
            heapq.heappop(self._queue)
            self.time = max(self.time, t)
            if callable(who):
                try:
                    who()
                except BaseException as exc:  # noqa: BLE001
                    self.error = exc
                continue
            self._turn = who
            self._cond.notify_all()
        if (self.error is None and self._turn is None and not self._queue
                and not self._returning and (self._gathers or self._awaiting)):
            self.error = RuntimeError(
                "the simulated workers wait for each other in rounds that cannot complete "
                f"({sorted(map(str, self._gathers))}); a rule whose workers make different "
                "numbers of synchronous exchanges cannot be simulated")
        if self.error is not None:
            self._cond.notify_all()
