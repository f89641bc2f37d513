"""What distkeras asks of a Spark session, answered for a classic session and for Spark Connect.

A classic session (``SparkSession.builder.master(...)``) runs Spark's driver in this process and
offers the ``SparkContext``; a Spark Connect session (``SparkSession.builder.remote("sc://...")``,
``spark.api.mode=connect``, the managed platforms' shared clusters) is a thin client of a driver
elsewhere, with no ``SparkContext``, broadcast variables, accumulators, RDDs or JVM gateway.
Everything else distkeras does (``mapInArrow`` with ``barrier=`` and ``profile=``, DataFrames,
``spark.conf``, Python data sources, pyspark.ml persistence) is the same code for both; the few
questions whose answer differs are asked of ``spark_api(spark)`` and answered here, once:

| question | classic | Connect |
|---|---|---|
| ``service_host`` | ``spark.driver.host`` | this process's address towards the Connect server |
| ``default_parallelism`` | ``sc.defaultParallelism`` | ``spark.default.parallelism``, a local master's cores, else one tiny job |
| ``task_slots`` | live executors x cores | ``default_parallelism`` |
| ``share(value)`` | a broadcast variable | the value in the closure |
| ``cached_partitions`` | the RDD's partition count | unknown (None) |
| ``cache_loaded`` | every partition of the cache in the block manager | unknown (False) |
| ``counter()`` | an accumulator | none (`Unavailable`) |
| ``job_scope`` | a job group (cancelled by group) | a job tag (interrupted by tag) |
| ``thread`` | ``InheritableThread`` | ``InheritableThread(session=)`` |
| ``worker_environment`` | per-function ``sc.environment`` (a Python-worker pool per thread count) | not offered: one pool |
| ``filesystem(uri)`` | Hadoop's ``FileSystem`` through the JVM | pyarrow's filesystems |
| ``stage_progress`` | the status tracker, polled | a progress handler |

Example::

    api = spark_api(spark)
    api.is_connect, api.master, api.default_parallelism
    shared = api.share(payload)          # executors read shared.value
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
_PARALLELISM: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()


def is_connect(spark) -> bool:
    """Whether ``spark`` is a Spark Connect session."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def spark_api(spark) -> "SparkAPI":
    """The answers of ``spark`` (a classic or a Spark Connect session)."""
    return (ConnectAPI if is_connect(spark) else ClassicAPI)(spark)


def local_cores(master: str) -> int | None:
    """The cores of a ``local``/``local[N]``/``local[*]``/``local[N,F]`` master; None otherwise."""
    if master == "local":
        return 1
    if not master.startswith("local["):
        return None
    cores = master[len("local["):master.index("]")].split(",")[0].strip()
    return (os.cpu_count() or 1) if cores == "*" else int(cores)


class Unavailable:
    """A value this kind of session cannot provide: adding to it does nothing, reading it says
    why and what to do instead."""

    def __init__(self, what: str, instead: str):
        self.what, self.instead = what, instead

    def add(self, _value) -> None:
        pass

    @property
    def value(self):
        raise NotImplementedError(f"{self.what} needs Spark accumulators, which a Spark Connect "
                                  f"session does not have; {self.instead}")


class _Inline:
    """A value sent inside the task closure, read as ``.value`` like a broadcast variable."""

    def __init__(self, value):
        self.value = value

    def unpersist(self, *_args) -> None:
        pass

    def destroy(self, *_args) -> None:
        pass


class SparkAPI:
    """The answers both kinds of session give the same way (through ``spark.conf``)."""

    def __init__(self, spark):
        self.spark = spark
        self.is_connect = False

    def conf(self, key: str, default: str | None = None) -> str | None:
        """A Spark setting of the session (its SparkConf included)."""
        value = self.spark.conf.get(key, None)
        return default if value is None else value

    @property
    def master(self) -> str:
        return self.conf("spark.master", "local[*]")

    @property
    def app_id(self) -> str:
        return self.conf("spark.app.id", "") or ""

    @property
    def task_cpus(self) -> int:
        return int(self.conf("spark.task.cpus", "1"))

    @property
    def gpus_per_task(self) -> float:
        return float(self.conf("spark.task.resource.gpu.amount", "0") or 0)

    @property
    def is_local(self) -> bool:
        return self.master.startswith("local")

    def _count_parallelism(self) -> int:
        """``spark.range`` without a partition count is cut into the default parallelism."""
        from pyspark.sql import functions as F

        row = self.spark.range(0, 1 << 20).agg(F.max(F.spark_partition_id()).alias("p")).first()
        return int(row["p"]) + 1

    @property
    def default_parallelism(self) -> int:
        raise NotImplementedError

    def thread(self, target: Callable[[], None], name: str | None = None):
        """A daemon thread whose Spark jobs belong to this session (pyspark's
        ``InheritableThread``: local properties on a classic session, tags on Connect)."""
        from pyspark import InheritableThread

        extra = {"session": self.spark} if self.is_connect else {}
        return InheritableThread(target=target, daemon=True, name=name, **extra)

    def task_slots(self, cores_per_task: int | None = None) -> int:
        raise NotImplementedError

    @contextlib.contextmanager
    def stage_progress(self, interval: float, report: Callable[[int, int, int, int], None]):
        """Call ``report(stage, done, total, running)`` about every ``interval`` seconds for the
        running stages while the block runs."""
        yield


class ClassicAPI(SparkAPI):
    """A session whose Spark driver is this process (the ``SparkContext`` is here)."""

    def __init__(self, spark):
        super().__init__(spark)
        self.sc = spark.sparkContext

    @property
    def master(self) -> str:
        return self.sc.master

    @property
    def app_id(self) -> str:
        return self.sc.applicationId

    @property
    def service_host(self) -> str:
        """The address executors reach this process at (where the services listen)."""
        return self.sc.getConf().get("spark.driver.host", "127.0.0.1")

    @property
    def default_parallelism(self) -> int:
        return self.sc.defaultParallelism

    def task_slots(self, cores_per_task: int | None = None) -> int:
        cores = local_cores(self.master)
        if cores is not None:
            return max(1, cores // self.task_cpus)
        status = self.sc._jsc.sc().getExecutorMemoryStatus()  # noqa: SLF001 - no public API
        executors = max(0, status.size() - 1)               # the driver is listed too
        cores = int(self.conf("spark.executor.cores", "1"))
        return max(0, executors * (cores // (cores_per_task or self.task_cpus)))

    def cached_partitions(self, df) -> int | None:
        """How many partitions ``df`` has (its RDD's)."""
        return df.rdd.getNumPartitions()

    def cache_loaded(self, df) -> bool:
        """Whether every partition of ``df``'s cache is in the block manager (False when Spark
        cannot say): until then, which executor caches which partition is still to decide."""
        try:
            leaves = df._jdf.queryExecution().withCachedData().collectLeaves().iterator()
            loaded = []
            while leaves.hasNext():
                leaf = leaves.next()
                if leaf.getClass().getSimpleName() == "InMemoryRelation":
                    loaded.append(bool(leaf.cacheBuilder().isCachedColumnBuffersLoaded()))
            return bool(loaded) and all(loaded)
        except Exception:  # noqa: BLE001 - a Spark without these internals: not known loaded
            return False

    def share(self, value):
        """``value`` on every executor, sent once per executor (a broadcast variable)."""
        return self.sc.broadcast(value)

    def counter(self, what: str, instead: str, zero=0, param=None):
        """A sum the executors add to and the driver reads (an accumulator)."""
        return self.sc.accumulator(zero, param) if param is not None else self.sc.accumulator(zero)

    def job_scope(self, name: str, description: str) -> "JobScope":
        return _JobGroup(self.sc, name, description)

    @contextlib.contextmanager
    def worker_environment(self, variables: dict[str, str]) -> Iterator[bool]:
        """Add ``variables`` to the environment of the Python functions created inside the
        block (Spark copies ``sc.environment`` into each function when its plan is built, and
        keeps a pool of Python workers per environment). Yields True: the pool is honoured."""
        with _ENVIRONMENT_LOCK:
            env = self.sc.environment
            saved = {key: env.get(key) for key in variables}
            env.update(variables)
            try:
                yield True
            finally:
                for key, value in saved.items():
                    if value is None:
                        env.pop(key, None)
                    else:
                        env[key] = value

    def filesystem(self, root: str):
        """Hadoop's ``FileSystem`` of ``root``: a plain path is in Spark's default one."""
        from distkeras.io.filesystem import HadoopFS

        return HadoopFS(self.sc, root)

    def set_log_level(self, level: str) -> None:
        self.sc.setLogLevel(level)

    @contextlib.contextmanager
    def stage_progress(self, interval: float, report: Callable[[int, int, int, int], None]):
        tracker, done = self.sc.statusTracker(), threading.Event()

        def poll():
            while not done.wait(interval):
                for sid in tracker.getActiveStageIds():
                    info = tracker.getStageInfo(sid)
                    if info is not None:
                        report(sid, info.numCompletedTasks, info.numTasks, info.numActiveTasks)

        thread = threading.Thread(target=poll, daemon=True, name="distkeras-stage-progress")
        thread.start()
        try:
            yield
        finally:
            done.set()


class ConnectAPI(SparkAPI):
    """A Spark Connect client: Spark's driver runs in the Connect server, not here."""

    def __init__(self, spark):
        super().__init__(spark)
        self.is_connect = True

    @property
    def server(self) -> tuple[str, int]:
        """The Connect server's host and port."""
        client = self.spark.client
        builder = getattr(client, "_builder", None)
        port = getattr(builder, "_port", None) or 15002
        return client.host.strip("[]"), int(port)

    @property
    def service_host(self) -> str:
        """This process's address on the route to the Connect server: on the servers' network,
        the executors reach it there. Override with ``ps_host=`` (or ``DISTKERAS_SERVICE_HOST``)
        when they reach it by another address."""
        override = os.environ.get("DISTKERAS_SERVICE_HOST")
        if override:
            return override
        host, port = self.server
        if host in ("localhost", "127.0.0.1", "::1"):
            return "127.0.0.1"
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            with socket.socket(family[0], socket.SOCK_DGRAM) as probe:
                probe.connect(family[4])              # picks the route; sends nothing
                return probe.getsockname()[0]
        except OSError:
            return socket.gethostbyname(socket.gethostname())

    @property
    def default_parallelism(self) -> int:
        """``spark.default.parallelism``, a ``local[N]`` server's N, else counted once per
        session by a tiny job (``local[*]`` counts the server's cores, not this machine's)."""
        configured = self.conf("spark.default.parallelism")
        if configured:
            return int(configured)
        cores = local_cores(self.master) if "*" not in self.master else None
        if cores is not None:
            return cores
        with _LOCK:
            known = _PARALLELISM.get(self.spark)
        if known is None:
            known = self._count_parallelism()
            with _LOCK:
                _PARALLELISM[self.spark] = known
        return known

    def task_slots(self, cores_per_task: int | None = None) -> int:
        """The cluster's cores (Spark's default parallelism) over each task's cores: Connect
        lists no executors."""
        if self.is_local:
            return max(1, self.default_parallelism // self.task_cpus)
        return max(1, self.default_parallelism // (cores_per_task or self.task_cpus))

    def cached_partitions(self, df) -> int | None:
        """None: Connect has no RDDs to ask (a cached frame is repartitioned for the workers)."""
        return None

    def cache_loaded(self, df) -> bool:
        return False

    def share(self, value):
        """``value`` inside the task closure (Connect has no broadcast variables): it travels
        in the plan, so it must fit the server's gRPC message limit
        (``spark.connect.grpc.maxInboundMessageSize``, 128 MiB by default)."""
        parts = value if isinstance(value, (list, tuple)) else [value]
        size = sum(len(p) for p in parts if isinstance(p, (bytes, bytearray, memoryview)))
        limit = int(self.conf("spark.connect.grpc.maxInboundMessageSize", str(128 << 20)))
        if size > 0.9 * limit:
            raise ValueError(f"{size / 2**20:.0f} MiB must travel to the executors in the task "
                             f"closure (Spark Connect has no broadcast variables), more than "
                             f"the server takes in one message ({limit / 2**20:.0f} MiB): send "
                             "less (a search's sample_fraction=, a smaller model), or start "
                             "the server with a larger spark.connect.grpc.maxInboundMessageSize")
        return _Inline(value)

    def counter(self, what: str, instead: str, zero=0, param=None):
        return Unavailable(what, instead)

    def job_scope(self, name: str, description: str) -> "JobScope":
        return _JobTag(self.spark, name)

    @contextlib.contextmanager
    def worker_environment(self, variables: dict[str, str]) -> Iterator[bool]:
        """Connect offers no per-function environment: Yields False (one Python-worker pool)."""
        yield False

    def filesystem(self, root: str):
        from distkeras.io.filesystem import ArrowFS

        return ArrowFS(root)

    def set_log_level(self, level: str) -> None:
        pass                  # the server's log level is the server's

    @contextlib.contextmanager
    def stage_progress(self, interval: float, report: Callable[[int, int, int, int], None]):
        last = [0.0]

        def handler(stages, inflight_tasks, operation_id, done):
            now = time.monotonic()
            if done or now - last[0] < interval:
                return
            last[0] = now
            for stage in stages or ():
                if not stage.done:
                    report(stage.stage_id, stage.num_completed_tasks, stage.num_tasks,
                           inflight_tasks)

        self.spark.registerProgressHandler(handler)
        try:
            yield
        finally:
            self.spark.removeProgressHandler(handler)


_ENVIRONMENT_LOCK = threading.Lock()


class JobScope:
    """The Spark jobs a thread starts inside ``enter()``, cancelled together by ``cancel()``.
    ``enter`` runs in the thread that starts the jobs; ``cancel`` from any thread."""

    def enter(self) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError


class _JobGroup(JobScope):
    def __init__(self, sc, name: str, description: str):
        self.sc, self.name, self.description = sc, name, description

    def enter(self) -> None:
        self.sc.setJobGroup(self.name, self.description or self.name, interruptOnCancel=True)

    def cancel(self) -> None:
        self.sc.cancelJobGroup(self.name)


class _JobTag(JobScope):
    def __init__(self, spark, name: str):
        self.spark, self.name = spark, name

    def enter(self) -> None:
        self.spark.addTag(self.name)       # tags are per thread: the job thread's operations

    def cancel(self) -> None:
        self.spark.interruptTag(self.name)
