"""What a model reads from a DataFrame, the contract between the driver (which checks the data
and describes it) and the executors (which read it): Arrow → numpy for Keras, shared by
training, prediction and tuning.

A ``FeedSpec`` says which columns make each model input (several columns of one input are
concatenated) and the shape each input is reshaped to, which column is each output's label and
how it is interpreted (``TargetSpec``), and the sample weights. ``feed_spec_for`` derives it from
a model and the column names. The conversion works on whole Arrow columns (flattened list
values + a reshape): no per-row Python. A ``Window`` is what a worker trains on: inputs, labels
and weights, cut into mini-batches; an ``IndexedWindow`` names those rows in a partition held
whole, for a backend to gather inside its compiled window.

Example::

    spec = FeedSpec(inputs=[InputSpec(["hlf"], (14,))],
                    targets=[TargetSpec("label", num_classes=3, one_hot=True)])
    x, y = spec.arrays(arrow_table)     # x: [np.ndarray (n, 14)], y: (n, 3)
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

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
class TargetSpec:
    """The label column of one model output: a class index (made one-hot when the loss wants
    it) or a number / array of numbers reshaped to ``shape``."""

    column: str
    num_classes: int | None = None   # width of the output (the last axis)
    one_hot: bool = False            # integer class index → one-hot vector
    shape: tuple[int, ...] = field(default_factory=tuple)


@dataclass
class FeedSpec:
    """Which columns feed each model input, each output's label and the sample weights.

    ``weight_col`` holds one non-negative weight per row; ``class_weight`` maps a class index
    of the (single) output's label to a weight, as Keras' ``fit(class_weight=)``: the weight of
    a row is the product of both.
    """

    inputs: list[InputSpec]
    targets: list[TargetSpec] = field(default_factory=list)
    weight_col: str | None = None
    class_weight: dict[int, float] | None = None

    @property
    def label_col(self) -> str | None:
        """The first output's label column (None: no labels)."""
        return self.targets[0].column if self.targets else None

    @property
    def label_columns(self) -> list[str]:
        return [t.column for t in self.targets]

    @property
    def feature_columns(self) -> list[str]:
        return [c for spec in self.inputs for c in spec.columns]

    @property
    def columns(self) -> list[str]:
        return (self.feature_columns + self.label_columns
                + ([self.weight_col] if self.weight_col else []))

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.class_weight is not None:          # JSON keys are strings
            out["class_weight"] = {str(k): float(v) for k, v in self.class_weight.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "FeedSpec":
        inputs = [InputSpec(list(i["columns"]), tuple(i["shape"])) for i in d["inputs"]]
        if "targets" in d:
            targets = [TargetSpec(t["column"], t.get("num_classes"), bool(t.get("one_hot")),
                                  tuple(t.get("shape") or ())) for t in d["targets"]]
        else:   # saved before several outputs (one label_col)
            targets = [TargetSpec(d["label_col"], d.get("num_classes"), bool(d.get("one_hot")),
                                  tuple(d.get("label_shape") or ()))] if d.get("label_col") else []
        weights = d.get("class_weight")
        return cls(inputs=inputs, targets=targets, weight_col=d.get("weight_col"),
                   class_weight={int(k): float(v) for k, v in weights.items()} if weights
                   else None)

    def without_targets(self) -> "FeedSpec":
        """The same inputs, nothing else (what prediction reads)."""
        return FeedSpec(inputs=[InputSpec(list(i.columns), tuple(i.shape)) for i in self.inputs])

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

    def labels(self, table: pa.Table) -> list[np.ndarray]:
        """One float32 array per model output."""
        return [_target(column_matrix(table, t.column), t) for t in self.targets]

    def sample_weights(self, table: pa.Table) -> np.ndarray | None:
        """One weight per row (``weight_col`` × ``class_weight``), or None without either."""
        weights = None
        if self.weight_col:
            weights = column_matrix(table, self.weight_col)[:, 0]
        if self.class_weight:
            index = _class_index(column_matrix(table, self.label_col))
            lookup = np.ones(max(max(self.class_weight), int(index.max(initial=0))) + 1,
                             np.float32)
            for k, v in self.class_weight.items():
                lookup[k] = v
            by_class = lookup[index]
            weights = by_class if weights is None else weights * by_class
        return weights

    def window(self, table: pa.Table) -> "Window":
        """Everything training reads from ``table`` (inputs, labels, weights) as one
        :class:`Window` without a step axis."""
        return Window(self.features(table), self.labels(table), self.sample_weights(table))

    def read(self, batches: Iterable[pa.RecordBatch], rows: int | None = None
             ) -> "Window | None":
        """What :meth:`window` makes of all of ``batches`` (None if they hold no row), read a
        batch at a time into arrays of :func:`capacity` ``(rows)`` rows (``rows``: the count
        the driver expects; grown if more arrive; a tail left unused is never touched, and is
        the window's ``storage``): each batch is freed once copied, so a partition is held
        once, not as Arrow batches and their concatenation too.

        Example::

            window = feed.read(batches, rows=60_000)     # batches: an iterator of RecordBatch
        """
        out: list[np.ndarray] | None = None
        weighted, n = False, 0
        for batch in batches:
            if not batch.num_rows:
                continue
            part = self.window(pa.Table.from_batches([batch]))
            arrays = part.xs + part.ys + ([] if part.sample_weight is None
                                          else [part.sample_weight])
            if out is None:
                weighted = part.sample_weight is not None
                out = [_grown(None, capacity(max(rows or 0, len(part))), a) for a in arrays]
            elif n + len(part) > len(out[0]):
                out = [_grown(o[:n], capacity(n + len(part)), o) for o in out]
            for o, a in zip(out, arrays):
                o[n:n + len(part)] = a
            n += len(part)
        if out is None:
            return None
        k = len(self.inputs)

        def window(arrays, storage=None):
            return Window(arrays[:k], arrays[k:len(arrays) - weighted],
                          arrays[-1] if weighted else None, storage)

        return window([o[:n] for o in out], window(out))

    def arrays(self, table: pa.Table) -> tuple[list[np.ndarray], Any]:
        """``(xs, y)``: the inputs and what Keras takes as ``y`` (one array for one output,
        a list for several; None without labels)."""
        return self.features(table), (keras_targets(self.labels(table)) if self.targets
                                      else None)


ALIGNMENT = 64     # bytes: TensorFlow takes host memory as a tensor in place only so aligned


def aligned_empty(shape: tuple, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``ALIGNMENT``-byte boundary,
    so that a backend can take it as a tensor without a copy (TensorFlow aborts the process on
    a misaligned one). NumPy's large arrays start 16 bytes into a page.

    Example::

        x = aligned_empty((60_000, 784), np.float32)
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(size + ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % ALIGNMENT
    return raw[offset:offset + size].view(dtype).reshape(shape)


def capacity(rows: int) -> int:
    """The rows a partition's arrays are made for: ``rows`` rounded up to a power of two. The
    tail is never written (address space, not memory), and partitions of sizes within one
    power of two are held by a backend as tensors of one shape, which one compiled window
    serves: a fit on other data of a similar size reuses the compiled replica.

    Example::

        capacity(30_000)       # 32768
    """
    return 1 << max(0, rows - 1).bit_length()


def _grown(kept: np.ndarray | None, rows: int, like: np.ndarray) -> np.ndarray:
    """An uninitialised array of ``rows`` rows shaped and typed as ``like``'s rows, starting
    with ``kept``."""
    out = aligned_empty((rows,) + like.shape[1:], like.dtype)
    if kept is not None:
        out[:len(kept)] = kept
    return out


def _class_index(y: np.ndarray) -> np.ndarray:
    """Class indices of labels given as indices (one value per row) or one-hot vectors."""
    return (y[:, 0] if y.shape[1] == 1 else y.argmax(axis=1)).astype(np.int64)


def _target(y: np.ndarray, target: TargetSpec) -> np.ndarray:
    if target.one_hot and y.shape[1] == 1:       # class indices: one-hot for the loss
        index = _class_index(y)
        onehot = np.zeros((len(index), target.num_classes), dtype=np.float32)
        onehot[np.arange(len(index)), index] = 1.0
        return onehot
    if y.shape[1] == 1 and not target.shape:
        return y[:, 0]
    return y.reshape((y.shape[0],) + tuple(target.shape or (y.shape[1],)))


def keras_targets(ys: list[np.ndarray]):
    """What Keras expects for ``y``: the array itself for one output, the list for several."""
    return ys[0] if len(ys) == 1 else list(ys)


class _Batches:
    """What both kinds of window give from their ``step(i)``."""

    def batch(self, i: int) -> tuple[Any, Any, np.ndarray | None]:
        """Step ``i`` as Keras' ``(x, y, sample_weight)``."""
        xs, ys, weight = self.step(i)
        return model_inputs(xs), keras_targets(ys), weight


@dataclass
class Window(_Batches):
    """Mini-batches for one call of local steps: every array has a leading step axis, then
    the batch (``xs[j]``: ``(steps, batch, *input_shape)``); ``sample_weight`` ``(steps,
    batch)`` or None. Without a step axis (``feed.window(table)``) it is a block of rows.

    Example::

        window = source.take(k * batch).steps(k)     # k mini-batches of ``batch`` rows
        x, y, w = window.batch(0)                    # the first one, as Keras takes it
    """

    xs: list[np.ndarray]
    ys: list[np.ndarray]
    sample_weight: np.ndarray | None = None
    storage: "Window | None" = None   # the arrays these rows begin, with room past them

    def __len__(self) -> int:
        return len(self.xs[0])

    def __getitem__(self, index) -> "Window":
        """Rows (or steps) ``index`` of every array: an index array or a slice."""
        if isinstance(index, slice):
            pick = lambda a: a[index]  # noqa: E731
        else:      # np.take: 3.6x faster than a[index] on the HLF classifier's 14-float rows
            rows = np.asarray(index)
            rows = np.flatnonzero(rows) if rows.dtype == bool else rows
            pick = lambda a: np.take(a, rows, axis=0)  # noqa: E731
        return Window([pick(x) for x in self.xs], [pick(y) for y in self.ys],
                      None if self.sample_weight is None else pick(self.sample_weight))

    def steps(self, k: int) -> "Window":
        """These rows as ``k`` mini-batches (a step axis in front)."""
        split = lambda a: a.reshape((k, len(a) // k) + a.shape[1:])  # noqa: E731
        return Window([split(x) for x in self.xs], [split(y) for y in self.ys],
                      None if self.sample_weight is None else split(self.sample_weight))

    def step(self, i: int) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None]:
        """Step ``i``'s arrays: inputs, targets, sample weights (or None)."""
        return ([x[i] for x in self.xs], [y[i] for y in self.ys],
                None if self.sample_weight is None else self.sample_weight[i])

    def run(self, steps, start: np.ndarray) -> np.ndarray:
        """These steps run by a backend's :class:`~distkeras.backends.Steps` from the flat
        weights ``start``; the weights after them."""
        return steps.window(list(self.xs), list(self.ys), self.sample_weight, start)

    @staticmethod
    def concatenate(parts: list["Window"]) -> "Window":
        """The rows of ``parts``, one after the other (in arrays aligned for a backend)."""
        first = parts[0]
        return Window([_joined([p.xs[j] for p in parts]) for j in range(len(first.xs))],
                      [_joined([p.ys[j] for p in parts]) for j in range(len(first.ys))],
                      None if first.sample_weight is None
                      else _joined([p.sample_weight for p in parts]))


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    out = aligned_empty((sum(len(a) for a in arrays),) + arrays[0].shape[1:], arrays[0].dtype)
    return np.concatenate(arrays, out=out)


@dataclass
class IndexedWindow(_Batches):
    """A :class:`Window` named by row indices into a partition held whole: ``partition[index]``,
    not yet gathered. Run on a backend (:meth:`run`), its rows are gathered inside the compiled
    window from the partition, taken as tensors once per fit: no window-sized copy in numpy
    and again in the backend for every window (two copies of the whole partition per epoch
    when λ is an epoch, each first written in fresh memory). Read as arrays (``xs``, ``ys``,
    ``sample_weight``, :meth:`batch`), it is gathered in numpy, once.

    Example::

        window = IndexedWindow(partition, order[:k * batch]).steps(k)   # k mini-batches
        theta = window.run(replica.steps, theta)
    """

    partition: Window
    index: np.ndarray          # (rows,), or (steps, batch) after steps()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index) -> "IndexedWindow":
        """Rows (or steps) ``index``: an index array or a slice."""
        return IndexedWindow(self.partition, self.index[index])

    def steps(self, k: int) -> "IndexedWindow":
        """These rows as ``k`` mini-batches (a step axis in front)."""
        return IndexedWindow(self.partition, self.index.reshape((k, -1)))

    def step(self, i: int) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None]:
        """Step ``i``'s arrays, gathered: inputs, targets, sample weights (or None)."""
        rows = self.partition[self.index[i]]
        return list(rows.xs), list(rows.ys), rows.sample_weight

    def run(self, steps, start: np.ndarray) -> np.ndarray:
        """These steps run by a backend's :class:`~distkeras.backends.Steps`, which gathers the
        rows (inside its compiled window where it can); the weights after them."""
        return steps.indexed(self.partition, self.index, start)

    @functools.cached_property
    def gathered(self) -> Window:
        """The rows as a :class:`Window` of arrays (with the step axis, if any)."""
        rows = self.partition[self.index.reshape(-1)]
        return rows.steps(len(self.index)) if self.index.ndim == 2 else rows

    @property
    def xs(self) -> list[np.ndarray]:
        return self.gathered.xs

    @property
    def ys(self) -> list[np.ndarray]:
        return self.gathered.ys

    @property
    def sample_weight(self) -> np.ndarray | None:
        return self.gathered.sample_weight


def column_matrix(table: pa.Table, name: str) -> np.ndarray:
    """A numeric scalar or fixed-length list column as a float32 ``(n, k)`` matrix."""
    col = table.column(name)
    if isinstance(col, pa.ChunkedArray):    # one chunk (a batch's table) is read in place:
        arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()   # (no copy)
    else:
        arr = col
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


ONE_HOT_LOSSES = frozenset({"categoricalcrossentropy", "categoricalfocalcrossentropy",
                            "kldivergence", "categoricalhinge"})


def feed_spec_for(model, features_col, label_col, loss, input_shapes=None,
                  weight_col: str | None = None,
                  class_weight: dict[int, float] | None = None) -> FeedSpec:
    """How the DataFrame's columns map onto ``model``'s inputs and outputs.

    ``features_col``: one column per input (or several concatenated into a single input);
    ``label_col``: one column per output (a list in the model's order, or a dict {output name:
    column}, which a model returning a dict of outputs requires); ``loss``: one loss for every
    output, or a list / a dict by output name (it decides which labels become one-hot vectors).
    """
    from distkeras.errors import ModelError
    from distkeras.signature import input_shapes as model_input_shapes
    from distkeras.signature import output_specs, outputs_by_name

    columns = [features_col] if isinstance(features_col, str) else list(features_col)
    shapes = model_input_shapes(model)
    if input_shapes is not None:
        shapes = [tuple(s) for s in (input_shapes if isinstance(input_shapes[0], (list, tuple))
                                     else [input_shapes])]
    if shapes is None or None in [d for s in shapes for d in s]:
        raise ModelError(f"the input shapes of {model.name!r} are not known ({shapes}): give it "
                         "an Input, call it once on data, or pass input_shapes=")
    if len(shapes) > 1:
        if len(columns) != len(shapes):
            raise ValueError(f"the model has {len(shapes)} inputs but features_col names "
                             f"{len(columns)} columns; give one column per input")
        inputs = [InputSpec([c], s) for c, s in zip(columns, shapes)]
    else:
        inputs = [InputSpec(columns, shapes[0])]
    outputs = output_specs(model, shapes)
    labels = _label_columns(label_col, [name for name, _ in outputs],
                            len(outputs) > 1 and outputs_by_name(model, shapes))
    losses = per_output(loss, [name for name, _ in outputs])
    targets = [TargetSpec(column, int(shape[-1]) if shape else 1,
                          loss_name(each) in ONE_HOT_LOSSES)
               for column, (_, shape), each in zip(labels, outputs, losses)]
    if class_weight and len(targets) != 1:
        raise ValueError("class_weight applies to a model with one output (as in Keras); "
                         "give per-row weights in weight_col= instead")
    return FeedSpec(inputs=inputs, targets=targets, weight_col=weight_col,
                    class_weight={int(k): float(v) for k, v in class_weight.items()}
                    if class_weight else None)


def _label_columns(label_col, outputs: list[str], by_name: bool) -> list[str]:
    """The label column of each output, in the model's order: ``label_col`` is one column, a
    list in the model's order, or a dict {output name: column}; a model that returns its
    outputs as a dict takes the dict (its order is Keras' sorted one, not the user's)."""
    names = ", ".join(outputs)
    if label_col is None:
        return []
    if isinstance(label_col, dict):
        unknown, missing = set(label_col) - set(outputs), set(outputs) - set(label_col)
        if unknown or missing:
            raise ValueError(f"label_col names outputs {sorted(label_col)} but the model's "
                             f"outputs are {names}; give one label column per output name")
        return [label_col[name] for name in outputs]
    labels = [label_col] if isinstance(label_col, str) else list(label_col)
    if len(labels) != len(outputs):
        raise ValueError(f"the model has {len(outputs)} outputs ({names}) but label_col names "
                         f"{len(labels)} column(s); give one label column per output, in order")
    if by_name:
        raise ValueError(f"the model returns its outputs as a dict ({names}), so a list of "
                         "label columns has no order to follow; name them by output: label_col="
                         + "{" + ", ".join(f"{n!r}: ..." for n in outputs) + "}")
    return labels


def per_output(value, names: list[str]) -> list:
    """A loss (or metric set) given once, as a list or as a dict by output name, spread over
    the outputs ``names``."""
    if isinstance(value, dict) and "class_name" not in value:
        missing = [n for n in names if n not in value]
        if missing:
            raise ValueError(f"no loss for output(s) {missing}: the dict names {sorted(value)}")
        return [value[n] for n in names]
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise ValueError(f"{len(value)} losses for {len(names)} outputs {names}")
        return list(value)
    return [value] * len(names)


def loss_name(loss) -> str:
    """A loss's name, lower case without underscores, from its name, object or config dict
    (``"categorical_crossentropy"``, ``CategoricalCrossentropy()``, ``{"class_name": ...}``)."""
    if isinstance(loss, dict):
        config = loss.get("config")
        loss = config if loss.get("class_name") == "function" else loss.get("class_name")
        loss = loss if isinstance(loss, str) else ""
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
    return name.lower().replace("_", "")

