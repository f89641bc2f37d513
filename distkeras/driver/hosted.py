"""The run's services in a task of the training job (``services="task"``), for a client the
executors cannot reach (a Spark Connect client on a laptop, behind NAT or a firewall).

With ``services="here"`` the coordinator and parameter server listen in this Python process
and the executors connect to it. Where they cannot, the training job gets one more task than
workers, in one barrier stage: that task starts the services on its executor and tells the
workers where they are (``BarrierTaskContext.allGather``); it then runs the epoch ends the
driver runs otherwise (per-epoch logs, validation, callbacks, learning-rate changes) and
returns the run's model, history and statistics as its result row. Nothing but Spark's own
channel joins this process and the cluster.

What it costs (README "Spark Connect"): one more task slot, held for the whole run; one more
copy of the training partitions (a barrier stage cannot read a union of the workers'
partitions and the services' one, so it reads a local checkpoint of it); all workers scheduled
together (a barrier stage: no dynamic allocation, and a lost executor fails the run, where
asynchronous workers would otherwise rejoin); no live progress bar (the per-epoch logs are in
that executor's log, then in ``history``); callbacks run on the executor (files they write are
written there); no ``checkpoint_dir``, ``BackupAndRestore`` or MLflow logging during the run.

Example::

    ADAG(model, num_workers=4, services="task").fit(df)      # from a Connect client
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import socket
import time
from typing import Iterator

import numpy as np
import pyarrow as pa

from distkeras import messages
from distkeras.driver.job import SparkJob, TrainingError

log = logging.getLogger(__name__)
HOSTED_DDL = messages.STATUS_DDL + ", hosted binary"
_SERVICE_ROW = -1       # the ``worker`` of the services' result row
STOP_WAIT = 30.0        # seconds the services' task waits for the workers to stop on an error


def train_in_task(run, startup: dict, began: float):
    """``_Run.train`` with the services in a task: returns ``(history, members)``."""
    from pyspark.sql import functions as F

    from distkeras.custom_objects import ship_by_value
    from distkeras.driver.fit import _warn_isolated, startup_summary, task_spec

    settings, algorithm = run.settings, run.algorithm
    ship_by_value(run.callbacks)          # they run in the task (the algorithm travels already)
    secret = secrets.token_bytes(32)
    spec = task_spec(run, {"coordinator": None, "ps": None, "secret": secret})
    spec["hosted"] = True
    serve = {"settings": _portable_settings(settings), "algorithm": algorithm,
             "portable": run.user.portable, "layout": run.user.layout.to_dict(),
             "compiled": run.compiled, "initial": run.user.flat.get(), "val": run.val,
             "callbacks": list(run.callbacks), "steps": run.data.steps, "secret": secret,
             "backend": run.cores.backend,
             "tls": [open(f, "rb").read() for f in (settings.tls_cert, settings.tls_key)]
             if settings.tls_cert else None}
    job_df = run.data.job_df
    placeholder = job_df.sparkSession.range(0, 1, 1, 1).select(
        *[F.lit(None).cast(f.dataType).alias(f.name) for f in job_df.schema.fields])
    # partition num_workers: the services. A barrier stage cannot read a union, so the union
    # is materialised first (a local checkpoint: one more copy of the partitions, in memory)
    hosted_df = job_df.unionByName(placeholder).localCheckpoint(eager=True)
    log.info("%s: the services run in a task of the job (services='task'); per-epoch logs "
             "are in that executor's log and in history", settings.name)
    startup["submitted_after_seconds"] = time.perf_counter() - began
    submitted = time.time()
    job = SparkJob(hosted_df, hosted_task(spec, serve, settings.num_workers), HOSTED_DDL,
                   barrier=True, description=f"distkeras {settings.name} (services in a task)",
                   cores=run.cores).start()
    try:
        while job.is_alive():
            job.join(0.2)
        rows = job.result()
    except BaseException:
        if job.is_alive():
            job.cancel()
        raise
    service = [r for r in rows if r["worker"] == _SERVICE_ROW]
    if not service or service[0]["hosted"] is None:
        raise TrainingError("the services' task returned no result")
    history, members, vector = decode_result(service[0]["hosted"])
    run.user.flat.set(vector)
    history.workers = [{k: v for k, v in r.asDict().items() if k != "hosted"}
                       for r in rows if r["worker"] != _SERVICE_ROW]
    history.startup = startup_summary(startup, submitted, history.workers)
    if run.exchange.run_model.epoch_replicas and settings.num_workers > 1:
        _warn_isolated(history.workers)
    return history, members


def check(settings, callbacks, spark) -> None:
    """What ``services="task"`` cannot do, said before anything starts: what needs this
    process during the run, and a barrier stage of ``num_workers + 1`` tasks."""
    import keras

    from distkeras.spark_api import spark_api
    from distkeras.tracking import MLflowLogger

    api = spark_api(spark)
    if (api.conf("spark.dynamicAllocation.enabled", "false") or "").lower() == "true":
        raise ValueError("services='task' runs the workers and the services in one barrier "
                         "stage, which Spark refuses under dynamic allocation: set "
                         "spark.dynamicAllocation.enabled=false, or use services='here'")
    slots = api.task_slots()
    if slots < settings.num_workers + 1:
        raise ValueError(f"services='task' needs num_workers + 1 = {settings.num_workers + 1} "
                         f"task slots at once (the workers and the services' task), and Spark "
                         f"has {slots}: lower num_workers, add executors, or use "
                         "services='here'")
    if settings.mlflow or any(isinstance(c, MLflowLogger) for c in callbacks):
        raise ValueError("services='task': MLflow logging runs in this process between epochs; "
                         "set mlflow=False and take MLflowLogger out of callbacks (log history "
                         "afterwards), or use services='here'")
    if settings.checkpoint_dir or any(isinstance(c, keras.callbacks.BackupAndRestore)
                                      for c in callbacks):
        raise ValueError("services='task': the checkpoint is written by this process between "
                         "epochs; drop checkpoint_dir (or BackupAndRestore), or use "
                         "services='here'")


def _portable_settings(settings):
    """The run's settings without the live objects that stay here (the model, DataFrames)."""
    from types import SimpleNamespace

    values = dict(vars(settings))
    values.update(keras_model=None, validation_data=None, callbacks=[], verbose=False)
    return SimpleNamespace(**values)


def hosted_task(spec: dict, serve: dict, num_workers: int):
    """The ``mapInArrow`` function of the job: partitions ``0..num_workers-1`` train as
    ``remote.train_task``, partition ``num_workers`` serves."""
    from distkeras.executor import remote

    train = remote.train_task(spec)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
        if ctx.partitionId() == num_workers:
            for _ in batches:
                pass
            yield _serve(serve, ctx)
            return
        where = [json.loads(m) for m in ctx.allGather("{}")]
        services = next(m for m in where if m)
        spec["run"].update(coordinator=services["coordinator"], ps=services["ps"])
        for batch in train(batches):
            yield pa.RecordBatch.from_arrays(
                list(batch.columns) + [pa.nulls(batch.num_rows, pa.binary())],
                names=list(batch.schema.names) + ["hosted"])

    return run


def _advertised_host(ctx) -> str:
    """The address the workers reach this executor at: ``SPARK_LOCAL_IP`` where set, else
    the executor's address as the barrier stage lists it (not the host name, which resolves
    to 127.0.1.1 on many Linux machines)."""
    host = os.environ.get("SPARK_LOCAL_IP")
    if host:
        return host
    address = ctx.getTaskInfos()[ctx.partitionId()].address
    return address.rsplit(":", 1)[0].strip("[]") if address else socket.getfqdn()


class _WorkerTasks:
    """The workers as the services' task sees them (what ``monitor`` asks of a Spark job)."""

    def __init__(self, coordinator):
        self.coordinator = coordinator

    def add_done_callback(self, callback) -> None:
        """Nothing to call back: ``finished`` is read at every check of the monitor."""

    @property
    def finished(self) -> bool:
        c = self.coordinator
        return bool(c.failure or c.raised or c.all_done())

    def result(self):
        c = self.coordinator
        if c.failure or c.raised:
            raise TrainingError(c.worker_error() or c.failure)
        return []


def _serve(serve: dict, ctx) -> pa.RecordBatch:
    """Start the services, publish where they are, run the epoch ends, return the result."""
    from distkeras import backends
    from distkeras.driver.epochs import Resume, monitor
    from distkeras.driver.fit import start_services
    from distkeras.executor.replica import build_model
    from distkeras.state import StateLayout

    from distkeras.executor.remote import _task_resources

    settings, compiled = serve["settings"], serve["compiled"]
    cpus, gpus = _task_resources(ctx)
    backend = backends.prepare(serve["backend"], cpus, gpus)   # the task's own GPU if any
    if serve["tls"]:                          # the certificate and key, as files here
        import tempfile

        folder = tempfile.mkdtemp(prefix="distkeras-tls-")
        for name, data in zip(("cert.pem", "key.pem"), serve["tls"]):
            with open(os.path.join(folder, name), "wb") as fh:
                fh.write(data)
        settings.tls_cert, settings.tls_key = (os.path.join(folder, n)
                                               for n in ("cert.pem", "key.pem"))
    layout = StateLayout.from_dict(serve["layout"])
    driver = build_model(serve["portable"], **compiled.arguments())
    flat = backend.flat_weights(driver, layout)
    flat.set(serve["initial"])
    algorithm, host = serve["algorithm"], _advertised_host(ctx)
    with contextlib.ExitStack() as services:
        ps, coordinator = start_services(
            services, settings, algorithm, serve["initial"], layout.params, host,
            driver_work=bool(serve["callbacks"]) or serve["val"] is not None,
            secret=serve["secret"])
        ctx.allGather(json.dumps({"coordinator": [host, coordinator.address[1]],
                                  "ps": [host, ps.address[1]] if ps is not None else None}))
        try:
            history = monitor(settings, coordinator, _WorkerTasks(coordinator), driver, flat,
                              serve["val"], serve["callbacks"], serve["steps"], Resume())
        except BaseException:
            # the workers stop at their next report and end cleanly: the stage then fails
            # with this task's error alone, the cause the user needs
            coordinator.request_stop()
            deadline = time.monotonic() + STOP_WAIT
            while not coordinator.all_done() and time.monotonic() < deadline:
                time.sleep(0.1)
            raise
        members = ([coordinator.final_models[w] for w in sorted(coordinator.final_models)]
                   if algorithm.exchange_type.run_model.ensemble else [])
        payload = encode_result(history, coordinator.stats(), flat.get(), members)
    row = {f.name: None for f in messages.STATUS_SCHEMA}
    row["worker"] = _SERVICE_ROW
    schema = messages.STATUS_SCHEMA.append(pa.field("hosted", pa.binary()))
    return pa.RecordBatch.from_pylist([{**row, "hosted": payload}], schema=schema)


def encode_result(history, stats: dict, vector: np.ndarray, members: list) -> bytes:
    """The run's result as an ``.npz`` (no pickle): the model's state vector, the ensemble's
    members, and the history and statistics as JSON."""
    meta = {"history": dict(history), "epoch": list(history.epoch),
            "epoch_stats": history.epoch_stats, "ps_stats": stats}
    arrays = {"vector": np.asarray(vector, np.float32),
              "meta": np.frombuffer(json.dumps(meta, default=_jsonable).encode(), np.uint8)}
    arrays.update({f"member_{i}": np.asarray(m, np.float32) for i, m in enumerate(members)})
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def decode_result(payload: bytes):
    """``(history, members, vector)`` from :func:`encode_result`'s bytes."""
    from distkeras.driver.epochs import TrainingHistory

    with np.load(io.BytesIO(payload), allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        vector = data["vector"].copy()
        members = [data[f"member_{i}"].copy() for i in range(len(data.files))
                   if f"member_{i}" in data.files]
    history = TrainingHistory()
    history.update(meta["history"])
    history.epoch = meta["epoch"]
    history.epoch_stats = _int_keys(meta["epoch_stats"])
    history.ps_stats = _int_keys(meta["ps_stats"])
    return history, members, vector


def _int_keys(value):
    """JSON's string keys back to the integers they were (worker ids, staleness)."""
    if isinstance(value, dict):
        return {int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k: _int_keys(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_int_keys(v) for v in value]
    return value


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
