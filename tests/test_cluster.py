"""Training on a real standalone Spark cluster: master + 2 workers on 127.0.0.1, executors in
their own JVMs and Python processes, reaching the parameter server on the driver over TCP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_adag_on_a_standalone_cluster(standalone_cluster):
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root), SPARK_LOCAL_IP="127.0.0.1")
    out = subprocess.run([sys.executable, "-m", "tests.cluster_driver", standalone_cluster],
                         cwd=root, env=env, capture_output=True, text=True, timeout=600)
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["executors"] == 2
    assert len(result["executor_pids"]) == 2 and result["driver_pid"] not in result["executor_pids"]
    assert all(c >= 3 for c in result["commits"])
    assert result["accuracy"] > 0.8
    assert result["scored"] == 500
