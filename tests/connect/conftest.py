"""A real Spark Connect server for the tests of this directory, started once per test session
with pyspark's own ``sbin/start-connect-server.sh`` (``local[3]``: two workers and the services'
task of ``services="task"``), and a client session of it.

These tests run in a pytest process of their own (``pytest tests/connect``; ``.ci/run`` does):
a Connect client turns pyspark into Connect mode for its whole process, which the classic
session of the other tests cannot share.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SERVER_CONF = {
    "spark.python.worker.reuse": "true",
    "spark.ui.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.shuffle.partitions": "4",
    "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": "1",
    "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": "2s",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def connect_url(tmp_path_factory):
    """``sc://127.0.0.1:<port>`` of a Spark Connect server on ``local[3]``, stopped at the end."""
    import pyspark

    home = Path(pyspark.__file__).parent
    port = _free_port()
    logs = tmp_path_factory.mktemp("connect-server")
    env = dict(os.environ, SPARK_HOME=str(home), SPARK_LOG_DIR=str(logs),
               SPARK_PID_DIR=str(logs), SPARK_NO_DAEMONIZE="1",
               PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    env.pop("SPARK_REMOTE", None)
    conf = dict(SERVER_CONF, **{"spark.connect.grpc.binding.port": str(port),
                                "spark.driver.host": "127.0.0.1"})
    args = ["bash", str(home / "sbin" / "start-connect-server.sh"), "--master", "local[3]"]
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    log_file = open(logs / "server.log", "wb")
    server = subprocess.Popen(args, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                              start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("the Spark Connect server did not start:\n"
                                   + (logs / "server.log").read_text()[-4000:])
            time.sleep(0.5)
    yield f"sc://127.0.0.1:{port}"
    os.killpg(server.pid, 15)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, 9)
    log_file.close()


@pytest.fixture(scope="session")
def spark(connect_url):
    """A Spark Connect client session (what ``SparkSession.builder.remote(url)`` gives)."""
    from distkeras.spark import session

    s = session(connect_url)
    yield s
    s.stop()
