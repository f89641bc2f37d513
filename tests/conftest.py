"""Shared fixtures: one local SparkSession per test run (TensorFlow costs ~0.6 GB per Python
worker, so workers are reused), and a real standalone cluster on loopback for the tests that
need executors in separate JVMs."""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


CONNECT_TESTS = Path(__file__).resolve().parent / "connect"


def pytest_ignore_collect(collection_path, config):
    """tests/connect runs in a pytest process of its own (``pytest tests/connect``): a Spark
    Connect client turns pyspark into Connect mode for the whole process."""
    path = Path(collection_path).resolve()
    if path != CONNECT_TESTS and CONNECT_TESTS not in path.parents:
        return None
    asked = [Path(str(a).split("::")[0]).resolve() for a in config.args]
    return not any(a == CONNECT_TESTS or CONNECT_TESTS in a.parents for a in asked)


@pytest.fixture(scope="session")
def spark():
    """local[2,2]: two slots, and a failed task is retried once (needed by the fault tests)."""
    from distkeras.spark import session

    s = session("local[2,2]", app_name="distkeras-tests")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """A real standalone Spark master + 2 workers; yields the master URL. The workers run on
    hosts of an emulated network (``tests.network``: namespaces behind 1 Gbit/s links shaped
    with tc) where this machine allows it, else on 127.0.0.1."""
    from tests.cluster import StandaloneCluster
    from tests.network import PLAIN, EmulatedNetwork

    with EmulatedNetwork(hosts=2, rate="1gbit", fallback=PLAIN, max_seconds=3600) as net, \
            StandaloneCluster(tmp_path_factory.mktemp("cluster"), workers=2, network=net) as url:
        print(f"standalone cluster at {url}: {net.describe()}")
        yield url


AUTH_CONF = {"spark.authenticate": "true", "spark.authenticate.secret": "distkeras-test-secret",
             "spark.network.crypto.enabled": "true"}


@pytest.fixture(scope="session")
def authenticated_cluster(tmp_path_factory):
    """A standalone cluster whose daemons require Spark's authentication (and encryption)."""
    from tests.cluster import StandaloneCluster

    with StandaloneCluster(tmp_path_factory.mktemp("auth-cluster"), workers=2,
                           conf=AUTH_CONF) as url:
        yield url


# --- the documented table of bad inputs: each row's test must answer within 30 s -------------
BAD_INPUT_SECONDS = 30.0
BAD_INPUT_PAGE = Path(__file__).resolve().parent.parent / "docs" / "bad-input.md"


def bad_input_tests() -> list[str]:
    """Test ids (``tests/file.py::name``) in the table of ``docs/bad-input.md``, in order."""
    return re.findall(r"\| `(tests/[\w/]+\.py::\w+)` \|",
                      BAD_INPUT_PAGE.read_text(encoding="utf-8"))


_BAD_INPUT = set(bad_input_tests())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    t0 = time.monotonic()
    outcome = yield
    took = time.monotonic() - t0
    if item.nodeid.split("[")[0] in _BAD_INPUT and took > BAD_INPUT_SECONDS \
            and outcome.excinfo is None:
        outcome.force_exception(AssertionError(
            f"{item.nodeid} is a row of docs/bad-input.md and took {took:.0f} s: "
            f"a bad input must be answered within {BAD_INPUT_SECONDS:.0f} s"))
