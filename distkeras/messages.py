"""The application messages of a training run. Op numbers ≥ 16 (0–15 belong to the transport).

Three services speak them, each on its own authenticated endpoint (same per-run secret):

- the **coordinator** on the driver (control, every algorithm): who is where, progress, epoch
  logs, the stop flag, the replicas a decentralised run reports for validation;
- the **parameter server** on the driver (data, parameter-server algorithms): θ̃ and its rule;
- a **peer endpoint** on each worker's executor (data, all-reduce and gossip algorithms).

Payloads are raw float32 vectors or small JSON objects; nothing else crosses the wire.
"""
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
