"""A real Spark Connect server for the tests of this directory, started once per test session
with pyspark's own ``sbin/start-connect-server.sh`` (`distkeras.connect_server`; ``local[3]``:
two workers and the services' task of ``services="task"``), and a client session of it.

These tests run in a pytest process of their own (``pytest tests/connect``; ``.ci/run`` does):
a Connect client turns pyspark into Connect mode for its whole process, which the classic
session of the other tests cannot share.
"""
from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def connect_url(tmp_path_factory):
    """``sc://127.0.0.1:<port>`` of a Spark Connect server on ``local[3]``, stopped at the end."""
    from distkeras.connect_server import LocalConnectServer

    with LocalConnectServer("local[3]", conf={"spark.driver.host": "127.0.0.1"},
                            log_dir=str(tmp_path_factory.mktemp("connect-server"))) as url:
        yield url


@pytest.fixture(scope="session")
def spark(connect_url):
    """A Spark Connect client session (what ``SparkSession.builder.remote(url)`` gives)."""
    from distkeras.spark import session

    s = session(connect_url)
    yield s
    s.stop()
