"""Preprocessing fitted on the training split, applied to every split, saved with the model.

Built from pyspark.ml pieces: a `Pipeline` of ``StandardScaler`` (or ``MinMaxScaler``) on the
HLF, ``OneHotEncoder`` for the labels, and the two stages Spark lacks: `ArrayToVector` /
`VectorToArray` (array<float> ⇄ ml Vector around the built-in scalers) and `LLFStandardizer`,
the per-feature standardisation of the (801 × 19) LLF over non-padding rows only (19 means and
stds aggregated in Spark), which keeps padding rows exactly zero so ``Masking(0.)`` skips them.
Every stage is ``DefaultParamsWritable``, so the fitted ``PipelineModel`` saves and reloads.

Example::

    prep = preprocessing_pipeline(hlf_scaling="standard").fit(train)
    prep.write().overwrite().save("prep")
    test_ready = PipelineModel.load("prep").transform(test)
"""
from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark import keyword_only
from pyspark.ml import Estimator, Model, Pipeline, Transformer
from pyspark.ml.feature import MinMaxScaler, OneHotEncoder, StandardScaler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)


class ArrayToVector(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable,
                    DefaultParamsWritable):
    """array<float|double> column → ml dense Vector column (for the built-in scalers)."""

    @keyword_only
    def __init__(self, *, inputCol: str | None = None, outputCol: str | None = None) -> None:
        super().__init__()
        self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return dataset.withColumn(self.getOutputCol(), array_to_vector(F.col(self.getInputCol())))


class VectorToArray(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable,
                    DefaultParamsWritable):
    """ml Vector column → array<float> (``dtype``), then drops ``dropCols`` (temporary columns)."""

    dtype = Param(Params._dummy(), "dtype", "float32 or float64", TypeConverters.toString)
    dropCols = Param(Params._dummy(), "dropCols", "columns to drop afterwards",
                     TypeConverters.toListString)

    @keyword_only
    def __init__(self, *, inputCol: str | None = None, outputCol: str | None = None,
                 dtype: str = "float32", dropCols: list[str] | None = None) -> None:
        super().__init__()
        self._setDefault(dtype="float32", dropCols=[])
        self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        out = dataset.withColumn(self.getOutputCol(),
                                 vector_to_array(F.col(self.getInputCol()),
                                                 dtype=self.getOrDefault(self.dtype)))
        drop = [c for c in self.getOrDefault(self.dropCols) if c != self.getOutputCol()]
        return out.drop(*drop) if drop else out


class _LLFParams(HasInputCol, HasOutputCol):
    numFeatures = Param(Params._dummy(), "numFeatures", "features per LLF row (19)",
                        TypeConverters.toInt)


class LLFStandardizer(Estimator, _LLFParams, DefaultParamsReadable, DefaultParamsWritable):
    """Fits 19 means/stds of a flat LLF column over its non-padding (not all-zero) rows.

    The moments are partial sums per Arrow batch, added up by a Spark ``groupBy`` (19 rows reach
    the driver). Example: ``LLFStandardizer(inputCol="llf", outputCol="llf").fit(train)``.
    """

    @keyword_only
    def __init__(self, *, inputCol: str = "llf", outputCol: str = "llf", numFeatures: int = 19) -> None:
        super().__init__()
        self._setDefault(inputCol="llf", outputCol="llf", numFeatures=19)
        self._set(**self._input_kwargs)

    def _fit(self, dataset: DataFrame) -> "LLFStandardizerModel":
        k = self.getOrDefault(self.numFeatures)
        col = self.getInputCol()

        def moments(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                rows = _rows(batch.column(0), k)
                real = rows[np.any(rows != 0, axis=1)].astype(np.float64)
                yield pa.RecordBatch.from_arrays(
                    [pa.array(np.arange(k, dtype=np.int32)),
                     pa.array(np.full(k, len(real), dtype=np.int64)),
                     pa.array(real.sum(axis=0)), pa.array((real * real).sum(axis=0))],
                    names=["feature", "n", "s1", "s2"])

        agg = (dataset.select(col).mapInArrow(moments, "feature int, n long, s1 double, s2 double")
               .groupBy("feature").agg(F.sum("n").alias("n"), F.sum("s1").alias("s1"),
                                       F.sum("s2").alias("s2"))
               .orderBy("feature").toPandas())
        if len(agg) != k or agg["n"].iloc[0] == 0:
            raise ValueError("LLFStandardizer: no non-padding LLF rows to fit on")
        n = agg["n"].to_numpy(np.float64)
        mean = agg["s1"].to_numpy() / n
        var = np.maximum(agg["s2"].to_numpy() / n - mean ** 2, 0.0) * n / np.maximum(n - 1, 1)
        std = np.sqrt(var)
        std = np.where(std > 0, std, 1.0)        # constant features: only shifted
        log.info("LLFStandardizer fitted on %d non-padding rows", int(n[0]))
        model = LLFStandardizerModel(inputCol=col, outputCol=self.getOutputCol(), numFeatures=k,
                                     mean=mean.tolist(), std=std.tolist())
        return self._copyValues(model)


class LLFStandardizerModel(Model, _LLFParams, DefaultParamsReadable, DefaultParamsWritable):
    """(x − mean) / std per feature on non-padding rows; padding rows stay exactly 0.

    ``mean`` and ``std`` are Params, so ``save``/``load`` keep them in the stage metadata.
    """

    mean = Param(Params._dummy(), "mean", "per-feature means", TypeConverters.toListFloat)
    std = Param(Params._dummy(), "std", "per-feature standard deviations", TypeConverters.toListFloat)

    @keyword_only
    def __init__(self, *, inputCol: str = "llf", outputCol: str = "llf", numFeatures: int = 19,
                 mean: list[float] | None = None, std: list[float] | None = None) -> None:
        super().__init__()
        self._setDefault(inputCol="llf", outputCol="llf", numFeatures=19)
        self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        mean = np.asarray(self.getOrDefault(self.mean), dtype=np.float32)
        std = np.asarray(self.getOrDefault(self.std), dtype=np.float32)
        k = self.getOrDefault(self.numFeatures)
        return dataset.withColumn(self.getOutputCol(),
                                  _standardize_udf(mean, std, k)(F.col(self.getInputCol())))


def _rows(column: pa.Array, k: int) -> np.ndarray:
    """Flat list<float> column → (total rows, k) float32 view of its values."""
    if isinstance(column, pa.ChunkedArray):
        column = pa.concat_arrays(column.chunks)
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(-1, k)


def standardize_llf(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardise (..., k) rows that are not all zero; all-zero (padding) rows stay zero."""
    real = np.any(x != 0, axis=-1, keepdims=True)
    return np.where(real, (x - mean) / std, 0.0).astype(np.float32)


def _standardize_udf(mean: np.ndarray, std: np.ndarray, k: int):
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<float>")
    def standardize(col: pd.Series) -> pd.Series:
        lengths = col.map(len).to_numpy()
        flat = np.concatenate(col.to_numpy()).astype(np.float32, copy=False) if len(col) else \
            np.zeros(0, np.float32)
        out = standardize_llf(flat.reshape(-1, k), mean, std).ravel()
        return pd.Series(np.split(out, np.cumsum(lengths)[:-1]))

    return standardize


def preprocessing_pipeline(hlf_col: str = "hlf", llf_col: str | None = "llf",
                           label_col: str | None = "label", hlf_scaling: str = "standard",
                           one_hot_col: str = "label_onehot", num_llf_features: int = 19) -> Pipeline:
    """A `Pipeline` (unfitted) scaling HLF in place, standardising LLF in place, one-hot labels.

    ``hlf_scaling``: ``"standard"`` (StandardScaler, zero mean / unit variance), ``"minmax"``
    (MinMaxScaler to [0, 1]) or ``"none"``; ``llf_col=None`` for HLF-only data,
    ``label_col=None`` to skip the one-hot column (``one_hot_col``, array<float>).
    """
    stages: list[Any] = []
    if hlf_scaling != "none":
        vec, scaled = f"__{hlf_col}_vec", f"__{hlf_col}_scaled"
        scaler = {"standard": lambda: StandardScaler(inputCol=vec, outputCol=scaled,
                                                     withMean=True, withStd=True),
                  "minmax": lambda: MinMaxScaler(inputCol=vec, outputCol=scaled)}.get(hlf_scaling)
        if scaler is None:
            raise ValueError(f"hlf_scaling must be 'standard', 'minmax' or 'none', got {hlf_scaling!r}")
        stages += [ArrayToVector(inputCol=hlf_col, outputCol=vec), scaler(),
                   VectorToArray(inputCol=scaled, outputCol=hlf_col, dropCols=[vec, scaled])]
    if llf_col:
        stages.append(LLFStandardizer(inputCol=llf_col, outputCol=llf_col,
                                      numFeatures=num_llf_features))
    if label_col:
        vec = f"__{label_col}_onehot_vec"
        stages += [OneHotEncoder(inputCols=[label_col], outputCols=[vec], dropLast=False),
                   VectorToArray(inputCol=vec, outputCol=one_hot_col, dropCols=[vec])]
    return Pipeline(stages=stages)
