"""Training on a real standalone Spark cluster: master + 2 workers (on the hosts of an emulated
network, ``tests.network``, where this machine allows it; else on 127.0.0.1), executors in
their own JVMs and Python processes, reaching the driver's coordinator (and parameter server)
over TCP, and, for the decentralised algorithms, each other's peer endpoints."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TRAINERS = ["ADAG", "DPSGD", "ADPSGD"]
UNAUTHENTICATED = "runs without spark.authenticate and spark.network.crypto.enabled"


def driver_env(master: str, conf: dict | None = None, **env_vars) -> dict:
    """The environment of a ``tests.cluster_driver`` process: it listens where the master does
    (an emulated network's driver address, or 127.0.0.1)."""
    root = Path(__file__).resolve().parent.parent
    host = master.split("//", 1)[1].rsplit(":", 1)[0]
    conf = {"spark.driver.host": host, "spark.driver.bindAddress": host, **(conf or {})}
    env = dict(os.environ, PYTHONPATH=str(root), SPARK_LOCAL_IP=host,
               DISTKERAS_TEST_SPARK_CONF=json.dumps(conf))
    env.update(env_vars)
    return env


def run_driver(master: str, trainers: list[str], conf: dict | None = None, **env_vars):
    root = Path(__file__).resolve().parent.parent
    env = driver_env(master, conf, **env_vars)
    out = subprocess.run([sys.executable, "-m", "tests.cluster_driver", master,
                          ",".join(trainers)],
                         cwd=root, env=env, capture_output=True, text=True, timeout=900)
    results = {r["trainer"]: r for r in (json.loads(l[len("RESULT "):])
                                         for l in out.stdout.splitlines()
                                         if l.startswith("RESULT "))}
    assert out.returncode == 0 and set(results) == set(trainers), out.stderr[-4000:]
    pythons = [json.loads(l[len("PYTHON "):]) for l in out.stdout.splitlines()
               if l.startswith("PYTHON ")]
    if pythons:
        results["python"] = pythons[0]
    return results, out.stderr


def test_parameter_server_and_peer_algorithms_on_a_standalone_cluster(standalone_cluster):
    """Over the emulated network where there is one (D-PSGD with int8-compressed gossip)."""
    results, stderr = run_driver(standalone_cluster, TRAINERS, DISTKERAS_TEST_TRAINER_SETTINGS=
                                 json.dumps({"DPSGD": {"compression": "int8"}}))
    assert stderr.count(UNAUTHENTICATED) == 1, stderr[-4000:]     # warned once, not per fit
    for name, result in results.items():
        assert "error" not in result, result
        assert result["executors"] == 2
        # one worker per executor, each in its own Python process, none on the driver
        assert len(result["executor_pids"]) == 2, result
        assert result["driver_pid"] not in result["executor_pids"]
        assert all(e >= 3 for e in result["exchanges"]), result
        assert result["accuracy"] > 0.8, result
        assert result["scored"] == 500
    for name in ("DPSGD", "ADPSGD"):     # the peers of each worker: the worker in the other JVM
        assert results[name]["peers"] in (["1", "0"], ["0", "1"]), results[name]
        hosts = [e.rsplit(":", 1)[0] for e in results[name]["endpoints"]]
        master = standalone_cluster.split("//", 1)[1].rsplit(":", 1)[0]
        if master != "127.0.0.1":        # each worker's endpoint on its own emulated host
            assert len(set(hosts)) == 2 and master not in hosts, results[name]
    # int8-compressed gossip: ~3.9x fewer bytes than float32 would have taken
    dpsgd = results["DPSGD"]
    assert all(raw > 3 * sent for raw, sent in zip(dpsgd["raw_bytes_sent"],
                                                  dpsgd["bytes_sent"])), dpsgd


def test_training_with_spark_authentication_and_encryption_on(authenticated_cluster):
    """The daemons require Spark's shared secret and AES-encrypted RPC: the per-run secret in
    the task closure travels encrypted, and training works as without."""
    from tests.conftest import AUTH_CONF

    results, stderr = run_driver(authenticated_cluster, ["ADAG"], AUTH_CONF)
    assert results["ADAG"]["executors"] == 2 and results["ADAG"]["accuracy"] > 0.8, results
    assert UNAUTHENTICATED not in stderr


# not needed by the executors (pyspark: Spark puts its own pyspark.zip first on their path;
# the documentation's tools; the Keras backends the run does not use)
PACK_EXCLUDE = ["*__editable__*", "*/site-packages/pyspark/*", "*/site-packages/optuna/*",
                "*/site-packages/mlflow/*", "*/site-packages/sklearn/*",
                "*/site-packages/pip/*", "*/site-packages/setuptools/*", "*/__pycache__/*",
                "*/site-packages/material/*", "*/site-packages/babel/*"]
# what only one Keras backend needs (JAX imports scipy)
FRAMEWORKS = {"tensorflow": ["tensorflow", "tensorboard*"],
              "jax": ["jax", "jaxlib", "jax_plugins", "scipy"],
              "torch": ["torch", "functorch", "torchgen", "sympy", "triton", "nvidia"]}


def unused_frameworks() -> list[str]:
    """Exclusion patterns of the Keras backends other than the one this process runs."""
    import keras

    return [f"*/site-packages/{package}/*" for name, packages in FRAMEWORKS.items()
            if name != keras.backend.backend() for package in packages]


def packed_environment(directory: Path) -> Path:
    """This test environment packed with venv-pack as a user ships it to a cluster whose
    machines lack distkeras (README "Deploying"); distkeras goes in as a regular package, not
    as the editable install that points at this checkout."""
    import gzip
    import shutil
    import tarfile

    import venv_pack

    packed, archive = directory / "packed.tar", directory / "distkeras-env.tar.gz"
    venv_pack.pack(prefix=sys.prefix, output=str(packed), format="tar",
                   filters=[("exclude", pattern)
                            for pattern in PACK_EXCLUDE + unused_frameworks()])
    site = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
    with tarfile.open(packed, "a") as tar:
        tar.add(Path(__file__).resolve().parent.parent / "distkeras", f"{site}/distkeras",
                filter=lambda info: None if "__pycache__" in info.name else info)
    with open(packed, "rb") as src, gzip.open(archive, "wb", compresslevel=1) as out:
        shutil.copyfileobj(src, out, 1 << 22)
    packed.unlink()
    return archive


def test_executors_run_from_a_packed_environment(standalone_cluster, tmp_path):
    """spark.archives ships the packed environment; every executor's Python, Keras backend
    (the driver's: CI packs the JAX environment) and distkeras come from its unpacked copy, not
    from the driver's interpreter, and it trains."""
    import keras

    archive = packed_environment(tmp_path)
    results, _ = run_driver(standalone_cluster, ["ADAG"],
                            DISTKERAS_TEST_ENVIRONMENT=str(archive))
    assert "error" not in results["ADAG"], results
    assert results["ADAG"]["accuracy"] > 0.8 and results["ADAG"]["executors"] == 2, results
    for where in results["python"]:
        prefix = where["prefix"]
        assert prefix.endswith("/environment") and not prefix.startswith(sys.prefix), where
        assert where["executable"].endswith("environment/bin/python"), where
        assert where["distkeras"].startswith(prefix) and where["framework"].startswith(prefix)
        assert where["backend"] == keras.backend.backend(), where


def executor_jvms(app_id: str) -> list[int]:
    """Pids of the executor JVMs (CoarseGrainedExecutorBackend) of Spark application
    ``app_id`` on this machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"CoarseGrainedExecutorBackend" in cmdline and app_id.encode() in cmdline:
                pids.append(int(entry.name))
    return pids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (an executor JVM, its Python daemon and workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def run_and_kill_an_executor(master: str, trainer: str):
    """The driver trains ``trainer`` (4 epochs of 12k rows per worker, 1 s pause at each end);
    after epoch 0 one executor is SIGKILLed with its Python processes, as when its machine or
    container dies (the JVM alone leaves its Python worker training on). Returns (the RESULT,
    the killed JVM's pid, driver stderr)."""
    import signal
    import subprocess as sp

    root = Path(__file__).resolve().parent.parent
    # epochs long enough (12k rows per worker) that both workers still train after epoch 0:
    # an asynchronous worker ahead of the others never waits for them at epoch ends
    env = driver_env(master, DISTKERAS_TEST_EPOCHS="4", DISTKERAS_TEST_EPOCH_PAUSE="1.0",
                     DISTKERAS_TEST_ROWS="24000")
    proc = sp.Popen([sys.executable, "-m", "tests.cluster_driver", master, trainer], cwd=root,
                    env=env, stdout=sp.PIPE, stderr=sp.PIPE, text=True)
    killed, result, app = None, None, None
    for line in proc.stdout:
        if line.startswith("APP "):
            app = line.split()[1]
        elif line.startswith("EPOCH 0 ") and killed is None:
            training = json.loads(line.split(" ", 2)[2])
            jvms = executor_jvms(app)
            assert len(jvms) == 2 and training, (jvms, line)
            # the executor of the least advanced worker, which has just finished epoch 0 (a
            # worker ahead of it may be done, or nearly: asynchronous workers do not wait)
            killed = next(j for j in jvms if training[0] in process_tree(j))
            for pid in process_tree(killed):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        elif line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    stderr = proc.stderr.read()
    assert proc.wait(300) == 0 and result is not None and killed, stderr[-4000:]
    return result, killed, stderr


def test_async_training_survives_an_executor_killed(standalone_cluster):
    """Spark reschedules the lost executor's task, the worker rejoins at its epoch from θ̃."""
    result, killed, stderr = run_and_kill_an_executor(standalone_cluster, "ADAG")
    assert "error" not in result, result
    # the lost worker's connections dropped with its executor, and its new task rejoined
    assert result["history_epochs"] == 4 and sum(result["lost"]) >= 1, (result, stderr[-3000:])
    assert "rejoined" in stderr
    assert result["accuracy"] > 0.8, result


def test_sync_training_fails_in_bounded_time_naming_the_lost_worker(standalone_cluster):
    result, killed, stderr = run_and_kill_an_executor(standalone_cluster, "DPSGD")
    assert "was lost during training; dpsgd is synchronous" in result.get("error", ""), result
    assert result["seconds"] < 120, result
