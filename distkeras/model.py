"""The fitted result of a trainer: a Spark ML Model around a plain Keras 3 model.

``transform(df)`` predicts inside the executors: Arrow batches → numpy → Keras → new columns,
as pyspark.ml classifiers write them. The model travels as its JSON config plus weights (a
Spark broadcast), is rebuilt once per Python worker and cached there. What the columns hold
follows the model's output and loss (``output``, decided when the model was trained):

- a classifier (a cross-entropy or hinge loss over classes, or binary cross-entropy with one
  output): ``prediction_col`` the class index as a double, ``probability_col`` the class
  probabilities and ``raw_prediction_col`` the raw output (logits with a ``from_logits`` loss,
  else the probabilities), both Spark ML vectors; a one-unit sigmoid output gives ``[1 − p, p]``.
  ``MulticlassClassificationEvaluator`` and ``BinaryClassificationEvaluator`` read them as they
  are;
- a regression with one output: ``prediction_col`` a double;
- anything else (several outputs, multi-label): ``prediction_col`` an ``array<float>``.

Set a column Param to ``""`` to leave that column out.

Example::

    fitted = trainer.fit(train_df)
    scored = fitted.transform(test_df)            # rawPrediction, probability, prediction
    MulticlassClassificationEvaluator(labelCol="label").evaluate(scored)
    fitted.save("hlf_model"); again = distkeras.load_model("hlf_model")
"""
from __future__ import annotations

import logging
import uuid

import numpy as np
import pyarrow as pa
import pyspark
from pyspark.ml import Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import MLReadable, MLWritable

from distkeras.executor.feed import FeedSpec, loss_name, model_inputs
from distkeras.params import add_accessors

log = logging.getLogger(__name__)
_WORKER_CACHE: dict[str, list] = {}   # executor side: run id → rebuilt Keras models
_ARROW_VECTORS = int(pyspark.__version__.split(".")[0]) >= 4    # VectorUDT through Arrow
CLASSIFICATION_LOSSES = frozenset({
    "categoricalcrossentropy", "sparsecategoricalcrossentropy", "categoricalfocalcrossentropy",
    "sparsecategoricalfocalcrossentropy", "categoricalhinge", "kldivergence"})
BINARY_LOSSES = frozenset({"binarycrossentropy", "binaryfocalcrossentropy", "hinge",
                           "squaredhinge"})


def describe_output(model, loss) -> dict:
    """What the model's output is, from its output shape and its training loss:
    ``{"kind": "classifier" | "regressor" | "array", "from_logits": bool, "width": k}``."""
    outputs = getattr(model, "outputs", None) or []
    width = int(np.prod(outputs[0].shape[1:])) if len(outputs) == 1 else None
    name = loss_name(loss) if loss is not None else ""
    config = loss.get("config") if isinstance(loss, dict) else None
    from_logits = bool(config.get("from_logits") if isinstance(config, dict)
                       else getattr(loss, "from_logits", False))
    if width is None:
        kind = "array"
    elif name in CLASSIFICATION_LOSSES and width > 1 or name in BINARY_LOSSES and width == 1:
        kind = "classifier"
    else:
        kind = "regressor" if width == 1 else "array"
    return {"kind": kind, "from_logits": from_logits, "width": width}


class KerasModel(Model, MLReadable, MLWritable):
    """A trained Keras model (or ensemble) usable as a Spark ML Model.

    Attributes: ``keras_model`` (the model, θ̃ for parameter-server trainers), ``members`` (the
    models of an ensemble; predictions are their mean), ``history`` (Keras-style dict per epoch,
    with ``ps_stats``), ``feed`` (how columns map to inputs), ``output`` (see the module
    docstring). Params: ``prediction_col``, ``probability_col``, ``raw_prediction_col``,
    ``batch_size`` (rows per ``predict`` call in the executors).
    """

    prediction_col = Param(Params._dummy(), "prediction_col", "output column: the class index "
                           "(double) for classifiers, the value for a one-output regression, "
                           "else an array", TypeConverters.toString)
    probability_col = Param(Params._dummy(), "probability_col", "class probabilities (Spark "
                            "ML vector; classifiers; '' for none)", TypeConverters.toString)
    raw_prediction_col = Param(Params._dummy(), "raw_prediction_col", "the raw output (Spark "
                               "ML vector; classifiers; '' for none)", TypeConverters.toString)
    batch_size = Param(Params._dummy(), "batch_size", "rows per predict call in the executors",
                       TypeConverters.toInt)

    def __init__(self, keras_model=None, history=None, feed: FeedSpec | None = None,
                 members=None, output: dict | None = None, **params):
        super().__init__()
        self.keras_model = keras_model
        self.members = list(members or [])
        self.history = history if history is not None else {}
        self.feed = feed
        self.output = output or {"kind": "array", "from_logits": False, "width": None}
        self._setDefault(prediction_col="prediction", probability_col="probability",
                         raw_prediction_col="rawPrediction", batch_size=1024)
        self._set(**params)

    def _models(self) -> list:
        return self.members or [self.keras_model]

    def predict(self, xs: list[np.ndarray]) -> np.ndarray:
        """Predictions for numpy inputs (mean over ensemble members)."""
        return _predict(self._models(), xs, self.getBatchSize())

    def output_columns(self) -> list[tuple[str, str]]:
        """``(column, role)`` of what ``transform`` adds, in order (role: raw, probability,
        prediction)."""
        if self.output["kind"] == "classifier":
            wanted = [(self.getRawPredictionCol(), "raw"),
                      (self.getProbabilityCol(), "probability")]
        else:
            wanted = []
        return [(c, r) for c, r in wanted + [(self.getPredictionCol(), "prediction")] if c]

    def _transform(self, dataset):
        from pyspark.ml.functions import array_to_vector, vector_to_array
        from pyspark.ml.linalg import VectorUDT
        from pyspark.sql import functions as F
        from pyspark.sql.types import (ArrayType, DoubleType, FloatType, StructField,
                                       StructType)

        if self.feed is None:
            raise ValueError("this model has no feed description; it was not made by a trainer")
        feed = FeedSpec(inputs=FeedSpec.from_dict(self.feed.to_dict()).inputs)  # a copy
        types = {f.name: type(f.dataType).__name__ for f in dataset.schema.fields}
        missing = [c for c in feed.feature_columns if c not in types]
        if missing:
            raise ValueError(f"columns {missing} not found; the DataFrame has {sorted(types)}")
        outputs = self.output_columns()
        clash = [c for c, _ in outputs if c in types]
        if clash:
            raise ValueError(f"output column(s) {clash} already exist in the DataFrame: drop "
                             "them or set prediction_col / probability_col / raw_prediction_col")
        # Spark ML vectors reach Arrow as structs: feed array copies, drop them afterwards
        temp = {c: f"__distkeras_{i}" for i, c in enumerate(feed.feature_columns)
                if types[c] == "VectorUDT"}
        if temp:
            dataset = dataset.select("*", *[vector_to_array(F.col(c), "float32").alias(t)
                                            for c, t in temp.items()])
            for spec in feed.inputs:
                spec.columns = [temp.get(c, c) for c in spec.columns]
        sc = dataset.sparkSession.sparkContext
        payload = sc.broadcast({"json": [m.to_json() for m in self._models()],
                                "weights": [m.get_weights() for m in self._models()]})
        run_id, batch_size, output = uuid.uuid4().hex, self.getBatchSize(), dict(self.output)
        feed_dict = feed.to_dict()
        kind = output["kind"]
        # pyspark 4 takes Spark ML vectors from Arrow as their struct; 3.5 gets arrays, made
        # vectors by the JVM afterwards
        native = _ARROW_VECTORS
        vectors = {r: (c if native else f"__distkeras_{r}") for c, r in outputs
                   if r != "prediction"}
        prediction = self.getPredictionCol() or "__distkeras_prediction"

        def predict_batches(batches):
            from distkeras.executor.replica import build_model, setup_tensorflow

            spec = FeedSpec.from_dict(feed_dict)
            models = _WORKER_CACHE.get(run_id)
            if models is None:
                setup_tensorflow(1)
                _WORKER_CACHE.clear()
                value = payload.value
                models = [build_model(j, None, None, None, weights=w)
                          for j, w in zip(value["json"], value["weights"])]
                _WORKER_CACHE[run_id] = models
            for batch in batches:
                table = pa.Table.from_batches([batch])
                out = _predict(models, spec.features(table), batch_size)
                columns = _output_arrays(out.reshape(len(out), -1), output, list(vectors),
                                         native)
                yield pa.RecordBatch.from_arrays(
                    list(batch.columns) + columns,
                    names=list(batch.schema.names) + list(vectors.values()) + [prediction])

        extra = [StructField(name, VectorUDT() if native else ArrayType(DoubleType()))
                 for name in vectors.values()]
        extra.append(StructField(prediction, DoubleType() if kind in ("classifier", "regressor")
                                 else ArrayType(FloatType())))
        scored = dataset.mapInArrow(predict_batches, StructType(dataset.schema.fields + extra))
        if native:
            return scored.drop(*temp.values()) if temp else scored
        keep = [F.col(f"`{f.name}`") for f in dataset.schema.fields if f.name not in temp.values()]
        final = [array_to_vector(F.col(vectors[r])).alias(c) if r != "prediction"
                 else F.col(prediction) for c, r in outputs]
        return scored.select(*keep, *final)

    # -- persistence ------------------------------------------------------------------------------
    def write(self):
        from distkeras.persistence import KerasModelWriter

        return KerasModelWriter(self)

    @classmethod
    def read(cls):
        from distkeras.persistence import KerasModelReader

        return KerasModelReader(cls)

    def save(self, path: str, overwrite: bool = False) -> None:
        """Write the model(s), Params, feed and history under ``path`` (a local path or any
        Hadoop URI); ``overwrite`` replaces what is there (else an existing model there is an
        error, as for every pyspark.ml stage)."""
        from distkeras.persistence import read_metadata

        writer = self.write()
        if overwrite:
            _remove(path)
        elif read_metadata(path) is not None:
            raise FileExistsError(f"{path} already holds a saved stage: pass overwrite=True or "
                                  "choose another path")
        writer.save(path)

    def copy(self, extra=None) -> "KerasModel":
        that = super().copy(extra)
        that.members = list(self.members)
        that.history = self.history
        return that


for _name in ("prediction_col", "probability_col", "raw_prediction_col", "batch_size"):
    add_accessors(KerasModel, _name)      # getPredictionCol(), setProbabilityCol(""), ...


def _remove(path: str) -> None:
    from distkeras.persistence import _fs

    fs = _fs(path)
    fs.delete(fs.join(""))


def load_model(path: str) -> KerasModel:
    """Load a :class:`KerasModel` written by ``KerasModel.save`` (or by a Pipeline that held
    it); ``path`` is a local path or any Hadoop URI."""
    return KerasModel.load(path)


def _output_arrays(out: np.ndarray, output: dict, vectors: list[str],
                   native: bool = True) -> list[pa.Array]:
    """Arrow columns for one batch of model outputs: the vectors asked for (raw,
    probability; Spark ML vector structs when ``native``, else arrays), then the prediction."""
    kind, columns = output["kind"], []
    if kind == "classifier":
        raw = out.astype(np.float64)
        if output.get("from_logits"):
            if raw.shape[1] == 1:
                prob = 1.0 / (1.0 + np.exp(-raw))
            else:
                shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
                prob = shifted / shifted.sum(axis=1, keepdims=True)
        else:
            prob = raw
        if raw.shape[1] == 1:       # one sigmoid unit: P(class 1)
            raw = np.hstack([-raw, raw]) if output.get("from_logits") else np.hstack([1 - raw, raw])
            prob = np.hstack([1 - prob, prob])
        as_column = _vector_array if native else _list_array
        for role in vectors:
            columns.append(as_column(raw if role == "raw" else prob))
        columns.append(pa.array(prob.argmax(axis=1).astype(np.float64)))
    elif kind == "regressor":
        columns.append(pa.array(out[:, 0].astype(np.float64)))
    else:
        columns.append(_list_array(out.astype(np.float32)))
    return columns


def _vector_array(values: np.ndarray) -> pa.Array:
    """Dense Spark ML vectors, one per row, in VectorUDT's struct layout (type 1: dense)."""
    n, width = values.shape
    offsets = pa.array(np.arange(0, values.size + 1, width, dtype=np.int32))
    return pa.StructArray.from_arrays(
        [pa.array(np.ones(n, np.int8)), pa.nulls(n, pa.int32()),
         pa.nulls(n, pa.list_(pa.int32())),
         pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), pa.float64()))],
        names=["type", "size", "indices", "values"])


def _list_array(values: np.ndarray) -> pa.Array:
    width = values.shape[1]
    offsets = pa.array(np.arange(0, values.size + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel()))


def _predict(models: list, xs: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Outputs for ``xs`` (the mean over ensemble members), ``batch_size`` rows per call.

    ``predict_on_batch`` per chunk, not ``Model.predict``: the latter builds a data pipeline on
    every call, ~25× slower on an Arrow batch of a small model."""
    n = len(xs[0])
    outs = []
    for model in models:
        parts = [np.asarray(model.predict_on_batch(model_inputs([x[i:i + batch_size]
                                                                 for x in xs])))
                 for i in range(0, n, batch_size)]
        shape = (0,) + tuple(int(d) for d in model.outputs[0].shape[1:])
        outs.append(np.concatenate(parts) if parts else np.zeros(shape, np.float32))
    return outs[0] if len(outs) == 1 else np.mean(outs, axis=0)
