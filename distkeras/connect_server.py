"""A Spark Connect server on this machine, started with pyspark's own
``sbin/start-connect-server.sh`` and stopped on exit: for trying distkeras from a Connect client
in a notebook, for the tests (``tests/connect``) and for ``benchmarks/connect.py``.

Example::

    with LocalConnectServer("local[3]") as url:          # sc://127.0.0.1:<port>
        spark = distkeras.spark.session(url)
"""
from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distkeras.spark import SESSION_CONF

#: the server's settings distkeras wants: those of a classic session it builds
SERVER_CONF = dict(SESSION_CONF)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalConnectServer:
    """``start-connect-server.sh --master <master>`` in the foreground of a child process group,
    its executors running this interpreter (``PYSPARK_PYTHON``: a Connect server's Python
    workers do not see the client's ``sys.path``, so distkeras must be installed there)."""

    def __init__(self, master: str = "local[2]", conf: dict | None = None,
                 port: int | None = None, log_dir: str | None = None, timeout: float = 120.0):
        self.master, self.timeout = master, timeout
        self.port = port or free_port()
        self.conf = {**SERVER_CONF, **(conf or {}),
                     "spark.connect.grpc.binding.port": str(self.port)}
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="distkeras-connect-"))
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    def start(self) -> str:
        import pyspark

        home = Path(pyspark.__file__).parent
        env = dict(os.environ, SPARK_HOME=str(home), SPARK_LOG_DIR=str(self.log_dir),
                   SPARK_PID_DIR=str(self.log_dir), SPARK_NO_DAEMONIZE="1",
                   PYSPARK_PYTHON=os.environ.get("PYSPARK_PYTHON", sys.executable))
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        env.pop("SPARK_REMOTE", None)
        env.pop("SPARK_CONNECT_MODE_ENABLED", None)
        args = ["bash", str(home / "sbin" / "start-connect-server.sh"), "--master", self.master]
        for key, value in self.conf.items():
            args += ["--conf", f"{key}={value}"]
        log = open(self.log_dir / "server.log", "wb")
        self._process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        log.close()
        atexit.register(self.stop)          # a notebook that never leaves the with-block
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self.url
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    tail = (self.log_dir / "server.log").read_text(errors="replace")[-4000:]
                    raise RuntimeError(f"the Spark Connect server did not start within "
                                       f"{self.timeout:.0f} s (log {self.log_dir}):\n{tail}")
                time.sleep(0.5)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, 15)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(10)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
