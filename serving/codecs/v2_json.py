"""V2 (Open Inference Protocol, KServe/Triton) ``/infer``: the request and response documents.

The request's JSON names its one input, with values in ``"data"`` or as binary tensor data
(read by ``serving.codecs.v2_binary``), and the outputs it wants, raw or as Triton's
classification extension; the response lists them, as JSON ``"data"`` or binary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelrepo import CLASS, INPUT_NAME, PROBABILITIES
from serving.errors import JSON_CONTENT_TYPE
from serving.codecs.checks import (
    BIG_BODY,
    PLACEHOLDER,
    _INPUT,
    _SMALL_VALUES,
    INPUT_DATATYPES,
    V2_DATATYPES,
    ModelShape,
    _chunked_numbers,
    _first_out_of_float32,
    _holds_booleans,
    _json_kind,
    _list_span,
    _load_json,
    _show,
    _small_float32,
    _to_float32,
    _value_problem,
    without_list,
)
from serving.codecs.v2_binary import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH_HEADER,
    _binary_input,
    _serialize_bytes,
)
from serving.errors import BadRequest, PayloadTooLarge

_INT64_MAX = 2**63 - 1

OUTPUT_NAMES = (PROBABILITIES, CLASS)
# The V2 protocol extensions these codecs implement, as the server metadata (GET /v2) names them.
SERVER_EXTENSIONS = ("binary_tensor_data", "classification")

_ACCEPTED = "FP32 (or FP64, INT32, INT64)"
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

    ``inputs`` is float32, C-contiguous, shape (N, F); it may be a read-only view of the
    request body (binary tensor data).
    """

    id: str | None
    inputs: np.ndarray
    outputs: list[RequestedOutput]


def _parameters(owner: dict[str, Any], what: str) -> dict[str, Any]:
    """The optional ``parameters`` object of a request, input or output. Raises BadRequest."""
    parameters = owner.get("parameters")
    if parameters is None:
        return {}
    if type(parameters) is not dict:
        raise BadRequest(f'{what} "parameters" must be a JSON object, got {_json_kind(parameters)}')
    return parameters


def decode_infer(body: bytes, header_length: int | None, shape: ModelShape,
                 max_rows: int) -> InferRequest:
    """Decode a V2 inference request, JSON or with binary tensor data.

    ``header_length`` is the ``Inference-Header-Content-Length`` value (see
    ``parse_header_length``): the first ``header_length`` bytes are the JSON, the rest the
    raw little-endian input tensors, in input order, for inputs declaring
    ``parameters.binary_data_size``.

    ``shape`` is the model's: F = ``shape.n_features`` columns, classification up to
    K = ``shape.n_classes``; with ``shape.impute``, JSON null and binary NaN are missing values,
    passed on as NaN.

    Raises BadRequest (400) for: a body or header that is not a UTF-8 JSON object; anything
    but exactly one input named ``input``; a shape other than [N, F] of non-negative integers
    with N >= 1; a datatype other than FP32, FP64, INT32 or INT64 (other V2 datatypes are
    "unsupported", other strings unknown); data whose element count differs from the shape, or
    holding anything but finite numbers within float32's range (INT data: whole numbers within
    the type's range); binary sizes that disagree with the shape or with the body; unknown or
    repeated outputs; classification other than 1..K on ``probabilities``.
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
    example = shape.infer_example
    # A big JSON body's flat "data" is read apart from the rest (see _list_span), so that its
    # values never all exist as Python floats at once; anything unusual takes the full parse.
    span = _list_span(body, b'"data"') if header_length is None and len(body) >= BIG_BODY \
        else None
    doc = _MISSING
    if span is not None:
        try:
            doc = orjson.loads(without_list(body, span))
        except orjson.JSONDecodeError:
            span = None  # the full parse below says what is wrong, and where
    if doc is _MISSING:
        doc = _load_json(header, what, example, after_json)
    if type(doc) is not dict:
        raise BadRequest(
            f"{what} must be a JSON object such as {example}, got {_json_kind(doc)}"
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
            f'{what} has no "inputs": "inputs" must be a list holding {shape.input_spec}, '
            f"such as {example}"
        )
    inputs = doc["inputs"]
    if type(inputs) is not list:
        raise BadRequest(
            f'"inputs" must be a list holding one tensor named "{INPUT_NAME}", such as '
            f"{example}; got {_json_kind(inputs)}"
        )
    if not inputs:
        raise BadRequest(f'"inputs" is empty: send {shape.input_spec}, such as {example}')
    for i, entry in enumerate(inputs):
        if type(entry) is not dict:
            raise BadRequest(
                f"inputs[{i}] must be an object, an input tensor such as "
                f"{shape.tensor_example}; got {_json_kind(entry)}"
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
            f'inputs[0] has no "name": the model takes {shape.input_spec}, such as {example}'
        )
    if tensor["name"] != INPUT_NAME:
        raise BadRequest(
            f'the model takes exactly one input named "{INPUT_NAME}", got one named '
            f'{_show(tensor["name"])}'
        )
    rows = _check_shape(tensor.get("shape", _MISSING), shape, max_rows)
    datatype = _check_datatype(tensor.get("datatype", _MISSING))
    tensor_parameters = _parameters(tensor, _INPUT)
    if "shared_memory_region" in tensor_parameters:
        raise BadRequest(
            f"{_INPUT} uses shared memory, which this server does not support: send the "
            'values in "data" or as binary tensor data'
        )
    outputs = _requested_outputs(doc.get("outputs"), binary_default, shape.n_classes)

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
        array = _binary_input(body, header_length, binary_size, rows, datatype, shape)
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
        data = tensor["data"]
        chunked = None
        if span is not None and type(data) is str and data == PLACEHOLDER:
            if datatype in ("FP32", "FP64"):
                chunked = _chunked_numbers(body, span, shape.n_features, rows, False)
            if chunked is None:  # something to word: the values as the full parse reads them
                data = _load_json(body, what, example)["inputs"][0]["data"]
        array = chunked if chunked is not None else _json_input(data, rows, datatype, shape)
    return InferRequest(request_id, array, outputs)


def _check_shape(tensor_shape: Any, shape: ModelShape, max_rows: int) -> int:
    """The row count N of a tensor shape [N, F] (``_MISSING`` if absent).

    Raises BadRequest, or PayloadTooLarge if N > max_rows.
    """
    width = shape.n_features
    expected = (f"expected [N, {width}] with 1 <= N <= {max_rows} (model {shape.model} has "
                f"{width} feature{'s' if width != 1 else ''}: {shape.names_text})")
    if tensor_shape is _MISSING:
        raise BadRequest(
            f'{_INPUT} has no "shape": {expected}, such as "shape": [1, {width}]'
        )
    if (
        type(tensor_shape) is not list
        or len(tensor_shape) != 2
        or not all(type(d) is int and 0 <= d <= _INT64_MAX for d in tensor_shape)
    ):
        raise BadRequest(
            f"{_INPUT} has shape {_show(tensor_shape)}: {expected}, as a list of two "
            "non-negative integers"
        )
    rows, columns = int(tensor_shape[0]), int(tensor_shape[1])  # checked integers above
    if columns != width:
        raise BadRequest(
            f"{_INPUT} has shape {_show(tensor_shape)}, {columns} features per row: {expected}")
    if rows == 0:
        raise BadRequest(
            f"{_INPUT} has shape {_show(tensor_shape)}, an empty batch: send at least one row"
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


def _json_input(data: Any, rows: int, datatype: str, shape: ModelShape) -> np.ndarray:
    """The input tensor (rows, F) from its JSON ``data``, flat or nested. Raises BadRequest."""
    width = shape.n_features
    count = rows * width
    if type(data) is not list:
        raise BadRequest(
            f'{_INPUT} "data" must be a list of {count} numbers (flat, or nested as the shape), '
            f"got {_json_kind(data)}"
        )
    if count <= _SMALL_VALUES and datatype in ("FP32", "FP64") and len(data) in (rows, count):
        small = _small_float32(data, rows, width, shape.impute)
        if small is not None:
            return small
    try:
        array = np.array(data)
    except (ValueError, TypeError):  # ragged nesting, or deeper than numpy's 64 dimensions
        array = None
    imputing = array is not None and array.dtype.kind == "O" and shape.impute
    if imputing:
        # null among the values: check each one, then read null as NaN.
        problem = _value_problem_in(data, impute=True)
        if problem is not None:
            raise problem
        array = np.array(data, dtype=np.float64)
    if array is None or array.dtype.kind not in "fiu":
        raise _data_problem(data, shape)
    if array.size != count:
        raise BadRequest(
            f'{_INPUT} has {array.size} values in "data" but shape [{rows}, {width}] '
            f"needs {count}"
        )
    flat = array.reshape(-1)
    if imputing:  # every value checked one by one above
        if datatype in ("INT32", "INT64"):
            _check_integers(flat, datatype, width, allow_nan=True)
        return _to_float32(flat, rows, width)
    if _holds_booleans(data, array):
        raise _data_problem(data, shape)
    if datatype in ("INT32", "INT64"):
        _check_integers(flat, datatype, width)
    else:
        bad = _first_out_of_float32(flat)
        if bad is not None:
            raise BadRequest(
                f'{_INPUT} "data" value {bad} (row {bad // width}, column '
                f"{bad % width}) is {flat[bad].item()!r}: outside the float32 range "
                "(magnitude at most 3.4e38)"
            )
    return _to_float32(flat, rows, width)


def _check_integers(flat: np.ndarray, datatype: str, width: int,
                    allow_nan: bool = False) -> None:
    """Check INT32/INT64 data given as JSON: whole numbers within the type (or NaN, a missing
    value, with ``allow_nan``). Raises BadRequest."""
    info = np.iinfo(np.int32 if datatype == "INT32" else np.int64)
    if flat.dtype.kind == "f":  # 2.0 is whole; huge JSON integers also arrive as floats
        ok = (flat == np.trunc(flat)) & (flat >= float(info.min)) & (flat < float(info.max) + 1)
        if allow_nan:
            ok |= np.isnan(flat)
    elif flat.dtype.kind == "u":  # only if some value exceeds INT64's maximum
        ok = flat <= info.max
    else:
        ok = (flat >= info.min) & (flat <= info.max)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise BadRequest(
            f'{_INPUT} "data" value {bad} (row {bad // width}, column {bad % width}) '
            f"is {flat[bad].item()!r}: {datatype} data must be whole numbers within the "
            f"{datatype} range"
        )


def _value_problem_in(data: list[Any], impute: bool = False) -> BadRequest | None:
    """The error naming the first bad value of ``data`` (null is fine with ``impute``), or
    None if every value is a number."""
    stack: list[tuple[Any, str]] = [(data, "data")]
    while stack:  # in document order; a loop, since nesting can be deeper than Python's stack
        value, path = stack.pop()
        if type(value) is list:
            stack.extend((value[i], f"{path}[{i}]") for i in reversed(range(len(value))))
            continue
        if value is None and impute:
            continue
        problem = _value_problem(value)
        if problem is not None:
            return BadRequest(f"{_INPUT} {path} {problem}")
    return None


def _data_problem(data: list[Any], shape: ModelShape) -> BadRequest:
    """The error naming the first bad value of ``data``, or saying that it is ragged."""
    width = shape.n_features
    return _value_problem_in(data, shape.impute) or BadRequest(
        f'{_INPUT} "data" is ragged: nested lists must have equal lengths; send a flat list '
        f"of N*{width} numbers or nest it as the shape [N, {width}]"
    )


def _requested_outputs(outputs: Any, binary_default: bool,
                       n_classes: int) -> list[RequestedOutput]:
    """The outputs to return, in order; both when none are named; classification up to
    ``n_classes``. Raises BadRequest."""
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
                f"{n_classes}, got {_json_kind(top_k)}"
            )
        if top_k != 0 and name != PROBABILITIES:
            raise BadRequest(
                f'classification is only available on output "{PROBABILITIES}", not "{name}"'
            )
        if top_k != 0 and not 1 <= top_k <= n_classes:
            raise BadRequest(
                f'output "{name}" parameters.classification must be from 1 to {n_classes} '
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


def encode_infer(
    model_name: str,
    version: str,
    request: InferRequest,
    probabilities: np.ndarray,
    classes: np.ndarray,
    labels: Sequence[str],
) -> tuple[bytes, dict[str, str]]:
    """The V2 response body for ``request`` and the headers it needs.

    Outputs come in the order requested: ``probabilities`` FP32 [N, K], ``class`` INT64 [N],
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
            datatype, shape = "FP32", [rows, probabilities.shape[1]]
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
