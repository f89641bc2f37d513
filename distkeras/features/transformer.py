"""`TopologyFeatures`: the topology-classifier features as a Spark ML Transformer.

Runs `compute_topology_features` inside the executors through ``mapInArrow``: Arrow batches in,
awkward + numpy per batch (no per-event Python), Arrow batches out with ``hlf`` array<float>
(14), ``llf`` array<float> (801 × 19 flattened row-major; absent with ``hlfOnly``), ``label`` int
and the requested passthrough columns. Events without an isolated lepton are dropped and
counted: ``transformer.counters`` (Spark accumulators, filled while an action computes the
output) and ``transformer.cutflow(events)`` (an exact count as a separate small Spark job).

Example::

    tf = TopologyFeatures(muon="Muon", passthroughCols=["source"])
    feats = tf.transform(events)
    feats.write.parquet("features.parquet")
    tf.selection(events)                      # events in / selected / dropped
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from distkeras.features.topology import TopologyConfig
from distkeras.spark_api import Unavailable, spark_api

log = logging.getLogger(__name__)

# Spark param name -> TopologyConfig field.
_PARAMS = {
    "track": "track", "photon": "photon", "neutralHadron": "neutral", "electron": "electron",
    "muon": "muon", "jet": "jet", "missingET": "met", "maxTracks": "max_tracks",
    "maxPhotons": "max_photons", "maxNeutralHadrons": "max_neutrals",
    "leptonPtMin": "lepton_pt_min", "isolationMax": "iso_max", "isolationDeltaR": "iso_dr",
    "ownTrackDeltaR": "own_track_dr", "trackPtMin": "track_pt_min",
    "photonEtMin": "photon_et_min", "neutralEtMin": "neutral_et_min", "jetPtMin": "jet_pt_min",
    "jetEtaMax": "jet_eta_max", "sortByDeltaR": "sort_by_dr", "hlfOnly": "hlf_only",
}
_CONVERTERS = {str: TypeConverters.toString, int: TypeConverters.toInt,
               float: TypeConverters.toFloat, bool: TypeConverters.toBoolean}


def _list_array(values: np.ndarray, width: int, item: pa.DataType = pa.float32()) -> pa.Array:
    """array<float> column of fixed-width rows with 32-bit offsets (what Spark expects)."""
    flat = np.ascontiguousarray(values).ravel()
    n = flat.size // width
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(flat, item),
                                    type=pa.list_(pa.field("element", item)))


@dataclass
class SelectionCounters:
    """Driver-side view of the executors' event counters (Spark accumulators).

    They add up over every action that computes the transformed DataFrame (a ``count()``
    followed by a ``write`` counts twice); ``reset()`` between actions, or use
    `TopologyFeatures.cutflow` for an exact one-off count.
    """

    seen: Any
    selected: Any

    @property
    def available(self) -> bool:
        """Whether Spark keeps these counts (not on Spark Connect: no accumulators)."""
        return not isinstance(self.seen, Unavailable)

    @property
    def events_in(self) -> int:
        return int(self.seen.value)

    @property
    def events_selected(self) -> int:
        return int(self.selected.value)

    @property
    def events_dropped(self) -> int:
        return self.events_in - self.events_selected

    def reset(self) -> None:
        self.seen.value = 0
        self.selected.value = 0

    def as_dict(self) -> dict[str, int]:
        return {"events_in": self.events_in, "events_selected": self.events_selected,
                "events_dropped": self.events_dropped}

    def log(self) -> dict[str, int]:
        d = self.as_dict()
        log.info("topology selection: %(events_in)d events in, %(events_selected)d selected, "
                 "%(events_dropped)d dropped (no isolated lepton)", d)
        return d


class TopologyFeatures(Transformer, DefaultParamsReadable, DefaultParamsWritable):
    """Lepton selection + LLF (801 × 19) + HLF (14) per event; see the module docstring.

    Every `TopologyConfig` field is a Param (``muon="Muon"``, ``maxTracks=450``,
    ``hlfOnly=True``, ...); ``labelCol`` is carried through as int when present,
    ``passthroughCols`` are copied unchanged, ``batchSize`` bounds the events per Arrow batch
    (an LLF row is 61 kB).
    """

    labelCol = Param(Params._dummy(), "labelCol", "label column (int), carried through if present",
                     TypeConverters.toString)
    passthroughCols = Param(Params._dummy(), "passthroughCols", "input columns copied to the output",
                            TypeConverters.toListString)
    batchSize = Param(Params._dummy(), "batchSize", "events per output Arrow batch",
                      TypeConverters.toInt)

    @keyword_only
    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        defaults = TopologyConfig()
        self._setDefault(labelCol="label", passthroughCols=[], batchSize=1024,
                         **{p: getattr(defaults, f) for p, f in _PARAMS.items()})
        self.counters: SelectionCounters | None = None
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs: Any) -> "TopologyFeatures":
        """Set any params by keyword (the same names as the constructor)."""
        return self._set(**self._input_kwargs)

    def config(self) -> TopologyConfig:
        """The `TopologyConfig` these params describe."""
        return TopologyConfig(**{f: self.getOrDefault(p) for p, f in _PARAMS.items()})

    def output_schema(self, input_schema: T.StructType) -> T.StructType:
        """Schema of `transform`'s result for an input with ``input_schema``."""
        cfg = self.config()
        out = [T.StructField("hlf", T.ArrayType(T.FloatType()))]
        if not cfg.hlf_only:
            out.append(T.StructField("llf", T.ArrayType(T.FloatType())))
        label = self.getOrDefault(self.labelCol)
        if label in input_schema.fieldNames():
            out.append(T.StructField(label, T.IntegerType()))
        for c in self.getOrDefault(self.passthroughCols):
            out.append(input_schema[c])
        return T.StructType(out)

    def _input(self, dataset: DataFrame) -> DataFrame:
        cfg = self.config()
        cols = cfg.required_columns()
        missing = [c for c in cols + self.getOrDefault(self.passthroughCols) if c not in dataset.columns]
        if missing:
            raise ValueError(f"TopologyFeatures: input lacks columns {missing}; "
                             f"set the collection params (e.g. muon='Muon') to match the data")
        label = self.getOrDefault(self.labelCol)
        extra = [F.col(label).cast("int").alias(label)] if label in dataset.columns else []
        extra += [F.col(c) for c in self.getOrDefault(self.passthroughCols) if c != label]
        return dataset.select(*[F.col(c) for c in cols], *extra)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        api = spark_api(dataset.sparkSession)
        what = "TopologyFeatures.counters"
        instead = "count with transformer.cutflow(events)"
        self.counters = SelectionCounters(api.counter(what, instead), api.counter(what, instead))
        data = self._input(dataset)
        schema = self.output_schema(dataset.schema)
        fn = _batch_function(self.config(), schema.fieldNames(), self.getOrDefault(self.labelCol),
                             self.getOrDefault(self.batchSize), self.counters.seen,
                             self.counters.selected)
        log.debug("TopologyFeatures: events without an isolated lepton are dropped; read "
                 "transformer.counters after an action, or transformer.cutflow(events)")
        return data.mapInArrow(fn, schema)

    def selection(self, dataset: DataFrame) -> dict[str, int]:
        """Events in / selected / dropped, after an action on ``transform(dataset)``: the
        counters' values where Spark keeps them, else `cutflow` (one more job; Spark Connect)."""
        if self.counters is not None and self.counters.available:
            return self.counters.log()
        return self.cutflow(dataset)

    def cutflow(self, dataset: DataFrame) -> dict[str, int]:
        """Exact event counts (in / selected / dropped) as one Spark aggregation job (HLF cost)."""
        cfg = TopologyConfig(**{**{f.name: getattr(self.config(), f.name) for f in fields(TopologyConfig)},
                                "hlf_only": True})
        data = self._input(dataset)
        size = self.getOrDefault(self.batchSize)
        columns = cfg.required_columns()

        def count(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            from distkeras.features.arrow import events_from_arrow
            from distkeras.features.topology import compute_topology_features
            for batch in batches:
                for start in range(0, batch.num_rows, size):
                    sub = batch.slice(start, size)
                    _, _, mask = compute_topology_features(events_from_arrow(sub, columns), cfg)
                    yield pa.RecordBatch.from_arrays(
                        [pa.array([sub.num_rows], pa.int64()), pa.array([int(mask.sum())], pa.int64())],
                        names=["n_in", "n_sel"])

        row = (data.mapInArrow(count, "n_in long, n_sel long")
               .agg(F.sum("n_in").alias("n_in"), F.sum("n_sel").alias("n_sel")).first())
        n_in, n_sel = int(row["n_in"] or 0), int(row["n_sel"] or 0)
        out = {"events_in": n_in, "events_selected": n_sel, "events_dropped": n_in - n_sel}
        log.info("topology cutflow: %s", out)
        return out


for _name, _field in _PARAMS.items():  # one Param per TopologyConfig field
    _default = getattr(TopologyConfig(), _field)
    setattr(TopologyFeatures, _name, Param(Params._dummy(), _name, f"TopologyConfig.{_field}",
                                           _CONVERTERS[type(_default)]))


def _batch_function(cfg: TopologyConfig, names: list[str], label: str, size: int, seen, selected):
    """The per-partition function shipped to the executors (closes over config only)."""
    n_rows = cfg.n_particles
    columns = cfg.required_columns()

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from distkeras.features.arrow import events_from_arrow
        from distkeras.features.topology import compute_topology_features

        wlog = logging.getLogger(__name__)
        for batch in batches:
            for start in range(0, batch.num_rows, size):
                sub = batch.slice(start, size)
                llf, hlf, mask = compute_topology_features(events_from_arrow(sub, columns), cfg)
                n_sel = int(mask.sum())
                seen.add(sub.num_rows)
                selected.add(n_sel)
                if n_sel < sub.num_rows:
                    wlog.info("topology: dropped %d of %d events (no isolated lepton)",
                              sub.num_rows - n_sel, sub.num_rows)
                keep = pa.array(mask)
                cols = {"hlf": _list_array(hlf, 14)}
                if llf is not None:
                    cols["llf"] = _list_array(llf, n_rows * 19)
                for name in names:
                    if name not in cols:
                        col = sub.column(name).filter(keep)
                        cols[name] = col.cast(pa.int32()) if name == label else col
                yield pa.RecordBatch.from_arrays([cols[n] for n in names], names=names)

    return run
