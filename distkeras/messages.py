"""The application messages exchanged between executors' workers and the driver's parameter server.

Op numbers ≥ 16 (0–15 belong to the transport). Payloads are raw float32 vectors or small JSON
objects; nothing else crosses the wire.
"""
HELLO = 16       # worker → server, JSON {pid, host, attempt}; reply JSON {start_epoch, ...}
PULL = 17        # reply: θ̃
COMMIT = 18      # payload: the algorithm's worker_send(); aux: samples since the last report
EPOCH_END = 19   # JSON {epoch, logs}; aux: samples since the last report
FINAL = 20       # payload: the worker's final θ (ensembles)
DONE = 21        # worker finished cleanly

FLAG_STOP = 1    # set on replies once the driver asked training to stop (EarlyStopping, ...)
