"""A fit in virtual time: the trainer's own data split, model, rule, exchanges, coordinator,
parameter server, epoch ends and callbacks; only the workers are simulated, as threads taking
turns on one compiled replica, and the network and the clock are models.

What is real: the partition each worker gets (the trainer's preflight), its mini-batches
(``MemorySource``, the same seed), the training loop (``executor.remote._Loop``), the local
steps (``algorithm.local_steps`` on a compiled Keras replica), every exchange's and server's
code, the coordinator, the validation of the run's model and the history. What is modelled:
how long a window computes (:class:`~distkeras.simulation.timing.TimeModel`) and how long a
message takes (:class:`~distkeras.simulation.network.Network`). ``history`` reports virtual
seconds (``epoch_seconds``, ``exchange_seconds``, workers' ``compute_seconds``) and
``history.simulation`` the model, so a simulated run reads like a real one.

Example::

    ADPSGD(model, num_workers=64, simulate="10gbit:0.1ms").fit(df)
    SingleTrainer(model, simulate="network=ideal,step=2ms").fit(df)
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, replace

from distkeras.simulation.clock import VirtualClock
from distkeras.simulation.exchanges import ServerQueue, ServiceClient, simulated
from distkeras.simulation.network import Network
from distkeras.simulation.timing import (TimeModel, best_seconds, measure_service_seconds,
                                         measure_window_seconds)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Simulation:
    """What a simulated fit models: the ``network``; a step's compute time, a compiled call's
    fixed cost and a gradient step's time (None: measured for the model on this machine; a
    given ``step`` alone means calls cost nothing); the parameter server's service time per
    commit (None: measured for the rule); the ``stragglers`` distribution and its ``seed``;
    and the ``cores`` the workers share (None: one each; set it to compare with runs on a
    machine with fewer cores than workers).

    As text (the trainers' ``simulate=`` Param): ``"10gbit:0.1ms"`` (a network), or
    ``"network=1gbit:50us,step=2ms,service=20us,stragglers=lognormal:0.2,seed=1,cores=2"``.
    """

    network: Network = Network()
    step_seconds: float | None = None
    service_seconds: float | None = None
    call_seconds: float | None = None
    gradient_seconds: float | None = None
    stragglers: str = "none"
    seed: int = 0
    cores: int | None = None

    @classmethod
    def parse(cls, text: "str | Simulation") -> "Simulation":
        if isinstance(text, Simulation):
            return text
        from distkeras.simulation.network import _TIME, _quantity

        fields: dict = {}
        for item in (t.strip() for t in str(text).split(",") if t.strip()):
            key, eq, value = item.partition("=")
            if not eq:
                key, value = "network", item
            key = key.strip().lower()
            if key == "network":
                fields["network"] = Network.parse(value)
            elif key in ("step", "service", "call", "gradient"):
                fields[f"{key}_seconds"] = (None if value in ("", "auto", "measured")
                                            else _quantity(value.strip().lower(), _TIME, key))
            elif key == "stragglers":
                fields["stragglers"] = value
            elif key in ("seed", "cores"):
                fields[key] = int(value)
            else:
                raise ValueError(f"simulate={text!r}: unknown field {key!r} (network, step, "
                                 "call, gradient, service, stragglers, seed, cores)")
        made = cls(**fields)
        TimeModel(1.0, stragglers=made.stragglers)      # a bad distribution fails here
        return made

    @property
    def spec(self) -> str:
        """The text that parses back to this simulation."""
        parts = [f"network={self.network.spec}"]
        for name in ("step", "call", "gradient", "service"):
            value = getattr(self, f"{name}_seconds")
            if value is not None:
                parts.append(f"{name}={value!r}s")
        parts.append(f"stragglers={self.stragglers}")
        parts.append(f"seed={self.seed}")
        if self.cores:
            parts.append(f"cores={self.cores}")
        return ",".join(parts)


class SimulatedCluster:
    """The shared state of one simulated run: clock, network, time model, the server's queue,
    the workers still training and their gossip exchanges."""

    def __init__(self, simulation: Simulation, num_workers: int, parameter_server,
                 time_model: TimeModel, vector_bytes: int):
        self.clock = VirtualClock()
        self.network = simulation.network
        self.num_workers = num_workers
        self.parameter_server = parameter_server
        self.time_model = time_model
        self.vector_bytes = vector_bytes
        self.server_queue = ServerQueue()
        self.training = set(range(num_workers))
        self.gossips: dict = {}


class ReplicaPool:
    """One compiled replica that every simulated worker takes turns on: each turn puts that
    worker's state in (weights, optimizer and metrics state, and what its windows counted to
    decide when to compile), a worker's first turn the state a new replica has."""

    def __init__(self, replica):
        from distkeras.executor.replica import _values

        self.replica, self._values = replica, _values
        self.owner = None
        self._saved: dict = {}
        self._initial_model = [_values(v) for v in replica.model.variables]
        self._initial_theta = replica.theta.copy()

    def _training(self) -> list:
        return self.replica._training_state() if self.replica._built else []

    def own(self, worker):
        """The replica, holding ``worker``'s state (its first turn: a new replica's)."""
        replica = self.replica
        if self.owner == worker:
            return replica
        replica.steps.sync()
        if self.owner is not None:
            self._saved[self.owner] = (
                replica.theta, [self._values(v) for v in replica.model.variables],
                [self._values(v) for v in self._training()] if replica._built else None,
                replica.steps.schedule)
        theta, model, training, schedule = self._saved.pop(worker, (
            self._initial_theta, self._initial_model, None, None))
        for variable, value in zip(replica.model.variables, model):
            variable.assign(value)
        if replica._built:
            for variable, value in zip(self._training(), training or replica._first_state):
                variable.assign(value)
        if schedule is None:         # a worker's first turn: what a new replica counted
            replica.steps.restart()
        else:
            replica.steps.schedule = schedule
        replica.steps.refresh()
        replica.theta = theta
        self.owner = worker
        return replica

    def forget(self, worker) -> None:
        if self.owner == worker:
            self.owner = None
        self._saved.pop(worker, None)


class WorkerReplica:
    """Worker ``worker``'s view of the pool: every call runs on its own state, and a window of
    k steps moves its virtual clock by the time model's k steps."""

    def __init__(self, pool: ReplicaPool, worker: int, cluster: SimulatedCluster):
        self.pool, self.worker, self.cluster = pool, worker, cluster
        self.compute_seconds = 0.0

    def _compute(self, steps: int) -> None:
        seconds = self.cluster.time_model.window(self.worker, steps)
        self.compute_seconds += seconds
        self.cluster.clock.sleep(self.worker, seconds)

    def train(self, window, start=None):
        theta = self.pool.own(self.worker).train(window, start=start)
        self._compute(len(window))
        return theta

    def plan(self, steps):
        self.pool.own(self.worker).plan(steps)

    def gradient(self, window, step, start=None):
        gradient = self.pool.own(self.worker).gradient(window, step, start=start)
        seconds = self.cluster.time_model.gradient(self.worker)
        self.compute_seconds += seconds
        self.cluster.clock.sleep(self.worker, seconds)
        return gradient

    def apply_gradient(self, gradient):
        self.pool.own(self.worker).apply_gradient(gradient)

    def read(self):
        return self.pool.own(self.worker).read()

    def metrics(self):
        return self.pool.own(self.worker).metrics()

    def reset_metrics(self):
        self.pool.own(self.worker).reset_metrics()

    @property
    def learning_rate(self):
        return self.pool.own(self.worker).learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.pool.own(self.worker).learning_rate = value

    @property
    def weights(self):
        return self.pool.replica.weights

    @property
    def loss_scaling(self):
        return self.pool.replica.loss_scaling


class _Control(ServiceClient):
    """A worker's control connection to the real coordinator; the driver's epoch end (the
    run's model validated, callbacks) runs at the virtual time the epoch completes, before any
    later event, and synchronous workers wait for it as at the real epoch barrier."""

    def __init__(self, coordinator, worker: int, cluster: SimulatedCluster, driver):
        super().__init__(coordinator, worker)
        self.cluster, self.driver = cluster, driver

    def request(self, op, payload=None, aux=0, flags=0, out=None):
        from distkeras import messages

        reply = super().request(op, payload, aux, flags, out)
        if op != messages.EPOCH_END:
            return reply
        epoch = int(payload["epoch"])
        if self.driver.synchronous:
            self.cluster.clock.gather(self.worker, ("epoch", epoch), self.cluster.num_workers)
        self.driver.epoch_end(epoch, self.cluster.clock.now[self.worker])
        reply.flags = self.server._flags()
        return reply


class _Driver:
    """The driver's side of the epoch ends, in virtual time."""

    def __init__(self, ends, coordinator, synchronous: bool):
        self.ends, self.coordinator, self.synchronous = ends, coordinator, synchronous

    def epoch_end(self, epoch: int, now: float) -> None:
        if self.coordinator.completed_epochs() > epoch:
            self.coordinator.epoch_finished_at[epoch] = now
        self.ends.show_progress()
        while self.ends.ready():
            self.ends.process()


def _partitions(prepared, num_workers: int) -> list[list]:
    """Each worker's partition as Arrow record batches, in the order its task reads them."""
    from pyspark.sql import functions as F

    from distkeras.spark import to_arrow

    parts = []
    for w in range(num_workers):     # one at a time: the driver holds one partition in flight
        table = to_arrow(prepared.where(F.spark_partition_id() == w))
        parts.append(table.to_batches() if table.num_rows else [])
    return parts


def _replica(spec: dict):
    """The run's model compiled once, in this process, as every worker's would be."""
    import keras

    from distkeras import backends
    from distkeras.executor.remote import compiled_replica
    from distkeras.state import StateLayout

    keras.utils.set_random_seed(int(spec["seed"]))
    return compiled_replica(spec, spec["model"].build(), backends.current(),
                            StateLayout.from_dict(spec["layout"]))


def _time_model(simulation: Simulation, pool: ReplicaPool, source, spec, algorithm, params,
                size) -> TimeModel:
    from distkeras.algorithms.allreduce import GradientRing    # AR-SGD: gradient steps

    step, call, gradient = (simulation.step_seconds, simulation.call_seconds,
                            simulation.gradient_seconds)
    if step is not None:            # given: calls cost what they are given (or nothing)
        call = call or 0.0
    else:                           # measured on a throwaway state, then forgotten
        batch = int(spec["batch_size"])
        steps = max(2, min(32, int(spec["steps_per_epoch"])))
        source.start_epoch(0)
        window = source.take(steps * batch).steps(steps)
        replica = pool.own("calibration")
        measured_call, step = measure_window_seconds(lambda k: replica.train(window[:k]),
                                                     steps)
        call = measured_call if call is None else call
        if gradient is None and issubclass(algorithm.exchange_type, GradientRing):
            gradient = best_seconds(lambda: replica.apply_gradient(replica.gradient(window, 0)))
        pool.forget("calibration")
    service = simulation.service_seconds
    if service is None:
        service = (measure_service_seconds(algorithm, size, params)
                   if algorithm.exchange_type.needs_parameter_server else 0.0)
    return TimeModel(step, service, call, gradient, simulation.stragglers, simulation.seed,
                     int(spec["num_workers"]), simulation.cores)


def train_simulated(run, startup: dict, began: float):
    """``_Run.train`` for ``simulate=``: (history, ensemble members)."""
    from distkeras import messages
    from distkeras.driver.epochs import Resume, _EpochEnds
    from distkeras.driver.fit import start_services, task_spec
    from distkeras.executor.remote import _Loop, _source, _Where
    from distkeras.executor.sources import share
    from distkeras.exchange import WorkerContext

    settings, algorithm = run.settings, run.algorithm
    simulation = Simulation.parse(settings.simulate)
    if run.data.stream is not None:
        raise ValueError("simulate= reads each worker's partition in memory: data_feed='memory'")
    if settings.compression:
        raise ValueError("simulate= does not model compressed exchanges yet: compression=None")
    n = settings.num_workers
    wall = time.perf_counter()
    with contextlib.ExitStack() as services:
        ps, coordinator = start_services(services, settings, algorithm, run.user.flat.get(),
                                         run.user.layout.params, "127.0.0.1")
        spec = task_spec(run, {"coordinator": ["127.0.0.1", 0], "ps": None,
                               "secret": coordinator.secret})
        if spec["overlap"]:
            raise ValueError("simulate= does not model commits in flight during windows: "
                             "overlap_communication=False")
        replica = _replica(spec)
        params = replica.weights.params
        pool = ReplicaPool(replica)
        sources = [_source(spec, iter(batches), w)
                   for w, batches in enumerate(_partitions(run.data.prepared, n))]
        share(sources)         # one held partition, one compiled window for every worker
        size = run.user.flat.get().size
        time_model = _time_model(simulation, pool, sources[0], spec, algorithm, params, size)
        cluster = SimulatedCluster(simulation, n, ps, time_model, 4 * size)
        ends = _EpochEnds(settings, coordinator, run.user.driver, run.user.flat, run.val,
                          run.callbacks, run.data.steps, Resume(None, None, algorithm))
        ends.epoch_start = 0.0
        driver = _Driver(ends, coordinator, algorithm.synchronous)
        startup["simulated_setup_seconds"] = time.perf_counter() - wall
        rows: dict[int, dict] = {}

        def worker(w: int):
            control = _Control(coordinator, w, cluster, driver)
            ctx = WorkerContext(worker=w, num_workers=n, secret=coordinator.secret,
                                coordinator=("127.0.0.1", 0), seed=int(spec["seed"]),
                                params=params, control=control)
            view = WorkerReplica(pool, w, cluster)
            exchange = simulated(algorithm.exchange(ctx), cluster)
            with exchange:
                loop = _Loop(spec, view, exchange, control, w, 0, _Where())
                loop.run(sources[w])
                cluster.training.discard(w)
                control.request(messages.DONE)
            seconds = cluster.clock.now[w]
            rows[w] = {"worker": w, "attempt": 0, "epochs": loop.epochs_run,
                       "samples": loop.samples, "seconds": seconds,
                       "compute_seconds": view.compute_seconds,
                       "learning_rate": float(algorithm.learning_rate),
                       "threads": 1, "backend": replica.backend.name, "setup_seconds": 0.0,
                       "first_window_seconds": None, "reused_replica": 0,
                       **exchange.stats.as_row(), "host": "simulated", "pid": 0,
                       "started_at": 0.0, "training_from": 0.0, "finished_at": seconds}

        try:
            cluster.clock.run({w: (lambda w=w: worker(w)) for w in range(n)})
        finally:
            ends.bar.close()
        run.user.flat.set(coordinator.model())
        ends.callbacks.on_train_end()
        history = ends.history
        history.workers = [rows[w] for w in sorted(rows)]
        history.ps_stats = coordinator.stats()
        history.startup = startup
        history.simulation = {**_as_dict(simulation, time_model), "workers": n,
                              "virtual_seconds": max(cluster.clock.finished.values()),
                              "wall_seconds": time.perf_counter() - wall}
        members = ([coordinator.final_models[w] for w in sorted(coordinator.final_models)]
                   if run.exchange.run_model.ensemble else [])
    log.info("simulated %d workers for %.1f virtual seconds in %.1f s", n,
             history.simulation["virtual_seconds"], history.simulation["wall_seconds"])
    return history, members


def _as_dict(simulation: Simulation, time_model: TimeModel) -> dict:
    return {"network": simulation.network.spec, "step_seconds": time_model.step_seconds,
            "call_seconds": time_model.call_seconds,
            "gradient_seconds": time_model.gradient_seconds,
            "service_seconds": time_model.service_seconds, "stragglers": simulation.stragglers,
            "seed": simulation.seed, "cores": simulation.cores,
            "spec": replace(simulation, step_seconds=time_model.step_seconds,
                            call_seconds=time_model.call_seconds,
                            gradient_seconds=time_model.gradient_seconds,
                            service_seconds=time_model.service_seconds).spec}
