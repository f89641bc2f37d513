"""ROOT TTrees as Spark DataFrames: ``read_root`` (pyspark 3.5 and 4.x) and, on pyspark >= 4.0,
the ``"root"`` Python data source (``spark.read.format("root")``). Both run the same planner
(:mod:`distkeras.io.root_plan`, driver) and chunk reader (:mod:`distkeras.io.root_types`,
executors, uproot).

Reading from EOS: install ``fsspec-xrootd`` (and the XRootD client) on driver and executors and
pass ``root://eosuser.cern.ch//eos/user/j/jdoe/sample/*.root``; globs are expanded through
fsspec, authentication is your Kerberos/X.509 token. (Not testable in this repository's
environment: no XRootD server is reachable here.)
"""
from __future__ import annotations

import json
import logging
from typing import Mapping, Sequence

from distkeras.deprecation import renamed_keywords
from distkeras.io.errors import RootReadError
from distkeras.io.root_dataframe import plan_to_dataframe
from distkeras.io.root_plan import PathsLike, ReadReport, RootPlan, plan_root
from distkeras.io.root_types import Chunk, read_chunks
from distkeras.spark_api import spark_api

log = logging.getLogger(__name__)

__all__ = ["read_root", "plan_root", "register_root_source", "ReadReport", "RootReadError"]


@renamed_keywords(label_column="label_col", source_column="source_col", entry_column="entry_col")
def read_root(spark, paths: PathsLike | None, tree: str, branches: Sequence[str] | str | None = None,
              *, labels: Mapping[str, int] | None = None, label_col: str = "label",
              source_col: str | None = None, entry_col: str | None = None,
              partition_bytes: int | None = None, partition_entries: int | None = None,
              on_bad_file: str = "raise",
              open_options: Mapping | None = None, report: ReadReport | None = None):
    """Read a TTree from ROOT files into a Spark DataFrame; uproot reads the baskets in executors.

    - ``paths``: a path, glob (``**`` recursive), directory (its ``*.root`` files), ``file://``
      URL, any URL uproot/fsspec opens (``root://`` for EOS with fsspec-xrootd), or a list of
      these. ``None`` means the keys of ``labels``.
    - ``branches``: names and ``fnmatch`` wildcards (``"EFlowTrack.*"``); ``None`` = every
      branch with a Spark type. Delphes split branches (``Jet.PT``, counter ``Jet_size``) and
      uproot-written jagged branches (``Jet_PT``, counter ``nJet``) both work.
    - **Column names**: the branch name with every character outside ``[A-Za-z0-9_]`` replaced by
      ``_`` (``EFlowTrack.PT`` -> ``EFlowTrack_PT``, ``Jet_size`` -> ``Jet_size``,
      ``MissingET.MET`` -> ``MissingET_MET``); two branches mapping to one column is an error.
      Types keep the branch's width (``Float_t[]`` -> ``array<float>``, ``Int_t`` -> ``int``;
      unsigned types widen: ``UInt_t`` -> ``bigint``).
    - ``labels``: ``{"qcd/*.root": 0, "ttbar/*.root": 1}`` adds an ``int`` column
      ``label_col`` per input file; ``source_col="file"`` adds the file path and
      ``entry_col="entry"`` the entry number in that file (``bigint``).
    - Partitions: entry ranges cut at cluster boundaries (``common_entry_offsets``), about
      ``partition_bytes`` uncompressed (default: Spark's rule, min(128 MiB, max(4 MiB,
      total / defaultParallelism))) or ``partition_entries`` entries each.
    - The schema comes from the first file; every file is opened once on the driver and checked
      against it. Problems raise :class:`~distkeras.io.errors.RootReadError` subclasses naming
      the file and the fix; ``on_bad_file="skip"`` drops bad files (and entry ranges that fail
      in executors), logs each, and records them in ``report`` (a :class:`ReadReport` you pass
      in; executor-side skips appear after an action).

    Example::

        events = read_root(spark, None, "Delphes", ["Jet.*", "MissingET.*"],
                           labels={"qcd/*.root": 0, "ttbar/*.root": 1, "wjets/*.root": 2})
        events.select("Jet_PT", "MissingET_MET", "label").show()
    """
    plan = plan_root(paths, tree, branches, labels=labels, label_col=label_col,
                     source_col=source_col, entry_col=entry_col,
                     partition_bytes=partition_bytes,
                     partition_entries=partition_entries,
                     parallelism=spark_api(spark).default_parallelism, on_bad_file=on_bad_file,
                     open_options=open_options)
    if report is not None:
        report.__dict__.update(plan.report.__dict__)
        plan.report = report
    return plan_to_dataframe(spark, plan)


# ----------------------------------------------------------------------------- data source
try:  # pyspark >= 4.0
    from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
except ImportError:  # pyspark 3.5: read_root only
    DataSource = None


def _options_to_kwargs(options: Mapping[str, str]) -> dict:
    opts = {k.lower(): v for k, v in options.items()}
    if "paths" in opts:
        paths = json.loads(opts["paths"])
    elif "path" in opts:
        paths = opts["path"]
    else:
        paths = None
    if "tree" not in opts:
        raise RootReadError(None, "the root data source needs a tree name", 'add .option("tree", "Delphes")')
    branches = opts.get("branches")
    if branches is not None:
        branches = json.loads(branches) if branches.lstrip().startswith("[") else \
            [b.strip() for b in branches.split(",") if b.strip()]

    def num(key):
        return int(opts[key]) if key in opts else None

    return dict(paths=paths, tree=opts["tree"], branches=branches,
                labels=json.loads(opts["labels"]) if "labels" in opts else None,
                label_col=opts.get("labelcol", opts.get("labelcolumn", "label")),
                source_col=opts.get("sourcecol", opts.get("sourcecolumn")),
                entry_col=opts.get("entrycol", opts.get("entrycolumn")),
                partition_bytes=num("partitionbytes"), partition_entries=num("partitionentries"),
                parallelism=num("minpartitions") or 1, on_bad_file=opts.get("onbadfile", "raise"))


if DataSource is not None:

    class _RootPartition(InputPartition):
        def __init__(self, chunks):
            super().__init__(None)
            self.chunks = chunks

    class _RootReader(DataSourceReader):
        def __init__(self, plan: RootPlan):
            self.spec = plan.spec
            self.groups = [[(c.path, c.start, c.stop, c.label) for c in p] for p in plan.partitions]

        def partitions(self):
            return [_RootPartition(g) for g in self.groups] or [_RootPartition([])]

        def read(self, partition):
            return read_chunks([Chunk(*c) for c in partition.chunks], self.spec)

    class RootDataSource(DataSource):
        """``spark.read.format("root")``: options ``tree`` (required), ``branches`` (comma list
        or JSON list), ``labels`` (JSON ``{"glob": label}``), ``labelColumn``, ``sourceColumn``,
        ``entryColumn``, ``partitionBytes``, ``partitionEntries``, ``minPartitions``, ``onBadFile``.

        Example::

            register_root_source(spark)
            df = (spark.read.format("root").option("tree", "Delphes")
                  .option("branches", "Jet.*,MissingET.MET").load("data/*.root"))
        """

        _plan: RootPlan | None = None

        @classmethod
        def name(cls) -> str:
            return "root"

        def _get_plan(self) -> RootPlan:
            if self._plan is None:
                self._plan = plan_root(**_options_to_kwargs(self.options))
            return self._plan

        def schema(self):
            return self._get_plan().spark_schema()

        def reader(self, schema):
            return _RootReader(self._get_plan())
else:
    RootDataSource = None


def register_root_source(spark) -> bool:
    """Register ``spark.read.format("root")`` (pyspark >= 4.0); returns False on pyspark 3.5,
    where only :func:`read_root` is available.

    Example::

        if register_root_source(spark):
            df = spark.read.format("root").option("tree", "Delphes").load("data/")
    """
    if RootDataSource is None:
        log.info("pyspark %s has no Python data sources; use distkeras.read_root", _pyspark_version())
        return False
    spark.dataSource.register(RootDataSource)
    return True


def _pyspark_version() -> str:
    import pyspark

    return pyspark.__version__
