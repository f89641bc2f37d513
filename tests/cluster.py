"""A real Spark standalone cluster on loopback, started from the pip package: a master and N
workers as separate JVMs (``spark-class ... Master`` / ``Worker``; there are no sbin scripts)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandaloneCluster:
    """``with StandaloneCluster(tmpdir, workers=2) as master_url: ...`` — always torn down."""

    def __init__(self, workdir: Path, workers: int = 2, cores: int = 1, memory: str = "2g",
                 conf: dict | None = None):
        """``conf``: Spark settings of the master and worker daemons (``spark.authenticate``)."""
        import pyspark

        self.home = Path(pyspark.__file__).parent
        self.workdir, self.workers, self.cores, self.memory = Path(workdir), workers, cores, memory
        self.procs: list[subprocess.Popen] = []
        self.conf = dict(conf or {})
        self.port, self.ui = free_port(), free_port()

    def _start(self, name: str, *args: str) -> None:
        env = dict(os.environ, SPARK_HOME=str(self.home), SPARK_LOCAL_IP="127.0.0.1",
                   PYSPARK_PYTHON=sys.executable, SPARK_NO_DAEMONIZE="1")
        if self.conf:
            env["SPARK_DAEMON_JAVA_OPTS"] = " ".join(f"-D{k}={v}" for k, v in self.conf.items())
        log = open(self.workdir / f"{name}.log", "wb")
        self.procs.append(subprocess.Popen([str(self.home / "bin" / "spark-class"), *args],
                                           stdout=log, stderr=subprocess.STDOUT, env=env))

    def alive_workers(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui}/json/", timeout=2) as r:
                return int(json.load(r).get("aliveworkers", 0))
        except OSError:
            return 0

    def __enter__(self) -> str:
        url = f"spark://127.0.0.1:{self.port}"
        self._start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.port), "--webui-port", str(self.ui))
        for i in range(self.workers):
            work = self.workdir / f"worker{i}"
            work.mkdir(exist_ok=True)
            self._start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", url,
                        "--host", "127.0.0.1", "--cores", str(self.cores), "--memory", self.memory,
                        "--webui-port", str(free_port()), "--work-dir", str(work))
        deadline = time.monotonic() + 120
        while self.alive_workers() < self.workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                self.__exit__()
                logs = {p.name: p.read_text()[-2000:] for p in self.workdir.glob("*.log")}
                raise RuntimeError(f"standalone cluster did not come up: {logs}")
            time.sleep(0.5)
        return url

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
