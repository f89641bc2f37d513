"""The fitted result of a trainer: a Spark ML Model around a plain Keras 3 model.

``transform(df)`` predicts inside the executors: Arrow batches → numpy → Keras → new columns,
as pyspark.ml classifiers write them. The model travels as its ``.keras`` archive (config,
every variable, assets; custom objects by value), is rebuilt once per Python worker and cached
there. What the columns hold
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
import weakref

import numpy as np
import pyarrow as pa
import pyspark
from pyspark.ml import Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import MLReadable, MLWritable

from distkeras import backends
from distkeras.feed import FeedSpec, loss_name, model_inputs
from distkeras.params import add_accessors
from distkeras.signature import output_list

log = logging.getLogger(__name__)
_WORKER_CACHE: dict[str, list] = {}   # executor side: the models' content → them, read back
_ARROW_VECTORS = int(pyspark.__version__.split(".")[0]) >= 4    # VectorUDT through Arrow
CLASSIFICATION_LOSSES = frozenset({
    "categoricalcrossentropy", "sparsecategoricalcrossentropy", "categoricalfocalcrossentropy",
    "sparsecategoricalfocalcrossentropy", "categoricalhinge", "kldivergence"})
BINARY_LOSSES = frozenset({"binarycrossentropy", "binaryfocalcrossentropy", "hinge",
                           "squaredhinge"})


def describe_output(model, loss) -> dict:
    """What the model's output is, from its output shape and its training loss:
    ``{"kind": "classifier" | "regressor" | "array", "from_logits": bool, "width": k}``; a
    model with several outputs: ``{"kind": "outputs", "outputs": [one such dict per output,
    with its "name"]}``."""
    from distkeras.feed import per_output
    from distkeras.signature import output_specs

    outputs = output_specs(model)
    described = [_describe(shape, each) | {"name": name} for (name, shape), each
                 in zip(outputs, per_output(loss, [n for n, _ in outputs]))]
    if len(described) == 1:
        described[0].pop("name")
        return described[0]
    return {"kind": "outputs", "outputs": described}


def _describe(shape: tuple[int, ...], loss) -> dict:
    width = int(np.prod(shape)) if shape else 1
    name = loss_name(loss) if loss is not None else ""
    config = loss.get("config") if isinstance(loss, dict) else None
    from_logits = bool(config.get("from_logits") if isinstance(config, dict)
                       else getattr(loss, "from_logits", False))
    if name in CLASSIFICATION_LOSSES and width > 1 or name in BINARY_LOSSES and width == 1:
        kind = "classifier"
    else:
        kind = "regressor" if width == 1 else "array"
    return {"kind": kind, "from_logits": from_logits, "width": width}


class KerasModel(Model, MLReadable, MLWritable):
    """A trained Keras model (or ensemble) usable as a Spark ML Model.

    Attributes: ``keras_model`` (the model: θ̃ for parameter-server trainers; for an ensemble
    one Keras model whose outputs are the mean of its members'), ``members`` (the models of an
    ensemble; predictions are their mean), ``history`` (Keras-style dict per epoch,
    with ``ps_stats``), ``feed`` (how columns map to inputs), ``output`` (see the module
    docstring). Params: ``prediction_col``, ``probability_col``, ``raw_prediction_col``,
    ``batch_size`` (rows per ``predict`` call in the executors, or more: :func:`rows_per_call`).
    """

    prediction_col = Param(Params._dummy(), "prediction_col", "output column: the class index "
                           "(double) for classifiers, the value for a one-output regression, "
                           "else an array", TypeConverters.toString)
    probability_col = Param(Params._dummy(), "probability_col", "class probabilities (Spark "
                            "ML vector; classifiers; '' for none)", TypeConverters.toString)
    raw_prediction_col = Param(Params._dummy(), "raw_prediction_col", "the raw output (Spark "
                               "ML vector; classifiers; '' for none)", TypeConverters.toString)
    batch_size = Param(Params._dummy(), "batch_size", "rows per predict call in the executors "
                       "(more where that many rows hold under 64 MB of activations)",
                       TypeConverters.toInt)

    def __init__(self, keras_model=None, history=None, feed: FeedSpec | None = None,
                 members=None, output: dict | None = None,
                 custom_objects: dict | None = None, **params):
        super().__init__()
        self.keras_model = keras_model
        self.members = list(members or [])
        self.history = history if history is not None else {}
        self.feed = feed
        self.output = output or {"kind": "array", "from_logits": False, "width": None}
        self.custom_objects = dict(custom_objects or {})   # sent with the model to executors
        self._setDefault(prediction_col="prediction", probability_col="probability",
                         raw_prediction_col="rawPrediction", batch_size=1024)
        self._set(**params)

    def _models(self) -> list:
        return self.members or [self.keras_model]

    def predict(self, xs: list[np.ndarray]):
        """Predictions for numpy inputs (mean over ensemble members): an array, or a list of
        them for a model with several outputs."""
        outs = _predict(self._models(), xs, self.getBatchSize())
        return outs[0] if len(outs) == 1 else outs

    def _outputs(self) -> list[tuple[str, dict]]:
        """``(column suffix, description)`` of each output: no suffix for a model with one,
        ``_<output name>`` for each of several."""
        if self.output.get("kind") == "outputs":
            return [(f"_{o['name']}", o) for o in self.output["outputs"]]
        return [("", self.output)]

    def output_columns(self) -> list[tuple[str, str, int]]:
        """``(column, role, output)`` of what ``transform`` adds, in order (role: raw,
        probability, prediction; output: the model output's index)."""
        columns = []
        for index, (suffix, output) in enumerate(self._outputs()):
            wanted = ([(self.getRawPredictionCol(), "raw"), (self.getProbabilityCol(),
                                                             "probability")]
                      if output["kind"] == "classifier" else [])
            wanted.append((self.getPredictionCol(), "prediction"))
            columns += [(c + suffix, r, index) for c, r in wanted if c]
        return columns

    def _transform(self, dataset):
        from pyspark.sql import functions as F

        if self.feed is None:
            raise ValueError("this model has no feed description; it was not made by a trainer")
        outputs = self.output_columns()
        dataset, feed, temp = self._feedable(dataset, [c for c, _, _ in outputs])
        # pyspark 4 takes Spark ML vectors from Arrow as their struct; 3.5 gets arrays, made
        # vectors by the JVM afterwards
        native = _ARROW_VECTORS
        arrow_names = [c if native or r == "prediction" else f"__distkeras_{r}_{i}"
                       for c, r, i in outputs]
        roles = [(r, i) for _, r, i in outputs]
        described = [o for _, o in self._outputs()]
        predict = _batch_predictor(dataset.sparkSession, self._models(), self.custom_objects,
                                   feed, self.getBatchSize(), described, roles, arrow_names,
                                   native)
        scored = dataset.mapInArrow(predict, _scored_schema(dataset.schema, arrow_names, roles,
                                                            described, native))
        if native:
            return scored.drop(*temp) if temp else scored
        from pyspark.ml.functions import array_to_vector

        keep = [F.col(f"`{f.name}`") for f in dataset.schema.fields if f.name not in temp]
        final = [array_to_vector(F.col(name)).alias(c) if r != "prediction" else F.col(name)
                 for name, (c, r, _) in zip(arrow_names, outputs)]
        return scored.select(*keep, *final)

    def _feedable(self, dataset, outputs: list[str]):
        """``dataset`` checked for the feature columns and the output columns' names, with
        array copies of its Spark ML vector features (Arrow gets vectors as structs); the feed
        reading them, and the names of the copies (dropped afterwards)."""
        from pyspark.ml.functions import vector_to_array
        from pyspark.sql import functions as F

        feed = self.feed.without_targets()      # a copy: the columns are renamed below
        types = {f.name: type(f.dataType).__name__ for f in dataset.schema.fields}
        missing = [c for c in feed.feature_columns if c not in types]
        if missing:
            raise ValueError(f"columns {missing} not found; the DataFrame has {sorted(types)}")
        clash = [c for c in outputs if c in types]
        if clash:
            raise ValueError(f"output column(s) {clash} already exist in the DataFrame: drop "
                             "them or set prediction_col / probability_col / raw_prediction_col")
        temp = {c: f"__distkeras_{i}" for i, c in enumerate(feed.feature_columns)
                if types[c] == "VectorUDT"}
        if temp:
            dataset = dataset.select("*", *[vector_to_array(F.col(c), "float32").alias(t)
                                            for c, t in temp.items()])
            for spec in feed.inputs:
                spec.columns = [temp.get(c, c) for c in spec.columns]
        return dataset, feed, list(temp.values())

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


def load_model(path: str, custom_objects: dict | None = None) -> KerasModel:
    """Load a :class:`KerasModel` written by ``KerasModel.save`` (or by a Pipeline that held
    it); ``path`` is a local path or any Hadoop URI. ``custom_objects`` (``{name: class or
    function}``) as Keras' ``load_model`` takes them: the custom layers, losses, ... the model
    was built with, where this process has not registered them.

    Example::

        fitted = distkeras.load_model("hlf_model", custom_objects={"Scaled": Scaled})
    """
    import keras

    with keras.saving.custom_object_scope(custom_objects or {}):
        fitted = KerasModel.load(path)
    fitted.custom_objects = dict(custom_objects or {})
    return fitted


def _batch_predictor(spark, models: list, custom_objects: dict, feed: FeedSpec, batch_size: int,
                     described: list[dict], roles: list[tuple[str, int]], names: list[str],
                     native: bool):
    """The ``mapInArrow`` function that scores Arrow batches in the executors: the models
    travel as a broadcast of their ``.keras`` archives (in the closure on Spark Connect), and
    are read back once per Python worker (``worker_models``)."""
    from distkeras.portable import PortableModel
    from distkeras.spark_api import spark_api

    portable = [PortableModel.of(m, custom_objects, check=False) for m in models]
    payload = spark_api(spark).share([p.archive for p in portable])
    backend = backends.current().name
    key = "/".join([backend] + [p.content() for p in portable])
    objects = [p.custom_objects for p in portable]     # those given and those found
    feed_dict = feed.to_dict()

    def predict_batches(batches):
        spec = FeedSpec.from_dict(feed_dict)
        models = worker_models(key, payload, objects, backend)
        for batch in batches:
            outs = _predict(models, spec.features(pa.Table.from_batches([batch])), batch_size)
            columns = [_output_array(outs[i].reshape(len(outs[i]), -1), described[i], role,
                                     native) for role, i in roles]
            yield pa.RecordBatch.from_arrays(list(batch.columns) + columns,
                                             names=list(batch.schema.names) + names)

    return predict_batches


def worker_models(key: str, payload, custom_objects: list[dict], backend: str) -> list:
    """Executor side: the Keras models whose content is ``key``, read back (with each one's
    ``custom_objects``) from the archives that ``payload.value`` holds, once per Python
    worker, and kept there, with the predict function Keras traces for them, for every later
    task and transform of the same models. (A module function: a closure that named the cache
    would carry a copy of it, empty, to every task: every partition of a transform read its
    models back and traced them again.)

    Example::

        models = worker_models(key, broadcast, [{}], "tensorflow")
    """
    models = _WORKER_CACHE.get(key)
    if models is None:
        from distkeras.portable import PortableModel

        backends.prepare(backend, 1, strict=False)   # any backend predicts the same
        _WORKER_CACHE.clear()
        models = _WORKER_CACHE[key] = [PortableModel(archive, objects).build()
                                       for archive, objects in zip(payload.value, custom_objects)]
    return models


def _scored_schema(schema, names: list[str], roles: list[tuple[str, int]], described: list[dict],
                   native: bool):
    """``schema`` and the output columns: Spark ML vectors (or arrays before pyspark 4) for
    raw and probability, a double (classifier, regressor) or an array for the prediction."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import ArrayType, DoubleType, FloatType, StructField, StructType

    extra = []
    for name, (role, i) in zip(names, roles):
        if role != "prediction":
            extra.append(StructField(name, VectorUDT() if native else ArrayType(DoubleType())))
        else:
            extra.append(StructField(name, DoubleType() if described[i]["kind"] in (
                "classifier", "regressor") else ArrayType(FloatType())))
    return StructType(schema.fields + extra)


def _output_array(out: np.ndarray, output: dict, role: str, native: bool = True) -> pa.Array:
    """The Arrow column of one role (raw, probability, prediction) for one batch of one
    output: Spark ML vector structs when ``native``, else arrays, for the vectors."""
    kind = output["kind"]
    if kind == "regressor":
        return pa.array(out[:, 0].astype(np.float64))
    if kind != "classifier":
        return _list_array(out.astype(np.float32))
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
    if role == "prediction":
        return pa.array(prob.argmax(axis=1).astype(np.float64))
    return (_vector_array if native else _list_array)(raw if role == "raw" else prob)


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


PREDICT_BUDGET = 64 << 20    # bytes of inputs and layer outputs one predict call may hold
_BUDGET_ROWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # model → rows (0: unknown)


def rows_per_call(model, batch_size: int) -> int:
    """Rows per ``predict_on_batch`` call: ``batch_size``, or more where that many rows hold
    less than :data:`PREDICT_BUDGET` of inputs and layer outputs (a model whose layers all say
    their output shape: functional and Sequential ones). A call costs about half a
    millisecond however few its rows: the HLF classifier spent 3/4 of its predict time in
    calls of 1,024 rows, and its ``transform`` ran 1.2x faster with whole Arrow batches.

    Example::

        rows_per_call(hlf_mlp, 1024)       # about 100,000: a 10k-row Arrow batch in one call
    """
    try:
        rows = _BUDGET_ROWS.get(model)
    except TypeError:                      # a model that cannot be weakly referenced
        rows = None
    if rows is None:
        per_row = _floats_per_row(model)
        rows = PREDICT_BUDGET // (4 * per_row) if per_row else 0
        try:
            _BUDGET_ROWS[model] = rows
        except TypeError:
            pass
    return max(rows, batch_size)


def _floats_per_row(model) -> int | None:
    """Floats one row puts in the inputs and every layer's output (None: not known)."""
    total = 0
    try:
        tensors = list(model.inputs) + [layer.output for layer in model._flatten_layers(
            include_self=False, recursive=True)]
        for tensor in tensors:
            for t in output_list(tensor):
                total += int(np.prod([d for d in t.shape[1:]]))
    except (AttributeError, ValueError, TypeError):
        return None         # a subclassed model's layers, a layer called twice, a None dim
    return total or None


def _predict(models: list, xs: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Each output for ``xs`` (the mean over ensemble members), in calls of
    :func:`rows_per_call` rows.

    ``predict_on_batch`` per chunk, not ``Model.predict``: the latter builds a data pipeline on
    every call, ~25× slower on an Arrow batch of a small model."""
    n = len(xs[0])
    per_model = []
    for model in models:
        step = rows_per_call(model, batch_size)
        chunks = [_as_list(model.predict_on_batch(model_inputs([x[i:i + step] for x in xs])))
                  for i in range(0, n, step)]
        if chunks:
            per_model.append([np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))])
        else:
            shapes = [tuple(int(d) for d in t.shape[1:])
                      for t in getattr(model, "outputs", None) or []] or [()]
            per_model.append([np.zeros((0,) + s, np.float32) for s in shapes])
    if len(per_model) == 1:
        return per_model[0]
    return [np.mean([outs[k] for outs in per_model], axis=0) for k in range(len(per_model[0]))]


def _as_list(out) -> list[np.ndarray]:
    return [np.asarray(o) for o in output_list(out)]
