"""Shared pieces of the pipeline jobs (``jobs/features.py``, ``train.py``, ``evaluate.py``,
``pipeline.py``): the training options, ``KEY=VALUE`` parsing, logging and the Spark session.

Example::

    ap = argparse.ArgumentParser(); add_training_args(ap)
    args = ap.parse_args(["--trainer", "DOWNPOUR", "--param", "alpha=0.5"])
    spark = start_session(args.master, "my-job", num_workers=args.num_workers)
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Sequence

from distkeras.deprecation import renamed_keywords

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def value(text: str) -> Any:
    """``"3"`` → 3, ``"0.5"`` → 0.5, ``"true"``/``"false"`` → bool, else the string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_params(items: Sequence[str] | None) -> dict[str, Any]:
    """``["rho=5", "alpha=0.1"]`` → ``{"rho": 5, "alpha": 0.1}``."""
    out = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value(text.strip())
    return out


def add_training_args(ap: argparse.ArgumentParser, trainer_default: str = "ADAG") -> None:
    """The model/trainer/hyperparameter options shared by ``train.py`` and ``pipeline.py``."""
    from distkeras.pipeline.training import KERAS, MODELS, trainer_names

    ap.add_argument("--model", default="hlf", choices=sorted(MODELS),
                    help="topology classifier: hlf (Dense 50-20-10 on the 14 HLF), "
                    "particle_sequence (GRU on the 801x19 LLF) or inclusive (both) "
                    "(default: %(default)s)")
    ap.add_argument("--trainer", default=trainer_default, metavar="NAME",
                    help=f"distkeras trainer ({', '.join(trainer_names())}) or '{KERAS}' for "
                    "plain model.fit in the driver process (default: %(default)s)")
    ap.add_argument("--num-workers", "--workers", dest="num_workers", type=int, default=2,
                    help="Spark workers = model replicas = partitions (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=32,
                    help="mini-batch size per worker (default: %(default)s)")
    ap.add_argument("--learning-rate", type=float, default=0.003,
                    help="worker optimizer learning rate (default: %(default)s)")
    ap.add_argument("--worker-optimizer", "--optimizer", dest="worker_optimizer", default=None,
                    help="worker optimizer name (default: the trainer's, adam for most)")
    ap.add_argument("--communication-window", type=int, default=None, metavar="LAMBDA",
                    help="local steps between parameter-server exchanges (default: the "
                    "algorithm's, e.g. 12 for ADAG/AGN, 5 for DOWNPOUR)")
    ap.add_argument("--mlflow", nargs="?", const=True, default=False, metavar="EXPERIMENT",
                    help="log each distkeras fit to MLflow (MLFLOW_TRACKING_URI), optionally "
                    "into EXPERIMENT")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="extra update-rule parameter of the trainer (rho=5, alpha=0.5, "
                    "momentum=0.9, ...); repeatable")


def add_spark_args(ap: argparse.ArgumentParser) -> None:
    """``--master`` (or ``--remote``) and ``--log-level``."""
    add_master_args(ap, "local[N] with N = max(2, workers)")
    ap.add_argument("--log-level", default="INFO", help="logging level (default: %(default)s)")
    ap.add_argument("--environment", default=None, metavar="ENV.tar.gz",
                    help="packed Python environment (venv-pack/conda-pack) the executors run "
                    "from, for clusters whose machines lack distkeras (see README 'Deploying')")


def add_master_args(ap: argparse.ArgumentParser, fallback: str) -> None:
    """``--master URL`` and ``--remote sc://host:port`` (the same option: where Spark runs)."""
    ap.add_argument("--master", default=None,
                    help=f"Spark master URL (default: SPARK_REMOTE, else what spark-submit set, "
                    f"else {fallback})")
    ap.add_argument("--remote", dest="master", metavar="sc://HOST:PORT",
                    help="a Spark Connect server to run on instead of a master (see README "
                    "'Spark Connect')")


def setup_logging(level: str = "INFO") -> None:
    """Timestamped logging of every step; quiet py4j."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@renamed_keywords(workers="num_workers")
def start_session(master: str | None, app_name: str, num_workers: int = 2,
                  environment: str | None = None):
    """`distkeras.spark.session` on ``master`` (or spark-submit's, or
    ``local[max(2, num_workers)]``) with the pipeline's `SESSION_CONF` (and the executors'
    packed ``environment``)."""
    from distkeras.pipeline import SESSION_CONF, default_master
    from distkeras.spark import session

    url = default_master(master, f"local[{max(2, num_workers)}]")
    logging.getLogger(__name__).info("Spark master %s", url)
    return session(url, app_name=app_name, conf=SESSION_CONF, environment=environment)
