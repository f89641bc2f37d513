"""The application messages of a training run. Op numbers ≥ 16 (0–15 belong to the transport).

Three services speak them, each on its own authenticated endpoint (same per-run secret):

- the **coordinator** on the driver (control, every algorithm): who is where, progress, epoch
  logs, the stop flag, the replicas a decentralised run reports for validation;
- the **parameter server** on the driver (data, parameter-server algorithms): θ̃ and its rule;
- a **peer endpoint** on each worker's executor (data, all-reduce and gossip algorithms).

Payloads are raw float32 vectors or small JSON objects; nothing else crosses the wire.

A worker's task ends by returning one row, its :data:`STATUS_SCHEMA` (where its time and bytes
went), which the driver collects into ``history.workers``.
"""
import pyarrow as pa

# -- coordinator (control) --------------------------------------------------------------------
HELLO = 16       # JSON {pid, host, attempt, endpoint}; reply JSON {start_epoch, updates}
PULL = 17        # reply: the model the run defines now (θ̃, or the mean of the replicas)
EPOCH_END = 19   # JSON {epoch, logs}; aux: samples since the last report
FINAL = 20       # payload: the worker's final θ (ensembles, decentralised algorithms)
DONE = 21        # worker finished cleanly
PROGRESS = 22    # aux: samples since the last report; JSON {exchanges}; reply flags: FLAG_STOP
REPLICA = 23     # payload: θ at the end of epoch ``aux`` (decentralised: mean and consensus)
PEERS = 24       # reply JSON {peers: {worker: "host:port"}} (the rendezvous of asynchronous peers)
FAILED = 25      # JSON {error, where, line}: the worker raised this and is going down

# -- parameter server (data) ------------------------------------------------------------------
# PULL (17) as above: reply θ̃
COMMIT = 18      # payload: the algorithm's worker_send(); reply: the algorithm's reply vector

# -- peer endpoints (data) --------------------------------------------------------------------
RING = 32        # a ring all-reduce segment; aux = round << 32 | step << 16 | segment
MIX = 33         # D-PSGD: a neighbour's θ for round ``aux``
GOSSIP = 34      # pairwise averaging: payload the caller's θ, reply the callee's θ (before)

# -- hyperparameter search (control) ---------------------------------------------------------
EPOCH_REPORT = 40  # a trial's epoch: aux = trial id, JSON {epoch, logs}; reply FLAG_STOP: prune

FLAG_STOP = 1    # set on control replies once the driver asked training to stop

# -- what a worker task returns (a row of history.workers) -------------------------------------
STATUS_SCHEMA = pa.schema([
    ("worker", pa.int32()), ("attempt", pa.int32()), ("epochs", pa.int32()),
    ("samples", pa.int64()), ("seconds", pa.float64()), ("compute_seconds", pa.float64()),
    ("exchange_seconds", pa.float64()), ("wait_seconds", pa.float64()),
    ("bytes_sent", pa.int64()), ("bytes_received", pa.int64()), ("exchanges", pa.int64()),
    ("peers", pa.string()), ("host", pa.string()), ("pid", pa.int64()),
    ("started_at", pa.float64()), ("training_from", pa.float64()),
    ("finished_at", pa.float64()), ("learning_rate", pa.float64()), ("threads", pa.int32()),
    ("missed_commits", pa.int64()), ("read_seconds", pa.float64()),
    ("setup_seconds", pa.float64()), ("first_window_seconds", pa.float64()),
    ("raw_bytes_sent", pa.int64()), ("compression_ratio", pa.float64()),
    ("feedback_norm", pa.float64()), ("backend", pa.string()), ("reused_replica", pa.int32())])
_DDL_TYPES = {pa.int32(): "int", pa.int64(): "bigint", pa.float64(): "double",
              pa.string(): "string"}
#: the same schema as Spark SQL DDL (the ``mapInArrow`` output schema of a training job)
STATUS_DDL = ", ".join(f"{f.name} {_DDL_TYPES[f.type]}" for f in STATUS_SCHEMA)
