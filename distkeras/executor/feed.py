"""Arrow → numpy for Keras: the data feed shared by training, prediction and tuning, and
``feed_spec_for``: how a model's inputs map onto DataFrame columns (the contract both sides
use).

A ``FeedSpec`` says which columns make each model input (several columns of one input are
concatenated) and the shape each input is reshaped to, and how labels are interpreted. The
conversion works on whole Arrow columns (flattened list values + a reshape): no per-row Python.

Example::

    spec = FeedSpec(inputs=[InputSpec(["hlf"], (14,))], label_col="label", num_classes=3,
                    one_hot=True)
    x, y = spec.arrays(arrow_table)     # x: [np.ndarray (n, 14)], y: (n, 3)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa


class FeedError(ValueError):
    """The data does not fit the model (shape, type, nulls)."""


@dataclass
class InputSpec:
    columns: list[str]
    shape: tuple[int, ...]          # per-example shape, without the batch dimension

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass
class FeedSpec:
    inputs: list[InputSpec]
    label_col: str | None = None
    num_classes: int | None = None   # outputs of the model's last layer
    one_hot: bool = False            # integer class index → one-hot vector
    label_shape: tuple[int, ...] = field(default_factory=tuple)

    @property
    def feature_columns(self) -> list[str]:
        return [c for spec in self.inputs for c in spec.columns]

    @property
    def columns(self) -> list[str]:
        return self.feature_columns + ([self.label_col] if self.label_col else [])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeedSpec":
        inputs = [InputSpec(list(i["columns"]), tuple(i["shape"])) for i in d["inputs"]]
        return cls(inputs=inputs, label_col=d.get("label_col"), num_classes=d.get("num_classes"),
                   one_hot=bool(d.get("one_hot")), label_shape=tuple(d.get("label_shape") or ()))

    def features(self, table: pa.Table) -> list[np.ndarray]:
        """One float32 array per model input, shaped ``(n, *shape)``."""
        out = []
        for spec in self.inputs:
            parts = [column_matrix(table, c) for c in spec.columns]
            flat = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
            if flat.shape[1] != spec.size:
                raise FeedError(f"columns {spec.columns} give {flat.shape[1]} values per row, the "
                                f"model input expects shape {spec.shape} ({spec.size} values)")
            out.append(flat.reshape((flat.shape[0],) + tuple(spec.shape)))
        return out

    def labels(self, table: pa.Table) -> np.ndarray:
        y = column_matrix(table, self.label_col)
        if self.one_hot:
            index = y[:, 0].astype(np.int64)
            onehot = np.zeros((len(index), self.num_classes), dtype=np.float32)
            onehot[np.arange(len(index)), index] = 1.0
            return onehot
        if y.shape[1] == 1 and not self.label_shape:
            return y[:, 0]
        return y.reshape((y.shape[0],) + tuple(self.label_shape or (y.shape[1],)))

    def arrays(self, table: pa.Table) -> tuple[list[np.ndarray], np.ndarray | None]:
        return self.features(table), (self.labels(table) if self.label_col else None)


def column_matrix(table: pa.Table, name: str) -> np.ndarray:
    """A numeric scalar or fixed-length list column as a float32 ``(n, k)`` matrix."""
    col = table.column(name)
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        raise FeedError(f"column {name!r} has {arr.null_count} null values; drop or fill them")
    n = len(arr)
    if pa.types.is_fixed_size_list(arr.type):
        values = arr.flatten()
        width = arr.type.list_size
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        offsets = np.asarray(arr.offsets)
        lengths = np.diff(offsets)
        width = int(lengths[0]) if n else 0
        if n and (lengths != width).any():
            raise FeedError(f"column {name!r} has arrays of different lengths "
                            f"({lengths.min()}..{lengths.max()}); every row needs the same length")
        values = arr.flatten()
    else:
        return arr.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(n, 1)
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, width)


def model_inputs(xs: list[np.ndarray]):
    """What Keras expects for ``x``: the array itself for one input, the list for several."""
    return xs[0] if len(xs) == 1 else list(xs)


def feed_spec_for(model, features_col, label_col, loss, input_shapes=None) -> FeedSpec:
    """How the DataFrame's columns map onto ``model``'s inputs and output."""
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError("the Keras model is not built: give it an Input layer (or call "
                         "model.build(input_shape)) before training")
    columns = [features_col] if isinstance(features_col, str) else list(features_col)
    shapes = [tuple(int(d) for d in t.shape[1:]) for t in model.inputs]
    if input_shapes is not None:
        shapes = [tuple(s) for s in (input_shapes if isinstance(input_shapes[0], (list, tuple))
                                     else [input_shapes])]
    if None in [d for s in shapes for d in s]:
        raise ValueError(f"model input shapes {shapes} have unknown dimensions; pass input_shapes=")
    if len(shapes) > 1:
        if len(columns) != len(shapes):
            raise ValueError(f"the model has {len(shapes)} inputs but features_col names "
                             f"{len(columns)} columns; give one column per input")
        inputs = [InputSpec([c], s) for c, s in zip(columns, shapes)]
    else:
        inputs = [InputSpec(columns, shapes[0])]
    num_classes = int(model.outputs[0].shape[-1]) if model.outputs else None
    one_hot = loss_name(loss) in ("categoricalcrossentropy", "categoricalfocalcrossentropy",
                                  "kldivergence", "categoricalhinge")
    return FeedSpec(inputs=inputs, label_col=label_col, num_classes=num_classes, one_hot=one_hot)


def loss_name(loss) -> str:
    """A loss's name, lower case without underscores, from its name, object or config dict
    (``"categorical_crossentropy"``, ``CategoricalCrossentropy()``, ``{"class_name": ...}``)."""
    if isinstance(loss, dict):
        config = loss.get("config")
        loss = config if loss.get("class_name") == "function" else loss.get("class_name")
        loss = loss if isinstance(loss, str) else ""
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
    return name.lower().replace("_", "")

