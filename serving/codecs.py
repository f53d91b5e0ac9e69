"""Request and response encodings: simple and KServe V1 JSON, V2 JSON, V2 binary tensor data.

Every protocol detail lives here, as pure functions over bytes and numpy arrays: no Flask request
objects, no onnxruntime. Decoders return a C-contiguous float32 array of shape (N, 4) or raise a
``SoftserveError`` (``BadRequest`` 400, ``PayloadTooLarge`` 413) whose message says what was
wrong and what is expected.

Speed: a batch is parsed by orjson and checked as whole numpy arrays; the per-value Python work
(naming the exact bad value) only runs once a batch is known to be bad. Booleans, which numpy
silently reads as 1 and 0, are looked for only among the values equal to 0 or 1.

Formats:

- simple ``/predict`` and V1 ``:predict``: ``{"instances": [[5.1, 3.5, 1.4, 0.2], ...]}``, rows
  as lists of 4 numbers or objects keyed exactly by the model's 4 feature names; answered by
  ``{"model_name", "model_version", "predictions": [{"class", "label", "probabilities"}]}``.
- V2 (Open Inference Protocol, KServe/Triton) ``/infer`` with Triton's binary tensor data and
  classification extensions (``Inference-Header-Content-Length`` splits JSON and raw bytes).
"""

from __future__ import annotations

import itertools
import operator
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelrepo import CLASS, INPUT_NAME, N_CLASSES, N_FEATURES, PROBABILITIES
from serving.errors import BadRequest, PayloadTooLarge

HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_MAX = 2**63 - 1

# V2 datatypes the model accepts for its input, with their (little-endian) wire dtype; all of
# them are converted to float32, the model's input type.
INPUT_DATATYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
}
# Every datatype the Open Inference Protocol defines: the others are valid but not accepted.
V2_DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
     "FP16", "FP32", "FP64", "BF16", "BYTES"}
)
OUTPUT_NAMES = (PROBABILITIES, CLASS)
# The V2 protocol extensions these codecs implement, as the server metadata (GET /v2) names them.
SERVER_EXTENSIONS = ("binary_tensor_data", "classification")

_ACCEPTED = "FP32 (or FP64, INT32, INT64)"
_INSTANCES_EXAMPLE = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
_TENSOR_EXAMPLE = (
    '{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}'
)
_INFER_EXAMPLE = f'{{"inputs": [{_TENSOR_EXAMPLE}]}}'
_INPUT = f'input "{INPUT_NAME}"'
# What the model's one input is, for messages about a missing or empty one.
_INPUT_SPEC = f'one input tensor named "{INPUT_NAME}", FP32, shape [N, {N_FEATURES}]'
# Stands for a key the request leaves out, so that a missing key is not reported as null.
_MISSING: Any = object()


@dataclass(frozen=True)
class RequestedOutput:
    """One output a V2 request asks for; ``classification`` is top-k (0 = the raw tensor)."""

    name: str
    binary: bool = False
    classification: int = 0


@dataclass(eq=False)
class InferRequest:
    """A decoded V2 inference request.

    ``inputs`` is float32, C-contiguous, shape (N, 4); it may be a read-only view of the
    request body (binary tensor data).
    """

    id: str | None
    inputs: np.ndarray
    outputs: list[RequestedOutput]


# ---------------------------------------------------------------------------------- helpers


def _show(value: Any, limit: int = 60) -> str:
    """A value as JSON text, shortened, for error messages."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_kind(value: Any) -> str:
    """What a parsed JSON value is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {_show(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _value_problem(value: Any) -> str | None:
    """Why one parsed JSON value cannot be a feature value, or None if it can."""
    kind = type(value)
    if kind is float or kind is int:
        if abs(value) <= FLOAT32_MAX:
            return None
        return f"is {value!r}, outside the float32 range (magnitude at most 3.4e38)"
    if kind is str:
        return f"is the string {_show(value)}: expected a number (numbers must not be quoted)"
    return f"is {_json_kind(value)}: expected a number"


def _load_json(body: bytes, what: str, example: str, after_json: str = "") -> Any:
    """Parse a UTF-8 JSON document. Raises BadRequest saying why it is not one, and where.

    ``after_json``, if given, is the advice for a body whose start is a whole JSON document
    followed by more bytes (the V2 binary data sent without its header length).
    """
    head = bytes(body[:4])
    # orjson would reject these too, but with a puzzling message: say what it is.
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in head:
        raise BadRequest(
            f"{what} looks like UTF-16 or UTF-32: send JSON encoded as UTF-8, such as {example}"
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not body:
            raise BadRequest(f"{what} is empty: expected a JSON object such as {example}") from None
        raise BadRequest(_json_problem(bytes(body), exc, what, example, after_json)) from None


def _json_problem(
    body: bytes, exc: orjson.JSONDecodeError, what: str, example: str, after_json: str
) -> str:
    """The message for a body orjson refused, naming the byte offset where it goes wrong.

    orjson reports every invalid UTF-8 sequence at "char 0", and other errors at a position
    counted in characters, not bytes: both are recomputed here (only once a body has failed).
    """
    try:
        text = body.decode()
    except UnicodeDecodeError as bad:
        offset = bad.start
        where = f"byte 0x{body[offset]:02X} at offset {offset} (line {_line(body, offset)})"
        if bad.reason == "unexpected end of data":
            problem = (
                f"{what} is not UTF-8: {where} begins a character cut short by the end of the "
                f"{what}"
            )
        else:
            problem = f"{what} is not UTF-8: {where} does not begin a valid UTF-8 character"
        if after_json and _whole_document_before(body, offset):
            return f"{problem}; {after_json}"
        return f"{problem}; send JSON encoded as UTF-8, such as {example}"
    offset = len(text[: exc.pos].encode())
    problem = (
        f"{what} is not valid UTF-8 JSON: {exc.msg} at byte offset {offset} "
        f"(line {_line(body, offset)})"
    )
    if after_json and exc.msg == _AFTER_DOCUMENT:
        return f"{problem}; {after_json}"
    if b"NaN" in body or b"Infinity" in body:
        problem += " (NaN and Infinity are not JSON numbers: every value must be finite)"
    return f"{problem}; expected a JSON object such as {example}"


# orjson's message for bytes after a complete document.
_AFTER_DOCUMENT = "unexpected content after document"


def _line(body: bytes, offset: int) -> int:
    """The line number (from 1) of byte ``offset`` of ``body``."""
    return body.count(b"\n", 0, offset) + 1


def _whole_document_before(body: bytes, offset: int) -> bool:
    """Whether ``body[:offset]`` starts with a whole JSON document (anything may follow)."""
    try:
        orjson.loads(body[:offset])
    except orjson.JSONDecodeError as exc:
        return exc.msg == _AFTER_DOCUMENT
    return True


def _parameters(owner: dict[str, Any], what: str) -> dict[str, Any]:
    """The optional ``parameters`` object of a request, input or output. Raises BadRequest."""
    parameters = owner.get("parameters")
    if parameters is None:
        return {}
    if type(parameters) is not dict:
        raise BadRequest(f'{what} "parameters" must be a JSON object, got {_json_kind(parameters)}')
    return parameters


def _leaves(nested: list[Any], depth: int) -> Iterable[Any]:
    """The values of a rectangular nested list ``depth`` levels deep, without a Python loop."""
    values: Iterable[Any] = nested
    for _ in range(depth - 1):
        values = itertools.chain.from_iterable(values)
    return values


def _holds_booleans(nested: list[Any], array: np.ndarray) -> bool:
    """Whether the JSON values ``array`` was built from include true or false.

    numpy reads true and false as 1 and 0 without a word. Only values equal to 0 or 1 can have
    been booleans, so only those few are looked up in the parsed lists; a batch with many of
    them is checked in one C-level pass over the value types instead.
    """
    flat = array.reshape(-1)
    candidates = np.flatnonzero((flat == 0) | (flat == 1))
    if len(candidates) == 0:
        return False
    # Looking one value up costs about as much as four or five values in the pass over all types.
    if len(candidates) * 4 > flat.size:
        return bool in set(map(type, _leaves(nested, array.ndim)))
    for position in zip(*(axis.tolist() for axis in np.unravel_index(candidates, array.shape))):
        value: Any = nested
        for index in position:
            value = value[index]
        if type(value) is bool:
            return True
    return False


def _first_out_of_float32(flat: np.ndarray) -> int | None:
    """Index of the first value that is NaN, infinite or beyond float32's range, else None."""
    if flat.dtype.kind != "f":
        return None  # integers up to 2**64 are all within float32's range
    # min/max propagate NaN, and NaN fails both comparisons: one pass each, no temporaries.
    if flat.min() >= -FLOAT32_MAX and flat.max() <= FLOAT32_MAX:
        return None
    return int(np.flatnonzero(~(np.abs(flat) <= FLOAT32_MAX))[0])


# Up to this many values, checking them one by one in Python is cheaper than numpy's
# whole-array checks (four array operations cost ~25 µs with the caches cold under load).
_SMALL_VALUES = 64


def _small_float32(values: list[Any], rows: int) -> np.ndarray | None:
    """Rows (lists of 4) or a flat list of plain, in-range numbers as (rows, 4) float32.

    None when anything is unusual (booleans, strings, nesting, out of range, wrong length):
    the caller's whole-array path then finds and words the problem.
    """
    for value in values:
        kind = type(value)
        if kind is list:
            if len(value) != N_FEATURES:
                return None
            for item in value:
                item_kind = type(item)
                if (item_kind is not float and item_kind is not int) or \
                        not -FLOAT32_MAX <= item <= FLOAT32_MAX:
                    return None
        elif (kind is not float and kind is not int) or not -FLOAT32_MAX <= value <= FLOAT32_MAX:
            return None
    try:
        array = np.array(values, dtype=np.float32)
    except ValueError:  # rows and bare numbers mixed: not rectangular
        return None
    return array.reshape(rows, N_FEATURES) if array.size == rows * N_FEATURES else None


def _to_float32(array: np.ndarray, rows: int) -> np.ndarray:
    """The (rows, 4) float32 C-contiguous array holding ``array``'s values."""
    out = array.astype(np.float32, copy=False).reshape(rows, N_FEATURES)
    if not out.flags.aligned or not out.flags.c_contiguous:
        # Binary data starts wherever the JSON header ends; onnxruntime reads the buffer
        # directly, so hand it an aligned copy (a few kB) rather than unaligned floats.
        out = np.array(out, dtype=np.float32, order="C")
    return out


# ------------------------------------------------------------------ simple and V1 instances


def decode_instances(body: bytes, feature_names: Sequence[str], max_rows: int) -> np.ndarray:
    """Decode ``{"instances": [...]}`` (simple ``/predict`` and KServe V1 ``:predict``).

    Rows are lists of 4 numbers, or objects keyed exactly by ``feature_names``; all rows of a
    batch take the same form. Returns a C-contiguous float32 array of shape (N, 4).

    Raises BadRequest (400) for anything but such a body: not UTF-8 JSON, not an object, keys
    other than ``instances``, an empty batch, rows of the wrong length or form, values that are
    not finite numbers within float32's range (strings, null, booleans, lists, 1e39).
    Raises PayloadTooLarge (413) for more than ``max_rows`` rows.
    """
    doc = _load_json(body, "request body", _INSTANCES_EXAMPLE)
    if type(doc) is not dict:
        raise BadRequest(
            f"request body must be a JSON object such as {_INSTANCES_EXAMPLE}, "
            f"got {_json_kind(doc)}"
        )
    if "instances" not in doc or len(doc) != 1:
        unexpected = sorted(k for k in doc if k != "instances")
        found = f"unexpected keys {_show(unexpected)}" if unexpected else 'no "instances" key'
        raise BadRequest(
            f'request body has {found}: expected exactly one key, "instances", '
            f"such as {_INSTANCES_EXAMPLE}"
        )
    rows = doc["instances"]
    if type(rows) is not list:
        raise BadRequest(
            f'"instances" must be a list of rows such as {_INSTANCES_EXAMPLE}, '
            f"got {_json_kind(rows)}"
        )
    if not rows:
        raise BadRequest(
            f'"instances" is empty: send at least one row, such as {_INSTANCES_EXAMPLE}'
        )
    if len(rows) > max_rows:
        raise PayloadTooLarge(
            f'"instances" has {len(rows)} rows, more than the {max_rows} allowed per request: '
            "split the batch"
        )
    keyed = type(rows[0]) is dict
    if keyed:
        rows = _rows_from_objects(rows, feature_names)
    if len(rows) * N_FEATURES <= _SMALL_VALUES and all(type(r) is list for r in rows):
        small = _small_float32(rows, len(rows))
        if small is not None:
            return small
    try:
        array = np.array(rows)
    except (ValueError, TypeError):  # ragged rows, or nesting deeper than numpy's 64 dimensions
        array = None
    if array is None or array.dtype.kind not in "fiu" or array.shape != (len(rows), N_FEATURES):
        raise _instances_problem(rows, feature_names, keyed)
    if _holds_booleans(rows, array):
        raise _instances_problem(rows, feature_names, keyed)
    if _first_out_of_float32(array.reshape(-1)) is not None:
        raise _instances_problem(rows, feature_names, keyed)
    return _to_float32(array, len(rows))


def _rows_from_objects(rows: list[Any], names: Sequence[str]) -> list[Any]:
    """Rows given as objects, as tuples of values in feature order. Raises BadRequest."""
    expected = set(names)
    for i, row in enumerate(rows):
        if type(row) is not dict:
            raise BadRequest(
                f"instances[{i}] is {_json_kind(row)} but instances[0] is an object: "
                f"give every row as an object with the keys {_show(list(names))}"
            )
        if row.keys() != expected:
            missing = [n for n in names if n not in row]
            extra = [k for k in row if k not in expected]
            found = "; ".join(
                part
                for part in (
                    f"lacks {_show(missing)}" if missing else "",
                    f"has unknown keys {_show(extra)}" if extra else "",
                )
                if part
            )
            raise BadRequest(
                f"instances[{i}] {found}: every row object needs exactly the keys "
                f"{_show(list(names))}"
            )
    return list(map(operator.itemgetter(*names), rows))


def _instances_problem(rows: list[Any], names: Sequence[str], keyed: bool) -> BadRequest:
    """The error naming the first bad row or value of a batch known to be bad."""
    expected = (
        f"every row must be a list of {N_FEATURES} numbers ({', '.join(names)}) "
        "or an object with those keys"
    )
    for i, row in enumerate(rows):
        if type(row) is dict:  # only reached when instances[0] is a list
            return BadRequest(
                f"instances[{i}] is an object but instances[0] is a list: "
                f"give every row the same form; {expected}"
            )
        if type(row) not in (list, tuple):
            return BadRequest(f"instances[{i}] is {_json_kind(row)}: {expected}")
        for j, value in enumerate(row):
            problem = _value_problem(value)
            if problem is not None:
                where = f"instances[{i}][{_show(names[j])}]" if keyed else f"instances[{i}][{j}]"
                return BadRequest(f"{where} {problem}")
        if len(row) != N_FEATURES:
            return BadRequest(f"instances[{i}] has {len(row)} values: {expected}")
    return BadRequest(f'"instances" could not be read as numbers: {expected}')  # pragma: no cover


def encode_predictions(
    model_name: str,
    version: str,
    probabilities: np.ndarray,
    classes: np.ndarray,
    labels: Sequence[str],
) -> bytes:
    """The simple/V1 answer: ``{"model_name", "model_version", "predictions": [...]}``.

    Each prediction is ``{"class": int, "label": str, "probabilities": [p0, p1, p2]}``, the
    probabilities printed as the shortest text that reads back as the same float32.
    Raises IndexError if a class is not an index into ``labels``.
    """
    probabilities = np.ascontiguousarray(probabilities, dtype=np.float32)
    predictions = [
        {"class": c, "label": labels[c], "probabilities": row}
        for c, row in zip(np.asarray(classes).tolist(), probabilities)
    ]
    return orjson.dumps(
        {"model_name": model_name, "model_version": version, "predictions": predictions},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


# ------------------------------------------------------------------------------------- V2


def parse_header_length(value: str | None) -> int | None:
    """The ``Inference-Header-Content-Length`` header's value as an int; None if absent.

    Raises BadRequest if it is not a non-negative decimal integer.
    """
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BadRequest(
            f"{HEADER_LENGTH_HEADER} must be a non-negative integer, the size in bytes of the "
            f"JSON part of the body; got {_show(value)}"
        )
    return int(text)


def decode_infer(body: bytes, header_length: int | None, max_rows: int) -> InferRequest:
    """Decode a V2 inference request, JSON or with binary tensor data.

    ``header_length`` is the ``Inference-Header-Content-Length`` value (see
    ``parse_header_length``): the first ``header_length`` bytes are the JSON, the rest the
    raw little-endian input tensors, in input order, for inputs declaring
    ``parameters.binary_data_size``.

    Raises BadRequest (400) for: a body or header that is not a UTF-8 JSON object; anything
    but exactly one input named ``input``; a shape other than [N, 4] of non-negative integers
    with N >= 1; a datatype other than FP32, FP64, INT32 or INT64 (other V2 datatypes are
    "unsupported", other strings unknown); data whose element count differs from the shape, or
    holding anything but finite numbers within float32's range (INT data: whole numbers within
    the type's range); binary sizes that disagree with the shape or with the body; unknown or
    repeated outputs; classification other than 1..3 on ``probabilities``.
    Raises PayloadTooLarge (413) for N > ``max_rows``.
    """
    if header_length is None:
        header = body
    else:
        if header_length > len(body):
            raise BadRequest(
                f"{HEADER_LENGTH_HEADER} is {header_length} but the body has only {len(body)} "
                "bytes: it must be the size of the JSON part at the start of the body"
            )
        header = body[:header_length]
    what = "inference request" if header_length is None else "inference request header"
    after_json = (
        f"the JSON document ends before that: if binary tensor data follows it, send the "
        f"{HEADER_LENGTH_HEADER} header with the size of the JSON part"
        if header_length is None
        else ""
    )
    doc = _load_json(header, what, _INFER_EXAMPLE, after_json)
    if type(doc) is not dict:
        raise BadRequest(
            f"{what} must be a JSON object such as {_INFER_EXAMPLE}, got {_json_kind(doc)}"
        )
    request_id = doc.get("id")
    if request_id is not None and type(request_id) is not str:
        raise BadRequest(f'"id" must be a string, got {_json_kind(request_id)}')
    binary_default = _parameters(doc, "request").get("binary_data_output", False)
    if type(binary_default) is not bool:
        raise BadRequest(
            f'"binary_data_output" must be true or false, got {_json_kind(binary_default)}'
        )

    if "inputs" not in doc:
        raise BadRequest(
            f'{what} has no "inputs": "inputs" must be a list holding {_INPUT_SPEC}, such as '
            f"{_INFER_EXAMPLE}"
        )
    inputs = doc["inputs"]
    if type(inputs) is not list:
        raise BadRequest(
            f'"inputs" must be a list holding one tensor named "{INPUT_NAME}", such as '
            f"{_INFER_EXAMPLE}; got {_json_kind(inputs)}"
        )
    if not inputs:
        raise BadRequest(f'"inputs" is empty: send {_INPUT_SPEC}, such as {_INFER_EXAMPLE}')
    for i, entry in enumerate(inputs):
        if type(entry) is not dict:
            raise BadRequest(
                f"inputs[{i}] must be an object, an input tensor such as {_TENSOR_EXAMPLE}; "
                f"got {_json_kind(entry)}"
            )
    if len(inputs) != 1:
        names = ", ".join(_show(t["name"]) if "name" in t else 'one without "name"' for t in inputs)
        raise BadRequest(
            f'the model takes exactly one input named "{INPUT_NAME}", got {len(inputs)} '
            f"input(s): {names}"
        )
    tensor = inputs[0]
    if "name" not in tensor:
        raise BadRequest(
            f'inputs[0] has no "name": the model takes {_INPUT_SPEC}, such as {_INFER_EXAMPLE}'
        )
    if tensor["name"] != INPUT_NAME:
        raise BadRequest(
            f'the model takes exactly one input named "{INPUT_NAME}", got one named '
            f'{_show(tensor["name"])}'
        )
    rows = _check_shape(tensor.get("shape", _MISSING), max_rows)
    datatype = _check_datatype(tensor.get("datatype", _MISSING))
    tensor_parameters = _parameters(tensor, _INPUT)
    if "shared_memory_region" in tensor_parameters:
        raise BadRequest(
            f"{_INPUT} uses shared memory, which this server does not support: send the "
            'values in "data" or as binary tensor data'
        )
    outputs = _requested_outputs(doc.get("outputs"), binary_default)

    binary_size = tensor_parameters.get("binary_data_size")
    if binary_size is not None:
        if "data" in tensor:
            raise BadRequest(
                f'{_INPUT} has both "data" and parameters.binary_data_size: send its values '
                "one way only"
            )
        if header_length is None:
            raise BadRequest(
                f"{_INPUT} declares binary_data_size but the request has no "
                f"{HEADER_LENGTH_HEADER} header: send that header with the size of the JSON part"
            )
        array = _binary_input(body, header_length, binary_size, rows, datatype)
    else:
        if header_length is not None and len(body) != header_length:
            raise BadRequest(
                f"the body holds {len(body) - header_length} bytes after the "
                f"{header_length}-byte JSON header, but the inputs declare 0 bytes of binary "
                "data (no parameters.binary_data_size)"
            )
        if "data" not in tensor:
            raise BadRequest(
                f'{_INPUT} has no "data": send its values in "data", or as binary tensor data '
                "declared by parameters.binary_data_size"
            )
        array = _json_input(tensor["data"], rows, datatype)
    return InferRequest(request_id, array, outputs)


def _check_shape(shape: Any, max_rows: int) -> int:
    """The row count N of a shape [N, 4] (``_MISSING`` if absent).

    Raises BadRequest, or PayloadTooLarge if N > max_rows.
    """
    expected = f"expected [N, {N_FEATURES}] with 1 <= N <= {max_rows}"
    if shape is _MISSING:
        raise BadRequest(
            f'{_INPUT} has no "shape": {expected}, such as "shape": [1, {N_FEATURES}]'
        )
    if (
        type(shape) is not list
        or len(shape) != 2
        or not all(type(d) is int and 0 <= d <= _INT64_MAX for d in shape)
    ):
        raise BadRequest(
            f"{_INPUT} has shape {_show(shape)}: {expected}, as a list of two non-negative integers"
        )
    rows, width = shape
    if width != N_FEATURES:
        raise BadRequest(f"{_INPUT} has shape {_show(shape)}, {width} features per row: {expected}")
    if rows == 0:
        raise BadRequest(
            f"{_INPUT} has shape {_show(shape)}, an empty batch: send at least one row"
        )
    if rows > max_rows:
        raise PayloadTooLarge(
            f"{_INPUT} has {rows} rows, more than the {max_rows} allowed per request: "
            "split the batch"
        )
    return rows


def _check_datatype(datatype: Any) -> str:
    """The input's datatype (``_MISSING`` if absent) if the model accepts it. Raises BadRequest."""
    if type(datatype) is str and datatype in INPUT_DATATYPES:
        return datatype
    if datatype is _MISSING:
        raise BadRequest(
            f'{_INPUT} has no "datatype": send {_ACCEPTED}, such as "datatype": "FP32"'
        )
    if type(datatype) is str and datatype in V2_DATATYPES:
        raise BadRequest(
            f"{_INPUT} has unsupported datatype {datatype}: send {_ACCEPTED}"
        )
    raise BadRequest(
        f"{_INPUT} has unknown datatype {_show(datatype)}: send {_ACCEPTED}"
    )


def _binary_input(
    body: bytes, header_length: int, size: Any, rows: int, datatype: str
) -> np.ndarray:
    """The input tensor from the raw bytes after the JSON header. Raises BadRequest."""
    dtype = INPUT_DATATYPES[datatype]
    count = rows * N_FEATURES
    if type(size) is not int or size < 0:
        raise BadRequest(
            f"{_INPUT} parameters.binary_data_size must be a non-negative integer, "
            f"got {_json_kind(size)}"
        )
    expected = count * dtype.itemsize
    if size != expected:
        raise BadRequest(
            f"{_INPUT} declares binary_data_size {size} but shape [{rows}, {N_FEATURES}] of "
            f"{datatype} takes {expected} bytes ({count} values of {dtype.itemsize} bytes)"
        )
    remaining = len(body) - header_length
    if remaining != size:
        raise BadRequest(
            f"the body holds {remaining} bytes after the {header_length}-byte JSON header, "
            f"but the inputs declare {size} bytes of binary data"
        )
    flat = np.frombuffer(body, dtype=dtype, count=count, offset=header_length)
    bad = _first_out_of_float32(flat)
    if bad is not None:
        raise BadRequest(
            f"{_INPUT} binary value {bad} (row {bad // N_FEATURES}, column {bad % N_FEATURES}) "
            f"is {flat[bad].item()!r}: every value must be a finite number within float32's range"
        )
    return _to_float32(flat, rows)


def _json_input(data: Any, rows: int, datatype: str) -> np.ndarray:
    """The input tensor from its JSON ``data``, flat or nested. Raises BadRequest."""
    count = rows * N_FEATURES
    if type(data) is not list:
        raise BadRequest(
            f'{_INPUT} "data" must be a list of {count} numbers (flat, or nested as the shape), '
            f"got {_json_kind(data)}"
        )
    if count <= _SMALL_VALUES and datatype in ("FP32", "FP64") and len(data) in (rows, count):
        small = _small_float32(data, rows)
        if small is not None:
            return small
    try:
        array = np.array(data)
    except (ValueError, TypeError):  # ragged nesting, or deeper than numpy's 64 dimensions
        array = None
    if array is None or array.dtype.kind not in "fiu":
        raise _data_problem(data)
    if array.size != count:
        raise BadRequest(
            f'{_INPUT} has {array.size} values in "data" but shape [{rows}, {N_FEATURES}] '
            f"needs {count}"
        )
    if _holds_booleans(data, array):
        raise _data_problem(data)
    flat = array.reshape(-1)
    if datatype in ("INT32", "INT64"):
        _check_integers(flat, datatype)
    else:
        bad = _first_out_of_float32(flat)
        if bad is not None:
            raise BadRequest(
                f'{_INPUT} "data" value {bad} (row {bad // N_FEATURES}, column '
                f"{bad % N_FEATURES}) is {flat[bad].item()!r}: outside the float32 range "
                "(magnitude at most 3.4e38)"
            )
    return _to_float32(flat, rows)


def _check_integers(flat: np.ndarray, datatype: str) -> None:
    """Check INT32/INT64 data given as JSON: whole numbers within the type. Raises BadRequest."""
    info = np.iinfo(np.int32 if datatype == "INT32" else np.int64)
    if flat.dtype.kind == "f":  # 2.0 is whole; huge JSON integers also arrive as floats
        ok = (flat == np.trunc(flat)) & (flat >= float(info.min)) & (flat < float(info.max) + 1)
    elif flat.dtype.kind == "u":  # only if some value exceeds INT64's maximum
        ok = flat <= info.max
    else:
        ok = (flat >= info.min) & (flat <= info.max)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise BadRequest(
            f'{_INPUT} "data" value {bad} (row {bad // N_FEATURES}, column {bad % N_FEATURES}) '
            f"is {flat[bad].item()!r}: {datatype} data must be whole numbers within the "
            f"{datatype} range"
        )


def _data_problem(data: list[Any]) -> BadRequest:
    """The error naming the first bad value of ``data``, or saying that it is ragged."""
    stack: list[tuple[Any, str]] = [(data, "data")]
    while stack:  # in document order; a loop, since nesting can be deeper than Python's stack
        value, path = stack.pop()
        if type(value) is list:
            stack.extend((value[i], f"{path}[{i}]") for i in reversed(range(len(value))))
            continue
        problem = _value_problem(value)
        if problem is not None:
            return BadRequest(f"{_INPUT} {path} {problem}")
    return BadRequest(
        f'{_INPUT} "data" is ragged: nested lists must have equal lengths; send a flat list '
        f"of N*{N_FEATURES} numbers or nest it as the shape [N, {N_FEATURES}]"
    )


def _requested_outputs(outputs: Any, binary_default: bool) -> list[RequestedOutput]:
    """The outputs to return, in order; both when none are named. Raises BadRequest."""
    if outputs is None or outputs == []:
        return [RequestedOutput(name, binary_default) for name in OUTPUT_NAMES]
    if type(outputs) is not list:
        raise BadRequest(
            f'"outputs" must be a list such as [{{"name": "{PROBABILITIES}"}}], '
            f"got {_json_kind(outputs)}"
        )
    known = " and ".join(f'"{n}"' for n in OUTPUT_NAMES)
    requested: list[RequestedOutput] = []
    for i, output in enumerate(outputs):
        if type(output) is not dict:
            raise BadRequest(
                f'outputs[{i}] must be an object such as {{"name": "{PROBABILITIES}"}}, '
                f"got {_json_kind(output)}"
            )
        if "name" not in output:
            raise BadRequest(f'outputs[{i}] has no "name": the model\'s outputs are {known}')
        name = output["name"]
        if type(name) is not str or name not in OUTPUT_NAMES:
            raise BadRequest(f"unknown output {_show(name)}: the model's outputs are {known}")
        if any(r.name == name for r in requested):
            raise BadRequest(f'output "{name}" is requested twice: name each output once')
        parameters = _parameters(output, f'output "{name}"')
        if "shared_memory_region" in parameters:
            raise BadRequest(
                f'output "{name}" asks for shared memory, which this server does not support: '
                "leave out the shared_memory_* parameters"
            )
        binary = parameters.get("binary_data", binary_default)
        if type(binary) is not bool:
            raise BadRequest(
                f'output "{name}" parameters.binary_data must be true or false, '
                f"got {_json_kind(binary)}"
            )
        top_k = parameters.get("classification", 0)
        if type(top_k) is not int:
            raise BadRequest(
                f'output "{name}" parameters.classification must be an integer from 1 to '
                f"{N_CLASSES}, got {_json_kind(top_k)}"
            )
        if top_k != 0 and name != PROBABILITIES:
            raise BadRequest(
                f'classification is only available on output "{PROBABILITIES}", not "{name}"'
            )
        if top_k != 0 and not 1 <= top_k <= N_CLASSES:
            raise BadRequest(
                f'output "{name}" parameters.classification must be from 1 to {N_CLASSES} '
                f"(the number of classes), got {top_k}"
            )
        requested.append(RequestedOutput(name, binary, top_k))
    return requested


def classification_strings(
    probabilities: np.ndarray, labels: Sequence[str], top_k: int
) -> list[str]:
    """Triton's classification results, row-major: ``"<probability>:<index>:<label>"``.

    The top ``top_k`` classes of each row by probability, highest first (ties: lower index
    first); the probability printed as Triton prints it (C's ``%f``, via std::to_string).
    """
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    top = np.take_along_axis(probabilities, order, axis=1)
    return [
        f"{p:f}:{i}:{labels[i]}"
        for p, i in zip(top.ravel().tolist(), order.ravel().tolist())
    ]


def _serialize_bytes(strings: Sequence[str]) -> bytes:
    """A BYTES tensor in binary form: each element a 4-byte little-endian length, then its bytes."""
    encoded = [s.encode() for s in strings]
    return b"".join(itertools.chain.from_iterable((struct.pack("<I", len(b)), b) for b in encoded))


def encode_infer(
    model_name: str,
    version: str,
    request: InferRequest,
    probabilities: np.ndarray,
    classes: np.ndarray,
    labels: Sequence[str],
) -> tuple[bytes, dict[str, str]]:
    """The V2 response body for ``request`` and the headers it needs.

    Outputs come in the order requested: ``probabilities`` FP32 [N, 3], ``class`` INT64 [N],
    or, with classification k, ``probabilities`` as BYTES [N, k]. Binary outputs carry
    ``parameters.binary_data_size`` instead of ``data`` and their raw little-endian bytes follow
    the JSON in output order. The headers always hold ``Content-Type`` (application/json, or
    application/octet-stream when any output is binary) and, with binary outputs,
    ``Inference-Header-Content-Length``. Raises IndexError if a class index is not in ``labels``.
    """
    probabilities = np.ascontiguousarray(probabilities, dtype=np.float32)
    classes = np.ascontiguousarray(classes, dtype=np.int64)
    rows = len(probabilities)
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output in request.outputs:
        values: Any
        if output.classification:
            strings = classification_strings(probabilities, labels, output.classification)
            datatype, shape = "BYTES", [rows, output.classification]
            values = strings
            raw = _serialize_bytes(strings) if output.binary else b""
        elif output.name == PROBABILITIES:
            datatype, shape = "FP32", [rows, N_CLASSES]
            values = probabilities.reshape(-1)
            raw = values.astype("<f4", copy=False).tobytes() if output.binary else b""
        else:
            datatype, shape = "INT64", [rows]
            values = classes.reshape(-1)
            raw = values.astype("<i8", copy=False).tobytes() if output.binary else b""
        entry: dict[str, Any] = {"name": output.name, "datatype": datatype, "shape": shape}
        if output.binary:
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = values
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": version}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = entries
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"Content-Type": JSON_CONTENT_TYPE}
    return b"".join([header, *chunks]), {
        "Content-Type": BINARY_CONTENT_TYPE,
        HEADER_LENGTH_HEADER: str(len(header)),
    }
