"""Interpretation: ROOT branch types -> Arrow/Spark types, and the executor-side chunk reader.

This half of the ROOT reader runs in Spark executors (``read_chunks``); the planning half is in
:mod:`distkeras.io.root_plan`. Nothing here touches a SparkContext.

Type mapping (the branch's own width is kept; Spark has no unsigned types, so those widen)::

    Bool_t -> boolean      Char_t -> tinyint   Short_t -> smallint   Int_t -> int
    Long64_t -> bigint     UChar_t -> smallint UShort_t -> int       UInt_t/ULong64_t -> bigint
    Float_t -> float       Double_t -> double  TString/std::string -> string
    jagged / std::vector / fixed-size arrays of any of these -> array<...> (nested as needed)

ULong64_t values above 2**63-1 wrap (Spark has no unsigned 64-bit type).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

_INVALID = re.compile(r"[^A-Za-z0-9_]")

# Arrow primitive -> (Arrow type Spark can hold, Spark DDL name)
_PRIMITIVES = {
    pa.bool_(): (pa.bool_(), "boolean"),
    pa.int8(): (pa.int8(), "byte"),
    pa.int16(): (pa.int16(), "short"),
    pa.int32(): (pa.int32(), "integer"),
    pa.int64(): (pa.int64(), "long"),
    pa.uint8(): (pa.int16(), "short"),
    pa.uint16(): (pa.int32(), "integer"),
    pa.uint32(): (pa.int64(), "long"),
    pa.uint64(): (pa.int64(), "long"),
    pa.float32(): (pa.float32(), "float"),
    pa.float64(): (pa.float64(), "double"),
    pa.string(): (pa.string(), "string"),
    pa.large_string(): (pa.string(), "string"),
}


def column_name(branch: str) -> str:
    """Spark column name of a branch: every character outside ``[A-Za-z0-9_]`` becomes ``_``.

    >>> column_name("EFlowTrack.PT"), column_name("Jet_size"), column_name("MissingET.MET")
    ('EFlowTrack_PT', 'Jet_size', 'MissingET_MET')
    """
    return _INVALID.sub("_", branch)


def branch_arrow_type(branch) -> pa.DataType | None:
    """Arrow type (as uproot + awkward produce it) of an uproot TBranch, or None if the
    branch's type cannot be read by uproot or has no Spark equivalent (objects, records)."""
    try:
        import awkward as ak

        form = branch.interpretation.awkward_form(branch.file)
        arrow = layout_to_arrow(ak.to_layout(form.length_zero_array()))
    except Exception:  # noqa: BLE001 - UnknownInterpretation, object models, records, ...
        return None
    return arrow.type if spark_compatible(arrow.type) else None


def layout_to_arrow(layout) -> pa.Array:
    """Awkward layout (numbers, strings, nested lists) -> Arrow array with 32-bit list offsets.

    Zero-copy for numbers; works with any pyarrow >= 14 (``ak.to_arrow`` needs pyarrow >= 17).
    """
    import awkward as ak

    if isinstance(layout, ak.contents.NumpyArray):
        data = np.asarray(layout.data)
        if data.ndim > 1:  # fixed-size array branch, e.g. Float_t[3]
            return layout_to_arrow(layout.to_RegularArray())
        if not data.dtype.isnative:
            data = data.astype(data.dtype.newbyteorder("="))
        return pa.array(data)
    if isinstance(layout, (ak.contents.RegularArray, ak.contents.ListArray)):
        layout = layout.to_ListOffsetArray64(False)
    if isinstance(layout, ak.contents.ListOffsetArray):
        offsets = np.asarray(layout.offsets.data)
        content = layout.content
        if offsets[0] != 0:  # a sliced array: rebase so offsets start at 0
            content = content[int(offsets[0]):int(offsets[-1])]
            offsets = offsets - offsets[0]
        offsets32 = pa.array(offsets.astype(np.int32))  # a chunk never holds 2**31 items
        if layout.parameter("__array__") in ("string", "bytestring"):
            data = np.ascontiguousarray(np.asarray(content.data))
            return pa.StringArray.from_buffers(len(offsets) - 1, offsets32.buffers()[1],
                                               pa.py_buffer(data))
        return pa.ListArray.from_arrays(offsets32, layout_to_arrow(content))
    raise TypeError(f"no Arrow conversion for awkward {type(layout).__name__}")


def spark_compatible(arrow_type: pa.DataType) -> bool:
    """True for primitives/strings and (nested) lists of them."""
    return _spark_arrow_type(arrow_type) is not None


def _spark_arrow_type(t: pa.DataType) -> pa.DataType | None:
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = _spark_arrow_type(t.value_type)
        return None if inner is None else pa.list_(pa.field("element", inner))
    for k, (v, _) in _PRIMITIVES.items():
        if t == k:
            return v
    return None


def spark_type(arrow_type: pa.DataType):
    """pyspark DataType for a (compatible) Arrow type from :func:`branch_arrow_type`."""
    from pyspark.sql import types as T

    names = {"boolean": T.BooleanType, "byte": T.ByteType, "short": T.ShortType,
             "integer": T.IntegerType, "long": T.LongType, "float": T.FloatType,
             "double": T.DoubleType, "string": T.StringType}
    t = arrow_type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return T.ArrayType(spark_type(t.value_type), containsNull=True)
    for k, (_, name) in _PRIMITIVES.items():
        if t == k:
            return names[name]()
    raise TypeError(f"no Spark type for Arrow type {t}")


@dataclass(frozen=True)
class Chunk:
    """Entries ``[start, stop)`` of one file: one Arrow batch. ``label`` is None without labels."""

    path: str
    start: int
    stop: int
    label: int | None = None


@dataclass(frozen=True)
class ReadSpec:
    """What executors need to turn chunks into Arrow batches (small, picklable metadata)."""

    tree: str
    branches: tuple[str, ...]          # branch names, in column order
    schema_json: str                   # Spark StructType JSON of the output
    label_col: str | None = None
    source_col: str | None = None
    entry_col: str | None = None
    on_bad_file: str = "raise"
    open_options: dict = field(default_factory=dict)

    def arrow_schema(self) -> pa.Schema:
        import json

        from pyspark.sql.pandas.types import to_arrow_schema
        from pyspark.sql.types import StructType

        return to_arrow_schema(StructType.fromJson(json.loads(self.schema_json)))


def open_file(path: str, options: dict):
    """uproot.open with distkeras' defaults (memory-mapped local files)."""
    import uproot

    opts = dict(options)
    if "://" not in path or path.startswith("file://"):
        opts.setdefault("handler", uproot.source.file.MemmapSource)
    return uproot.open(path, **opts)


def _string_column(value: str, n: int) -> pa.Array:
    data = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


def chunk_to_batch(tree, chunk: Chunk, spec: ReadSpec, schema: pa.Schema) -> pa.RecordBatch:
    """Read one chunk of an open TTree into a RecordBatch typed exactly like ``schema``."""
    import awkward as ak

    n = chunk.stop - chunk.start
    arrays = []
    for name, target in zip(spec.branches, schema.types):
        values = tree[name].array(entry_start=chunk.start, entry_stop=chunk.stop, library="ak")
        arr = layout_to_arrow(ak.to_layout(values))
        arrays.append(arr if arr.type == target else arr.cast(target))
    if spec.label_col is not None:
        arrays.append(pa.array(np.full(n, chunk.label, dtype=np.int32)))
    if spec.source_col is not None:
        arrays.append(_string_column(chunk.path, n))
    if spec.entry_col is not None:
        arrays.append(pa.array(np.arange(chunk.start, chunk.stop, dtype=np.int64)))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def read_chunks(chunks: Iterable[Chunk], spec: ReadSpec,
                on_skip: Callable[[Chunk, str], Any] | None = None) -> Iterator[pa.RecordBatch]:
    """Yield one RecordBatch per chunk (runs in executors; opens each file once).

    A failing chunk raises :class:`~distkeras.io.errors.BadRootFileError` naming the file and
    entry range, or, with ``spec.on_bad_file == "skip"``, is logged, passed to ``on_skip``
    and left out.
    """
    from distkeras.io.errors import BadRootFileError, RootReadError

    schema = spec.arrow_schema()
    current_path, current_file, tree = None, None, None
    try:
        for chunk in chunks:
            try:
                if chunk.path != current_path or tree is None:
                    if current_file is not None:
                        current_file.close()
                    current_path, current_file, tree = chunk.path, None, None
                    current_file = open_file(chunk.path, spec.open_options)
                    tree = current_file[spec.tree]
                batch = chunk_to_batch(tree, chunk, spec, schema)
            except Exception as exc:  # noqa: BLE001 - classified and re-raised or reported
                reason = exc.problem if isinstance(exc, RootReadError) else f"{type(exc).__name__}: {exc}"
                if spec.on_bad_file != "skip":
                    raise BadRootFileError(
                        chunk.path,
                        f"failed reading entries [{chunk.start}, {chunk.stop}) of tree "
                        f"{spec.tree!r} ({reason}); the file is corrupt or became unreadable",
                        "replace or remove the file, or pass on_bad_file='skip' to drop it "
                        "and get it reported",
                    ) from exc
                log.warning("skipping entries [%d, %d) of %s: %s (%d events lost)",
                            chunk.start, chunk.stop, chunk.path, reason, chunk.stop - chunk.start)
                if on_skip is not None:
                    on_skip(chunk, reason)
                continue
            yield batch
    finally:
        if current_file is not None:
            current_file.close()
