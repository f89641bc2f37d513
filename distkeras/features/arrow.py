"""Arrow record batches → awkward arrays, zero-copy where possible, on pyarrow 14 and 26.

``ak.from_arrow`` needs a newer pyarrow than the petastorm stack (pyspark 3.5, pyarrow 14)
has; this builds the same jagged layout from each list column's values and lengths, for the
flat ``Coll_Field`` columns `compute_topology_features` reads. Null lists count as empty, null
values as 0.

Example::

    events = events_from_arrow(record_batch)         # ak.Array of records, one per event
"""
from __future__ import annotations

from typing import Sequence

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _numpy(values: pa.Array) -> np.ndarray:
    if values.null_count:
        values = values.fill_null(0)
    return np.asarray(values.to_numpy(zero_copy_only=False))


def _content(col: pa.Array) -> ak.contents.Content:
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lengths = _numpy(pc.list_value_length(col))
        offsets = np.zeros(len(col) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = col.flatten()                      # honours slicing and null list slots
        return ak.contents.ListOffsetArray(ak.index.Index64(offsets),
                                           ak.contents.NumpyArray(_numpy(values)))
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
        return ak.contents.NumpyArray(_numpy(col))
    raise TypeError(f"unsupported column type {col.type} (only numbers and lists of numbers)")


def events_from_arrow(batch: pa.RecordBatch | pa.Table, columns: Sequence[str] | None = None) -> ak.Array:
    """One awkward record per row with the given (default: all numeric) columns as fields."""
    names = list(columns) if columns is not None else [
        f.name for f in batch.schema
        if not (pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_binary(f.type))]
    contents = []
    for name in names:
        col = batch.column(name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        contents.append(_content(col))
    return ak.Array(ak.contents.RecordArray(contents, names, length=batch.num_rows))
