"""The fitted result of a trainer: a Spark ML Model around a plain Keras 3 model.

``transform(df)`` predicts inside the executors: Arrow batches → numpy → ``model.predict_on_batch``
→ a new ``array<float>`` column; the model travels as its JSON config plus weights (a Spark
broadcast), is rebuilt once per Python worker and cached there.

Example::

    fitted = trainer.fit(train_df)
    scored = fitted.transform(test_df)            # adds fitted.prediction_col
    fitted.save("hlf_model"); again = distkeras.load_model("hlf_model")
"""
from __future__ import annotations

import json
import logging
import os
import uuid

import numpy as np
import pyarrow as pa
from pyspark.ml import Model

from distkeras.executor.feed import FeedSpec, model_inputs

log = logging.getLogger(__name__)
_FORMAT = 1
_WORKER_CACHE: dict[str, list] = {}   # executor side: run id → rebuilt Keras models


class KerasModel(Model):
    """A trained Keras model (or ensemble) usable as a Spark ML Model.

    Attributes: ``keras_model`` (the model, θ̃ for parameter-server trainers), ``members`` (the
    models of an ensemble; predictions are their mean), ``history`` (Keras-style dict per epoch,
    with ``ps_stats``), ``feed`` (how columns map to inputs), ``prediction_col``.
    """

    def __init__(self, keras_model, history=None, feed: FeedSpec | None = None,
                 prediction_col: str = "prediction", members=None, batch_size: int = 1024):
        super().__init__()
        self.keras_model = keras_model
        self.members = list(members or [])
        self.history = history if history is not None else {}
        self.feed = feed
        self.prediction_col = prediction_col
        self.batch_size = batch_size

    def _models(self) -> list:
        return self.members or [self.keras_model]

    def predict(self, xs: list[np.ndarray]) -> np.ndarray:
        """Predictions for numpy inputs (mean over ensemble members)."""
        return _predict(self._models(), xs, self.batch_size)

    def _transform(self, dataset):
        from pyspark.ml.functions import vector_to_array
        from pyspark.sql import functions as F

        if self.feed is None:
            raise ValueError("this model has no feed description; it was not made by a trainer")
        feed = FeedSpec(inputs=FeedSpec.from_dict(self.feed.to_dict()).inputs)  # a copy
        types = {f.name: type(f.dataType).__name__ for f in dataset.schema.fields}
        missing = [c for c in feed.feature_columns if c not in types]
        if missing:
            raise ValueError(f"columns {missing} not found; the DataFrame has {sorted(types)}")
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
        run_id, batch_size, out_col = uuid.uuid4().hex, self.batch_size, self.prediction_col
        feed_dict = feed.to_dict()

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
                pred = _predict(models, spec.features(table), batch_size).astype(np.float32)
                pred = pred.reshape(len(pred), -1)
                offsets = pa.array(np.arange(0, pred.size + 1, pred.shape[1], dtype=np.int32))
                column = pa.ListArray.from_arrays(offsets, pa.array(pred.ravel()))
                yield pa.RecordBatch.from_arrays(list(batch.columns) + [column],
                                                 names=list(batch.schema.names) + [out_col])

        from pyspark.sql.types import ArrayType, FloatType, StructField, StructType

        schema = StructType(dataset.schema.fields + [StructField(out_col, ArrayType(FloatType()))])
        scored = dataset.mapInArrow(predict_batches, schema)
        return scored.drop(*temp.values()) if temp else scored

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write the model(s), the feed description and the history to directory ``path``."""
        os.makedirs(path, exist_ok=True)
        self.keras_model.save(os.path.join(path, "model.keras"))
        for i, member in enumerate(self.members):
            member.save(os.path.join(path, f"member_{i}.keras"))
        meta = {"format": _FORMAT, "prediction_col": self.prediction_col,
                "feed": self.feed.to_dict() if self.feed else None, "members": len(self.members),
                "history": dict(self.history), "batch_size": self.batch_size}
        with open(os.path.join(path, "distkeras.json"), "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=1, default=str)


def load_model(path: str) -> KerasModel:
    """Load a :class:`KerasModel` written by ``KerasModel.save``."""
    import keras

    meta_path = os.path.join(path, "distkeras.json")
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"{path} is not a saved distkeras model (no distkeras.json)")
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{path}: unsupported distkeras model format {meta.get('format')}")
    model = keras.models.load_model(os.path.join(path, "model.keras"))
    members = [keras.models.load_model(os.path.join(path, f"member_{i}.keras"))
               for i in range(meta["members"])]
    feed = FeedSpec.from_dict(meta["feed"]) if meta["feed"] else None
    return KerasModel(model, history=meta.get("history") or {}, feed=feed, members=members,
                      prediction_col=meta["prediction_col"], batch_size=meta.get("batch_size", 1024))


def _predict(models: list, xs: list[np.ndarray], batch_size: int) -> np.ndarray:
    inputs = model_inputs(xs)
    outs = [np.asarray(m.predict(inputs, batch_size=batch_size, verbose=0)) for m in models]
    return outs[0] if len(outs) == 1 else np.mean(outs, axis=0)
