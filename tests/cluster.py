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
                 conf: dict | None = None, network=None):
        """``conf``: Spark settings of the master and worker daemons (``spark.authenticate``);
        ``network``: a ``tests.network.EmulatedNetwork`` whose hosts run the workers (the
        master listens on its driver address)."""
        import pyspark

        self.home = Path(pyspark.__file__).parent
        self.workdir, self.workers, self.cores, self.memory = Path(workdir), workers, cores, memory
        self.procs: list[subprocess.Popen] = []
        self.conf = dict(conf or {})
        self.port, self.ui = free_port(), free_port()
        self.network = network
        self.host = network.driver if network is not None else "127.0.0.1"

    def _start(self, name: str, *args: str, host: int | None = None) -> None:
        """Start a daemon, on emulated host ``host`` when there is a network."""
        ip = self.host if host is None else self.network.address(host)
        env = dict(os.environ, SPARK_HOME=str(self.home), SPARK_LOCAL_IP=ip,
                   PYSPARK_PYTHON=sys.executable, SPARK_NO_DAEMONIZE="1")
        if self.conf:
            env["SPARK_DAEMON_JAVA_OPTS"] = " ".join(f"-D{k}={v}" for k, v in self.conf.items())
        log = open(self.workdir / f"{name}.log", "wb")
        argv = [str(self.home / "bin" / "spark-class"), *args]
        if host is not None:
            argv = self.network.command(host, argv)
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env))

    def alive_workers(self) -> int:
        """Workers the master counts alive; 0 while its web UI is not up yet (or still serves
        its HTML page at ``/json/``: the JSON handler is attached after the root page)."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.ui}/json/", timeout=2) as r:
                return int(json.load(r).get("aliveworkers", 0))
        except (OSError, ValueError):
            return 0

    def __enter__(self) -> str:
        url = f"spark://{self.host}:{self.port}"
        self._start("master", "org.apache.spark.deploy.master.Master", "--host", self.host,
                    "--port", str(self.port), "--webui-port", str(self.ui))
        for i in range(self.workers):
            work = self.workdir / f"worker{i}"
            work.mkdir(exist_ok=True)
            on = i if self.network is not None else None
            self._start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", url,
                        "--host", self.host if on is None else self.network.address(i),
                        "--cores", str(self.cores), "--memory", self.memory,
                        "--webui-port", str(free_port()), "--work-dir", str(work), host=on)
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
