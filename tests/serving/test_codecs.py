"""Unit tests of serving.codecs: pure functions over bytes and numpy, no server.

Every format is round-tripped; every bad input is a parametrized case asserting the exception
class, the HTTP status and the words of the message that say what was wrong and what is
expected. tritonclient, the client users really have, builds requests and parses responses to
prove wire compatibility with Triton's JSON, binary tensor data and classification extensions.
The last test holds the package's modules to their one-way imports.
"""

from __future__ import annotations

import ast
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

import serving.codecs
from serving.codecs import (
    BINARY_CONTENT_TYPE,
    FLOAT32_MAX,
    HEADER_LENGTH_HEADER,
    JSON_CONTENT_TYPE,
    InferRequest,
    ModelShape,
    RequestedOutput,
    classification_strings,
    decode_infer,
    decode_instances,
    encode_infer,
    encode_predictions,
    parse_header_length,
)
from serving.errors import BadRequest, PayloadTooLarge, SoftserveError

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LABELS = ["setosa", "versicolor", "virginica"]
MAX_ROWS = 5
IRIS = ModelShape("iris", NAMES, len(LABELS))
X = np.array(
    [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]], dtype=np.float32
)
X_INT = np.array([[5, 3, 1, 0], [6, 2, 4, 1], [7, 3, 6, 2]])
PROBABILITIES = np.array([[0.97, 0.02, 0.01], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]], dtype=np.float32)
CLASSES = np.array([0, 2, 1], dtype=np.int64)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def assert_input_array(array: np.ndarray, expected: np.ndarray) -> None:
    assert array.dtype == np.float32
    assert array.shape == expected.shape
    assert array.flags.c_contiguous and array.flags.aligned
    np.testing.assert_array_equal(array, expected.astype(np.float32))


def v2_body(
    data: Any = None, *, shape: Any = (3, 4), datatype: Any = "FP32", **extra: Any
) -> bytes:
    tensor: dict[str, Any] = {"name": "input", "shape": list(shape), "datatype": datatype}
    tensor["data"] = X.ravel().tolist() if data is None else data
    return dumps({"inputs": [tensor], **extra})


def binary_body(
    raw: bytes, *, shape: Any = (3, 4), datatype: str = "FP32", size: Any = None, **extra: Any
) -> tuple[bytes, int]:
    """A V2 request with binary tensor data: (body, header length)."""
    tensor = {
        "name": "input",
        "shape": list(shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw) if size is None else size},
    }
    header = dumps({"inputs": [tensor], **extra})
    return header + raw, len(header)


# ------------------------------------------------------------------------- decode_instances


def test_instances_as_lists_round_trip() -> None:
    body = dumps({"instances": X.tolist()})
    assert_input_array(decode_instances(body, IRIS, MAX_ROWS), X)


def test_instances_as_objects_round_trip() -> None:
    rows = [dict(zip(reversed(NAMES), reversed(row))) for row in X.tolist()]  # key order free
    assert_input_array(decode_instances(dumps({"instances": rows}), IRIS, MAX_ROWS), X)


def test_instances_accept_integers_and_mixed_numbers() -> None:
    body = dumps({"instances": [[5, 3.5, 1, 0.2]]})
    assert_input_array(decode_instances(body, IRIS, MAX_ROWS), np.array([[5, 3.5, 1, 0.2]]))


def test_instances_exactly_max_rows() -> None:
    rows = np.tile(X[:1], (MAX_ROWS, 1))
    assert_input_array(decode_instances(dumps({"instances": rows.tolist()}), IRIS, MAX_ROWS), rows)


def test_instances_with_true_in_a_key_still_decode() -> None:
    # "true" in the text triggers the exact boolean check; it must not reject good rows.
    names = ["true_length", "false_width", "c", "d"]
    rows = [dict(zip(names, row)) for row in X.tolist()]
    shape = ModelShape("m", names, 3)
    assert_input_array(decode_instances(dumps({"instances": rows}), shape, MAX_ROWS), X)


def batch(dense: bool, rows: int = 20) -> np.ndarray:
    """Rows whose values are all 0 and 1 (dense) or mostly other numbers with a few 0 and 1."""
    if dense:
        return np.tile([[0, 1, 0.0, 1.0]], (rows, 1))
    values = np.tile(X[:1].astype(np.float64), (rows, 1))
    values[0, 0], values[-1, 0] = 1.0, 0.0
    return values


# Booleans are looked for among the values equal to 0 or 1: one at a time when they are few,
# in one pass over all value types when they are many. Both ways are exercised here.
DENSITY = pytest.mark.parametrize("dense", [False, True], ids=["few 0 and 1", "all 0 and 1"])


@DENSITY
def test_instances_zeros_and_ones_are_not_booleans(dense: bool) -> None:
    values = batch(dense)
    body = dumps({"instances": values.tolist()})
    assert_input_array(decode_instances(body, IRIS, 1000), values)


@DENSITY
@pytest.mark.parametrize("keyed", [False, True], ids=["lists", "objects"])
def test_instances_boolean_hidden_among_zeros_and_ones(dense: bool, keyed: bool) -> None:
    values: list[list[Any]] = batch(dense).tolist()
    values[-1][2] = False
    instances: list[Any] = [dict(zip(NAMES, row)) for row in values] if keyed else values
    with pytest.raises(BadRequest) as info:
        decode_instances(dumps({"instances": instances}), IRIS, 1000)
    last = len(values) - 1
    where = f'instances[{last}]["petal_length"]' if keyed else f"instances[{last}][2]"
    assert f"{where} is a boolean (false): expected a number" in info.value.message


@DENSITY
@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_infer_boolean_hidden_among_zeros_and_ones(dense: bool, nested: bool) -> None:
    clean = batch(dense)
    rows = len(clean)
    values: list[list[Any]] = clean.tolist()
    values[-1][3] = True
    data: list[Any] = values if nested else [v for row in values for v in row]
    with pytest.raises(BadRequest) as info:
        decode_infer(v2_body(data, shape=(rows, 4)), None, IRIS, 1000)
    where = f"data[{rows - 1}][3]" if nested else f"data[{rows * 4 - 1}]"
    assert f'input "input" {where} is a boolean (true)' in info.value.message
    payload = clean.tolist() if nested else clean.ravel().tolist()
    decoded = decode_infer(v2_body(payload, shape=(rows, 4)), None, IRIS, 1000)
    assert_input_array(decoded.inputs, clean)


def test_instances_huge_integer_within_float32_accepted() -> None:
    # 10**30 is beyond int64 (orjson reads it as a double) but a perfectly good float32.
    body = b'{"instances": [[1' + b"0" * 30 + b', 2, 3, 4]]}'
    decoded = decode_instances(body, IRIS, MAX_ROWS)
    assert decoded[0, 0] == np.float32(1e30)


def test_instances_at_float32_limit_accepted() -> None:
    body = dumps({"instances": [[FLOAT32_MAX, -FLOAT32_MAX, 0, 1]]})
    decoded = decode_instances(body, IRIS, MAX_ROWS)
    assert np.isfinite(decoded).all()


DEEP = b"[" * 5000 + b"]" * 5000
# A client that encodes its JSON as Latin-1: é is the one byte 0xE9, at byte offset 50.
LATIN1 = '{"instances": [[5.1, 3.5, 1.4, 0.2]], "note": "café"}'.encode("latin-1")
NUMPY_TOO_DEEP = b"[" * 100 + b"1" + b"]" * 100  # within orjson's depth, beyond numpy's 64 dims

BAD_INSTANCES: list[tuple[str, bytes, type[SoftserveError], int, list[str]]] = [
    ("empty body", b"", BadRequest, 400, ["empty", '{"instances"']),
    ("not json", b"rows please", BadRequest, 400, ["not valid UTF-8 JSON", '{"instances"']),
    ("not utf-8", b'{"instances": [[1, 2, 3, 4]], "\xff": 1}', BadRequest, 400,
     ["request body is not UTF-8: byte 0xFF at offset 31 (line 1)", "encoded as UTF-8"]),
    ("latin-1", LATIN1, BadRequest, 400,
     ["request body is not UTF-8: byte 0xE9 at offset 50 (line 1) does not begin a valid "
      "UTF-8 character", "send JSON encoded as UTF-8"]),
    ("utf-8 cut short", b'{"instances": [[1, 2, 3, 4]], "caf\xc3', BadRequest, 400,
     ["byte 0xC3 at offset 34", "cut short by the end of the request body"]),
    # orjson counts characters: each é is two bytes, so its "char 43" is byte 46.
    ("syntax error after multibyte text", '{"note": "ééé", "instances": [[1, 2, 3, 4]],}'.encode(),
     BadRequest, 400, ["trailing comma is not allowed at byte offset 46 (line 1)"]),
    ("1e400 after multibyte text", '{"é": 0, "instances": [[1, 2, 3, 1e400]]}'.encode(),
     BadRequest, 400, ["number is infinity when parsed as double at byte offset 34"]),
    ("syntax error on line 2", b'{\n "instances": [[1, 2, 3, 4]],\n}', BadRequest, 400,
     ["trailing comma is not allowed at byte offset 30 (line 2)"]),
    ("utf-8 bom", b"\xef\xbb\xbf" + dumps({"instances": [[1, 2, 3, 4]]}), BadRequest, 400,
     ["BOM", "expected a JSON object"]),
    ("utf-16", json.dumps({"instances": [[1, 2, 3, 4]]}).encode("utf-16"), BadRequest, 400,
     ["UTF-16 or UTF-32", "UTF-8"]),
    ("utf-16-le no bom", json.dumps({"instances": [[1, 2, 3, 4]]}).encode("utf-16-le"),
     BadRequest, 400, ["UTF-16 or UTF-32"]),
    ("utf-16-be no bom", json.dumps({"instances": [[1, 2, 3, 4]]}).encode("utf-16-be"),
     BadRequest, 400, ["UTF-16 or UTF-32"]),
    ("utf-32", json.dumps({"instances": [[1, 2, 3, 4]]}).encode("utf-32"), BadRequest, 400,
     ["UTF-16 or UTF-32"]),
    ("top-level list", dumps([[1, 2, 3, 4]]), BadRequest, 400,
     ["must be a JSON object", "got a list"]),
    ("top-level number", b"4", BadRequest, 400, ["must be a JSON object", "the number 4"]),
    ("no instances key", dumps({}), BadRequest, 400, ['no "instances" key', 'exactly one key']),
    ("wrong key", dumps({"inputs": [[1, 2, 3, 4]]}), BadRequest, 400,
     ['unexpected keys ["inputs"]', '"instances"']),
    ("extra key", dumps({"instances": [[1, 2, 3, 4]], "x": 1}), BadRequest, 400,
     ['unexpected keys ["x"]']),
    ("instances not a list", dumps({"instances": {"a": 1}}), BadRequest, 400,
     ["must be a list of rows", "an object"]),
    ("instances null", dumps({"instances": None}), BadRequest, 400, ["must be a list", "null"]),
    ("empty batch", dumps({"instances": []}), BadRequest, 400, ["empty", "at least one row"]),
    ("too many rows", dumps({"instances": [[1, 2, 3, 4]] * (MAX_ROWS + 1)}), PayloadTooLarge,
     413, ["6 rows", "more than the 5 allowed", "split the batch"]),
    ("short row", dumps({"instances": [[1, 2, 3]]}), BadRequest, 400,
     ["instances[0] has 3 values", "list of 4 numbers"]),
    ("long row", dumps({"instances": [[1, 2, 3, 4, 5]]}), BadRequest, 400,
     ["instances[0] has 5 values"]),
    ("ragged rows", dumps({"instances": [[1, 2, 3, 4], [1, 2, 3]]}), BadRequest, 400,
     ["instances[1] has 3 values"]),
    ("empty row", dumps({"instances": [[]]}), BadRequest, 400, ["instances[0] has 0 values"]),
    ("flat numbers", dumps({"instances": [1, 2, 3, 4]}), BadRequest, 400,
     ["instances[0] is the number 1", "list of 4 numbers"]),
    ("nested row", dumps({"instances": [[[1, 2, 3, 4]]]}), BadRequest, 400,
     ["instances[0][0] is a list", "expected a number"]),
    ("too deep for numpy", b'{"instances": [' + NUMPY_TOO_DEEP + b"]}", BadRequest, 400,
     ["instances[0][0] is a list"]),
    ("deeply nested json", b'{"instances": ' + DEEP + b"}", BadRequest, 400,
     ["not valid UTF-8 JSON", "depth"]),
    ("quoted number", dumps({"instances": [[1, "1.5", 3, 4]]}), BadRequest, 400,
     ['instances[0][1] is the string "1.5"', "numbers must not be quoted"]),
    ("all strings", dumps({"instances": [["1", "2", "3", "4"]]}), BadRequest, 400,
     ['instances[0][0] is the string "1"']),
    ("null value", dumps({"instances": [[1, 2, None, 4]]}), BadRequest, 400,
     ["instances[0][2] is null", "expected a number"]),
    ("boolean among numbers", dumps({"instances": [[1.0, True, 3.0, 4.0]]}),
     BadRequest, 400, ["instances[0][1] is a boolean (true)", "expected a number"]),
    ("false among ints", dumps({"instances": [[1, 2, 3, 4], [1, 2, 3, False]]}), BadRequest,
     400, ["instances[1][3] is a boolean (false)"]),
    ("all booleans", dumps({"instances": [[True, False, True, False]]}), BadRequest, 400,
     ["instances[0][0] is a boolean (true)"]),
    ("object value", dumps({"instances": [[1, 2, 3, {"v": 4}]]}), BadRequest, 400,
     ["instances[0][3] is an object"]),
    ("NaN literal", b'{"instances": [[1, NaN, 3, 4]]}', BadRequest, 400,
     ["not valid UTF-8 JSON", "NaN and Infinity are not JSON numbers"]),
    ("Infinity literal", b'{"instances": [[1, Infinity, 3, 4]]}', BadRequest, 400,
     ["NaN and Infinity are not JSON numbers"]),
    ("-Infinity literal", b'{"instances": [[1, -Infinity, 3, 4]]}', BadRequest, 400,
     ["NaN and Infinity are not JSON numbers"]),
    ("1e400 overflows double", b'{"instances": [[1, 1e400, 3, 4]]}', BadRequest, 400,
     ["not valid UTF-8 JSON"]),
    ("1e39 overflows float32", b'{"instances": [[1, 2, 1e39, 4]]}', BadRequest, 400,
     ["instances[0][2] is 1e+39", "outside the float32 range"]),
    ("-1e39 overflows float32", b'{"instances": [[1, 2, 3, -1e39]]}', BadRequest, 400,
     ["instances[0][3] is -1e+39", "outside the float32 range"]),
    ("huge integer", b'{"instances": [[1, 1' + b"0" * 40 + b', 3, 4]]}', BadRequest,
     400, ["instances[0][1] is 1e+40", "outside the float32 range"]),
    ("object missing key", dumps({"instances": [dict(zip(NAMES[:3], [1, 2, 3]))]}), BadRequest,
     400, ['instances[0] lacks ["petal_width"]', "exactly the keys"]),
    ("object extra key", dumps({"instances": [{**dict(zip(NAMES, [1, 2, 3, 4])), "color": 1}]}),
     BadRequest, 400, ['instances[0] has unknown keys ["color"]']),
    ("object wrong keys", dumps({"instances": [{"a": 1, "b": 2, "c": 3, "d": 4}]}), BadRequest,
     400, ["lacks", "has unknown keys", '"sepal_length"']),
    ("object then list", dumps({"instances": [dict(zip(NAMES, [1, 2, 3, 4])), [1, 2, 3, 4]]}),
     BadRequest, 400, ["instances[1] is a list but instances[0] is an object"]),
    ("list then object", dumps({"instances": [[1, 2, 3, 4], dict(zip(NAMES, [1, 2, 3, 4]))]}),
     BadRequest, 400, ["instances[1] is an object but instances[0] is a list", "same form"]),
    ("object quoted value", dumps({"instances": [dict(zip(NAMES, [1, "2", 3, 4]))]}),
     BadRequest, 400, ['instances[0]["sepal_width"] is the string "2"']),
    ("object boolean value", dumps({"instances": [dict(zip(NAMES, [1, 2, True, 4]))]}),
     BadRequest, 400, ['instances[0]["petal_length"] is a boolean (true)']),
    ("object null value", dumps({"instances": [dict(zip(NAMES, [1, 2, 3, None]))]}),
     BadRequest, 400, ['instances[0]["petal_width"] is null']),
]


def assert_refused(exc: SoftserveError, error: type[SoftserveError], status: int,
                   fragments: list[str]) -> None:
    """Exactly ``error``, with ``status``, and a message that says every fragment."""
    assert type(exc) is error
    assert exc.status_code == status
    for fragment in fragments:
        assert fragment in exc.message


@pytest.mark.parametrize(
    ("body", "error", "status", "fragments"),
    [case[1:] for case in BAD_INSTANCES],
    ids=[case[0] for case in BAD_INSTANCES],
)
def test_bad_instances(
    body: bytes, error: type[SoftserveError], status: int, fragments: list[str]
) -> None:
    with pytest.raises(error) as info:
        decode_instances(body, IRIS, MAX_ROWS)
    assert_refused(info.value, error, status, fragments)


# ---------------------------------------------------------------------------- decode_infer


def test_infer_flat_json() -> None:
    request = decode_infer(v2_body(id="req-7"), None, IRIS, MAX_ROWS)
    assert_input_array(request.inputs, X)
    assert request.id == "req-7"
    assert request.outputs == [RequestedOutput("probabilities"), RequestedOutput("class")]


def test_infer_nested_json() -> None:
    request = decode_infer(v2_body(X.tolist()), None, IRIS, MAX_ROWS)
    assert_input_array(request.inputs, X)
    assert request.id is None


def test_infer_single_row() -> None:
    request = decode_infer(v2_body(X[0].tolist(), shape=(1, 4)), None, IRIS, MAX_ROWS)
    assert_input_array(request.inputs, X[:1])


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("FP32", X),
        ("FP64", X.astype(np.float64)),
        ("INT32", X_INT),
        ("INT64", X_INT),
        ("INT32", X_INT.astype(np.float64)),  # 5.0 is a whole number: accepted for INT
        ("FP32", X_INT),  # JSON integers are fine numbers for FP32
    ],
)
def test_infer_json_datatypes_convert_to_float32(datatype: str, values: np.ndarray) -> None:
    request = decode_infer(v2_body(values.tolist(), datatype=datatype), None, IRIS, MAX_ROWS)
    assert_input_array(request.inputs, values)


def test_infer_integer_limits_accepted() -> None:
    data = [2**31 - 1, -(2**31), 0, 1]
    decoded = decode_infer(v2_body(data, shape=(1, 4), datatype="INT32"), None, IRIS, MAX_ROWS)
    np.testing.assert_array_equal(decoded.inputs, np.array([data], dtype=np.float32))
    data = [2**63 - 1, -(2**63), 0, 1]
    decoded = decode_infer(v2_body(data, shape=(1, 4), datatype="INT64"), None, IRIS, MAX_ROWS)
    np.testing.assert_array_equal(decoded.inputs, np.array([data], dtype=np.float32))


# Every input datatype the server accepts, with values that convert exactly to float32.
ACCEPTED_INPUTS = [
    ("FP32", X),
    ("FP64", X.astype(np.float64)),
    ("INT32", X_INT.astype(np.int32)),
    ("INT64", X_INT.astype(np.int64)),
]


@pytest.mark.parametrize(
    ("datatype", "values"), ACCEPTED_INPUTS)
@pytest.mark.parametrize("padding", [0, 1, 3], ids=["aligned?", "offset+1", "offset+3"])
def test_infer_binary_inputs(datatype: str, values: np.ndarray, padding: int) -> None:
    # Padding the JSON header moves the binary data to any alignment.
    body, header_length = binary_body(values.tobytes(), datatype=datatype, id="x" * padding)
    request = decode_infer(body, header_length, IRIS, MAX_ROWS)
    assert_input_array(request.inputs, values)
    assert request.id == "x" * padding


def test_infer_binary_fp32_aligned_is_a_view_of_the_body() -> None:
    # With the JSON header a multiple of 4 bytes long, FP32 data needs neither copy nor cast.
    padding = 0
    while (length := binary_body(X.tobytes(), id="x" * padding)[1]) % 4:
        padding += 1
    body, header_length = binary_body(X.tobytes(), id="x" * padding)
    assert header_length == length
    request = decode_infer(body, header_length, IRIS, MAX_ROWS)
    assert_input_array(request.inputs, X)
    assert np.shares_memory(request.inputs, np.frombuffer(body, np.uint8))
    assert not request.inputs.flags.writeable


def test_infer_header_length_equal_to_body_with_json_data() -> None:
    body = v2_body()
    request = decode_infer(body, len(body), IRIS, MAX_ROWS)
    assert_input_array(request.inputs, X)


def test_infer_outputs_default_binary_when_asked() -> None:
    request = decode_infer(v2_body(parameters={"binary_data_output": True}), None, IRIS, MAX_ROWS)
    assert request.outputs == [
        RequestedOutput("probabilities", binary=True),
        RequestedOutput("class", binary=True),
    ]


def test_infer_outputs_as_requested() -> None:
    outputs = [
        {"name": "class"},
        {"name": "probabilities", "parameters": {"binary_data": True, "classification": 2}},
    ]
    request = decode_infer(
        v2_body(outputs=outputs, parameters={"binary_data_output": False}), None, IRIS, MAX_ROWS
    )
    assert request.outputs == [
        RequestedOutput("class", binary=False),
        RequestedOutput("probabilities", binary=True, classification=2),
    ]


def test_infer_output_binary_data_overrides_request_default() -> None:
    outputs = [{"name": "class", "parameters": {"binary_data": False}}]
    request = decode_infer(
        v2_body(outputs=outputs, parameters={"binary_data_output": True}), None, IRIS, MAX_ROWS
    )
    assert request.outputs == [RequestedOutput("class", binary=False)]


def test_infer_true_outside_data_keeps_numbers() -> None:
    # true/false elsewhere in the request (ids, parameters) must not reject good data.
    body = v2_body(
        id="true false",
        parameters={"binary_data_output": True, "custom": [True, {"x": False}]},
        outputs=[{"name": "class", "parameters": {"binary_data": False}}],
    )
    assert_input_array(decode_infer(body, None, IRIS, MAX_ROWS).inputs, X)


def test_infer_exactly_max_rows() -> None:
    rows = np.tile(X[:1], (MAX_ROWS, 1))
    request = decode_infer(v2_body(rows.ravel().tolist(), shape=(MAX_ROWS, 4)), None, IRIS,
                           MAX_ROWS)
    assert_input_array(request.inputs, rows)


def infer_with(**tensor: Any) -> bytes:
    base: dict[str, Any] = {
        "name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]
    }
    base.update(tensor)
    return dumps({"inputs": [{k: v for k, v in base.items() if v is not ...}]})


def with_outputs(outputs: Any) -> bytes:
    return dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                              "data": [1, 2, 3, 4]}], "outputs": outputs})


ROW = [1.0, 2.0, 3.0, 4.0]
# A V2 request encoded as Latin-1: the é of its id is the one byte 0xE9, at byte offset 101.
INFER_LATIN1 = (
    '{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], '
    '"id": "café"}'
).encode("latin-1")
BAD_INFER: list[tuple[str, bytes, int | None, type[SoftserveError], int, list[str]]] = [
    ("empty body", b"", None, BadRequest, 400, ["empty", '"inputs"']),
    ("not json", b"{inputs}", None, BadRequest, 400, ["not valid UTF-8 JSON", '"inputs"']),
    ("utf-16", json.dumps({"inputs": []}).encode("utf-16"), None, BadRequest, 400,
     ["UTF-16 or UTF-32"]),
    ("utf-32", json.dumps({"inputs": []}).encode("utf-32-le"), None, BadRequest, 400,
     ["UTF-16 or UTF-32"]),
    ("latin-1", INFER_LATIN1, None, BadRequest, 400,
     ["inference request is not UTF-8: byte 0xE9 at offset 101 (line 1) does not begin a "
      "valid UTF-8 character", "send JSON encoded as UTF-8"]),
    ("syntax error after multibyte text", '{"id": "é", "inputs": [],}'.encode(), None,
     BadRequest, 400, ["trailing comma is not allowed at byte offset 25 (line 1)"]),
    ("top-level list", dumps([ROW]), None, BadRequest, 400, ["must be a JSON object", "a list"]),
    ("deeply nested", b'{"inputs": ' + DEEP + b"}", None, BadRequest, 400, ["depth"]),
    ("no inputs", dumps({}), None, BadRequest, 400,
     ['inference request has no "inputs": "inputs" must be a list holding one input tensor '
      'named "input", FP32, shape [N, 4], such as {"inputs": [{"name": "input"']),
    ("inputs null", dumps({"inputs": None}), None, BadRequest, 400,
     ['"inputs" must be a list', "got null"]),
    ("inputs empty", dumps({"inputs": []}), None, BadRequest, 400,
     ['"inputs" is empty: send one input tensor named "input", FP32, shape [N, 4], such as '
      '{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [']),
    ("inputs object", dumps({"inputs": {"name": "input"}}), None, BadRequest, 400,
     ['"inputs" must be a list', "an object"]),
    ("two inputs", dumps({"inputs": [{"name": "input"}, {"name": "extra"}]}), None, BadRequest,
     400, ['exactly one input named "input"', 'got 2 input(s): "input", "extra"']),
    ("two inputs, one unnamed", dumps({"inputs": [{"name": "input"}, {"shape": [1, 4]}]}), None,
     BadRequest, 400, ['got 2 input(s): "input", one without "name"']),
    ("wrong input name", infer_with(name="features"), None, BadRequest, 400,
     ['exactly one input named "input", got one named "features"']),
    ("input name missing", infer_with(name=...), None, BadRequest, 400,
     ['inputs[0] has no "name": the model takes one input tensor named "input"']),
    ("input name null", infer_with(name=None), None, BadRequest, 400, ["got one named null"]),
    ("input not an object", dumps({"inputs": ["input"]}), None, BadRequest, 400,
     ["inputs[0] must be an object", 'got the string "input"']),
    ("second input not an object", dumps({"inputs": [{"name": "input"}, []]}), None,
     BadRequest, 400, ["inputs[1] must be an object", "got a list"]),
    ("id not a string", dumps({"id": 5, "inputs": []}), None, BadRequest, 400,
     ['"id" must be a string', "the number 5"]),
    ("parameters not an object", dumps({"parameters": [1], "inputs": []}), None, BadRequest, 400,
     ['"parameters" must be a JSON object']),
    ("binary_data_output not bool", dumps({"parameters": {"binary_data_output": 1}}), None,
     BadRequest, 400, ['"binary_data_output" must be true or false']),
    ("shape missing", infer_with(shape=...), None, BadRequest, 400,
     ['input "input" has no "shape": expected [N, 4] with 1 <= N <= 5 (model iris has 4 '
      'features: sepal_length, sepal_width, petal_length, petal_width), such as "shape": [1, 4]']),
    ("shape null", infer_with(shape=None), None, BadRequest, 400,
     ["has shape null", "expected [N, 4]"]),
    ("shape rank 1", infer_with(shape=[4]), None, BadRequest, 400,
     ["has shape [4]", "two non-negative integers"]),
    ("shape rank 3", infer_with(shape=[1, 4, 1]), None, BadRequest, 400, ["has shape [1,4,1]"]),
    ("shape negative", infer_with(shape=[-1, 4]), None, BadRequest, 400,
     ["has shape [-1,4]", "non-negative"]),
    ("shape non-integer", infer_with(shape=[1.5, 4]), None, BadRequest, 400,
     ["has shape [1.5,4]"]),
    ("shape float integral", infer_with(shape=[1.0, 4]), None, BadRequest, 400,
     ["has shape [1.0,4]"]),
    ("shape string", infer_with(shape=["1", 4]), None, BadRequest, 400, ['has shape ["1",4]']),
    ("shape boolean", infer_with(shape=[True, 4]), None, BadRequest, 400, ["has shape [true,4]"]),
    ("shape absurd 10**30",
     b'{"inputs": [{"name": "input", "shape": [1000000000000000000000000000000, 4], '
     b'"datatype": "FP32", "data": [1, 2, 3, 4]}]}', None, BadRequest, 400,
     ["has shape [1e+30,4]", "expected [N, 4]"]),
    ("shape beyond int64", infer_with(shape=[2**64 - 1, 4]), None, BadRequest, 400,
     ["has shape [18446744073709551615,4]"]),
    ("shape empty batch", infer_with(shape=[0, 4], data=[]), None, BadRequest, 400,
     ["an empty batch", "at least one row"]),
    ("shape wrong width", infer_with(shape=[1, 3], data=[1, 2, 3]), None, BadRequest, 400,
     ["3 features per row", "expected [N, 4] with 1 <= N <= 5"]),
    ("too many rows", infer_with(shape=[MAX_ROWS + 1, 4], data=ROW * (MAX_ROWS + 1)), None,
     PayloadTooLarge, 413, ["6 rows", "more than the 5 allowed", "split the batch"]),
    ("huge row count", infer_with(shape=[10**12, 4]), None, PayloadTooLarge, 413,
     ["1000000000000 rows"]),
    ("datatype BOOL", infer_with(datatype="BOOL"), None, BadRequest, 400,
     ["unsupported datatype BOOL", "send FP32 (or FP64, INT32, INT64)"]),
    ("datatype UINT8", infer_with(datatype="UINT8"), None, BadRequest, 400,
     ["unsupported datatype UINT8"]),
    ("datatype FP16", infer_with(datatype="FP16"), None, BadRequest, 400,
     ["unsupported datatype FP16"]),
    ("datatype BF16", infer_with(datatype="BF16"), None, BadRequest, 400,
     ["unsupported datatype BF16"]),
    ("datatype BYTES", infer_with(datatype="BYTES"), None, BadRequest, 400,
     ["unsupported datatype BYTES"]),
    ("datatype unknown", infer_with(datatype="FLOAT"), None, BadRequest, 400,
     ['unknown datatype "FLOAT"', "send FP32"]),
    ("datatype lowercase", infer_with(datatype="fp32"), None, BadRequest, 400,
     ['unknown datatype "fp32"']),
    ("datatype missing", infer_with(datatype=...), None, BadRequest, 400,
     ['input "input" has no "datatype": send FP32 (or FP64, INT32, INT64)']),
    ("datatype null", infer_with(datatype=None), None, BadRequest, 400,
     ["unknown datatype null"]),
    ("datatype list", infer_with(datatype=["FP32"]), None, BadRequest, 400,
     ['unknown datatype ["FP32"]']),
    ("data missing", infer_with(data=...), None, BadRequest, 400,
     ['has no "data"', "binary_data_size"]),
    ("data null", infer_with(data=None), None, BadRequest, 400,
     ['"data" must be a list of 4 numbers', "got null"]),
    ("data not a list", infer_with(data=1), None, BadRequest, 400,
     ['"data" must be a list of 4 numbers', "the number 1"]),
    ("data too short", infer_with(shape=[2, 4], data=ROW), None, BadRequest, 400,
     ['has 4 values in "data" but shape [2, 4] needs 8']),
    ("data too long", infer_with(data=ROW * 2), None, BadRequest, 400,
     ['has 8 values in "data" but shape [1, 4] needs 4']),
    ("data nested too short", infer_with(shape=[2, 4], data=[ROW]), None, BadRequest, 400,
     ["has 4 values"]),
    ("data empty", infer_with(data=[]), None, BadRequest, 400, ['has 0 values in "data"']),
    ("data ragged", infer_with(shape=[2, 4], data=[ROW, [1, 2, 3]]), None, BadRequest, 400,
     ['"data" is ragged', "flat list"]),
    ("data quoted number", infer_with(data=[1, "2.5", 3, 4]), None, BadRequest, 400,
     ['data[1] is the string "2.5"', "must not be quoted"]),
    ("data nested string", infer_with(data=[[1, 2, 3, "x"]]), None, BadRequest, 400,
     ['data[0][3] is the string "x"']),
    ("data null", infer_with(data=[1, None, 3, 4]), None, BadRequest, 400,
     ["data[1] is null", "expected a number"]),
    ("data object", infer_with(data=[1, 2, {"v": 3}, 4]), None, BadRequest, 400,
     ["data[2] is an object"]),
    ("data boolean", infer_with(data=[1.0, True, 3.0, 4.0]), None, BadRequest, 400,
     ["data[1] is a boolean (true)"]),
    ("data boolean among other trues",
     dumps({"parameters": {"binary_data_output": True},
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                        "data": [1, 2, False, 4]}],
            "outputs": [{"name": "class", "parameters": {"binary_data": True}}]}),
     None, BadRequest, 400, ["data[2] is a boolean (false)"]),
    ("data all booleans", infer_with(data=[True, False, True, True]), None, BadRequest, 400,
     ["data[0] is a boolean (true)"]),
    ("data boolean INT32", infer_with(datatype="INT32", data=[1, 2, True, 4]), None, BadRequest,
     400, ["data[2] is a boolean (true)"]),
    ("data NaN", b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", '
     b'"data": [1, NaN, 3, 4]}]}', None, BadRequest, 400, ["NaN and Infinity"]),
    ("data Infinity", b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", '
     b'"data": [1, 2, -Infinity, 4]}]}', None, BadRequest, 400, ["NaN and Infinity"]),
    ("data 1e39 FP32", infer_with(data=[1, 2, 3, 1e39]), None, BadRequest, 400,
     ['"data" value 3 (row 0, column 3) is 1e+39', "outside the float32 range"]),
    ("data 1e39 FP64", infer_with(datatype="FP64", data=[[1, 2], [-1e39, 4]]), None, BadRequest,
     400, ['"data" value 2 (row 0, column 2) is -1e+39']),
    ("data huge integer FP32",
     b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", '
     b'"data": [1, 2, 3, 100000000000000000000000000000000000000000]}]}', None, BadRequest, 400,
     ["outside the float32 range"]),
    ("INT32 fraction", infer_with(datatype="INT32", data=[1, 2.5, 3, 4]), None, BadRequest, 400,
     ['"data" value 1 (row 0, column 1) is 2.5', "INT32 data must be whole numbers"]),
    ("INT32 overflow", infer_with(datatype="INT32", data=[1, 2, 2**31, 4]), None, BadRequest,
     400, ["is 2147483648", "within the INT32 range"]),
    ("INT32 underflow", infer_with(datatype="INT32", data=[-(2**31) - 1, 2, 3, 4]), None,
     BadRequest, 400, ["is -2147483649", "INT32 range"]),
    ("INT64 overflow", infer_with(datatype="INT64", data=[1, 2, 3, 2**63]), None, BadRequest,
     400, ["within the INT64 range"]),
    ("INT64 uint64 only", infer_with(datatype="INT64", data=[2**63, 2**63, 2**63, 2**63]), None,
     BadRequest, 400, ["is 9223372036854775808", "INT64 range"]),
    ("INT64 1e30", infer_with(datatype="INT64", data=[1, 2, 3, 1e30]), None, BadRequest, 400,
     ["is 1e+30", "INT64 range"]),
    ("input shared memory", infer_with(parameters={"shared_memory_region": "r"}), None,
     BadRequest, 400, ["shared memory", "not support"]),
    ("input parameters not object", infer_with(parameters=[]), None, BadRequest, 400,
     ['input "input" "parameters" must be a JSON object']),
    ("outputs not a list", with_outputs({"name": "class"}), None, BadRequest, 400,
     ['"outputs" must be a list']),
    ("output not an object", with_outputs(["class"]), None, BadRequest, 400,
     ["outputs[0] must be an object", 'the string "class"']),
    ("output unknown", with_outputs([{"name": "logits"}]), None, BadRequest, 400,
     ['unknown output "logits"', '"probabilities" and "class"']),
    ("output name missing", with_outputs([{}]), None, BadRequest, 400,
     ['outputs[0] has no "name": the model\'s outputs are "probabilities" and "class"']),
    ("output name null", with_outputs([{"name": None}]), None, BadRequest, 400,
     ["unknown output null"]),
    ("output twice", with_outputs([{"name": "class"}, {"name": "class"}]), None, BadRequest,
     400, ['output "class" is requested twice']),
    ("output binary_data not bool",
     with_outputs([{"name": "class", "parameters": {"binary_data": "yes"}}]), None, BadRequest,
     400, ["binary_data must be true or false", 'the string "yes"']),
    ("classification on class",
     with_outputs([{"name": "class", "parameters": {"classification": 1}}]), None, BadRequest,
     400, ['classification is only available on output "probabilities", not "class"']),
    ("classification too large",
     with_outputs([{"name": "probabilities", "parameters": {"classification": 4}}]), None,
     BadRequest, 400, ["classification must be from 1 to 3", "got 4"]),
    ("classification negative",
     with_outputs([{"name": "probabilities", "parameters": {"classification": -1}}]), None,
     BadRequest, 400, ["classification must be from 1 to 3", "got -1"]),
    ("classification not int",
     with_outputs([{"name": "probabilities", "parameters": {"classification": "2"}}]), None,
     BadRequest, 400, ["classification must be an integer from 1 to 3", 'the string "2"']),
    ("classification bool",
     with_outputs([{"name": "probabilities", "parameters": {"classification": True}}]), None,
     BadRequest, 400, ["classification must be an integer", "a boolean (true)"]),
    ("output shared memory",
     with_outputs([{"name": "class", "parameters": {"shared_memory_region": "r"}}]), None,
     BadRequest, 400, ["shared memory", "not support"]),
]


def _binary_cases() -> list[tuple[str, bytes, int | None, type[SoftserveError], int, list[str]]]:
    raw = X.tobytes()
    body, length = binary_body(raw)
    # Small INT32 values are bytes below 0x80, valid UTF-8: orjson finds content after the JSON.
    int32_body, int32_length = binary_body(X_INT.astype("<i4").tobytes(), datatype="INT32")
    utf8_header = binary_body(raw, id="café")[0][: -len(raw)]
    latin1_header = utf8_header.decode().encode("latin-1")
    e_acute = utf8_header.index("é".encode())  # its first byte, 0xC3
    both = dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW,
                              "parameters": {"binary_data_size": 16}}]})
    cases = [
        ("header length beyond body", body, len(body) + 1, BadRequest, 400,
         [f"{HEADER_LENGTH_HEADER} is {len(body) + 1} but the body has only {len(body)} bytes"]),
        ("header length cuts the JSON", body, length - 1, BadRequest, 400,
         ["inference request header is not valid UTF-8 JSON"]),
        ("header length zero", body, 0, BadRequest, 400, ["inference request header is empty"]),
        # 5.1 as FP32 is 33 33 A3 40: 0x33 is the ASCII "3", so the first bad byte is the third.
        ("binary without header length", body, None, BadRequest, 400,
         [f"inference request is not UTF-8: byte 0xA3 at offset {length + 2} (line 1)",
          "the JSON document ends before that: if binary tensor data follows it, send the "
          "Inference-Header-Content-Length header"]),
        ("binary UTF-8 without header length", int32_body, None, BadRequest, 400,
         [f"unexpected content after document at byte offset {int32_length} (line 1)",
          "send the Inference-Header-Content-Length header"]),
        ("binary header latin-1", latin1_header + raw, len(latin1_header), BadRequest, 400,
         [f"inference request header is not UTF-8: byte 0xE9 at offset {e_acute} (line 1)"]),
        ("header length cuts a character", utf8_header + raw, e_acute + 1, BadRequest, 400,
         [f"byte 0xC3 at offset {e_acute} (line 1) begins a character cut short by the end of "
          "the inference request header"]),
        ("binary size without header", binary_body(b"")[0], None, BadRequest, 400,
         ["declares binary_data_size but the request has no Inference-Header-Content-Length"]),
        ("binary and data", both + b"\0" * 16, len(both), BadRequest, 400,
         ['both "data" and parameters.binary_data_size', "one way only"]),
        ("binary size short of shape", *binary_body(raw[:-4]), BadRequest, 400,
         ["binary_data_size 44 but shape [3, 4] of FP32 takes 48 bytes (12 values of 4 bytes)"]),
        ("binary size for wrong dtype", *binary_body(raw, datatype="FP64"), BadRequest, 400,
         ["binary_data_size 48 but shape [3, 4] of FP64 takes 96 bytes"]),
        ("binary trailing bytes", body + b"\0", length, BadRequest, 400,
         [f"the body holds 49 bytes after the {length}-byte JSON header",
          "declare 48 bytes"]),
        ("binary missing bytes", body[:-1], length, BadRequest, 400,
         ["the body holds 47 bytes", "declare 48 bytes"]),
        ("binary size negative", *binary_body(raw, size=-48), BadRequest, 400,
         ["binary_data_size must be a non-negative integer"]),
        ("binary size not int", *binary_body(raw, size="48"), BadRequest, 400,
         ["binary_data_size must be a non-negative integer", 'the string "48"']),
        ("bytes after JSON-only request", v2_body() + b"xx", len(v2_body()), BadRequest, 400,
         ["the body holds 2 bytes after the", "declare 0 bytes"]),
        ("binary NaN", *binary_body(np.array([[1, np.nan, 3, 4]], np.float32).tobytes(),
                                    shape=(1, 4)), BadRequest, 400,
         ["binary value 1 (row 0, column 1) is", "nan", "finite number"]),
        ("binary inf", *binary_body(np.array([[1, 2, 3, 4], [1, 2, 3, -np.inf]], np.float32)
                                    .tobytes(), shape=(2, 4)), BadRequest, 400,
         ["binary value 7 (row 1, column 3)", "inf"]),
        ("binary FP64 beyond float32",
         *binary_body(np.array([[1, 2, 1e39, 4]]).tobytes(), shape=(1, 4), datatype="FP64"),
         BadRequest, 400, ["binary value 2 (row 0, column 2)", "float32's range"]),
        ("binary too many rows",
         *binary_body(np.zeros((MAX_ROWS + 1, 4), np.float32).tobytes(), shape=(MAX_ROWS + 1, 4)),
         PayloadTooLarge, 413, ["6 rows"]),
    ]
    return cases  # type: ignore[return-value]


ALL_BAD_INFER = BAD_INFER + _binary_cases()


@pytest.mark.parametrize(
    ("body", "header_length", "error", "status", "fragments"),
    [case[1:] for case in ALL_BAD_INFER],
    ids=[case[0] for case in ALL_BAD_INFER],
)
def test_bad_infer(
    body: bytes,
    header_length: int | None,
    error: type[SoftserveError],
    status: int,
    fragments: list[str],
) -> None:
    with pytest.raises(error) as info:
        decode_infer(body, header_length, IRIS, MAX_ROWS)
    assert_refused(info.value, error, status, fragments)


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("0", 0), ("123", 123), (" 42 ", 42)]
)
def test_parse_header_length(value: str | None, expected: int | None) -> None:
    assert parse_header_length(value) == expected


@pytest.mark.parametrize("value", ["", "abc", "-1", "+5", "1.5", "1e3", "٣", "9" * 19])
def test_parse_header_length_rejects(value: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_header_length(value)
    assert info.value.status_code == 400
    assert f"{HEADER_LENGTH_HEADER} must be a non-negative integer" in info.value.message


# ------------------------------------------------------------------------------- encoders


def test_encode_predictions() -> None:
    body = encode_predictions("iris", "3", PROBABILITIES, CLASSES, LABELS)
    decoded = orjson.loads(body)
    assert decoded["model_name"] == "iris"
    assert decoded["model_version"] == "3"
    assert [p["class"] for p in decoded["predictions"]] == [0, 2, 1]
    assert [p["label"] for p in decoded["predictions"]] == ["setosa", "virginica", "versicolor"]
    # Probabilities are printed as the shortest text of the float32 value: exact round trip.
    assert decoded["predictions"][0]["probabilities"] == [0.97, 0.02, 0.01]
    np.testing.assert_array_equal(
        np.array([p["probabilities"] for p in decoded["predictions"]], dtype=np.float32),
        PROBABILITIES,
    )


def test_encode_predictions_accepts_other_int_and_float_types() -> None:
    body = encode_predictions(
        "iris", "1", PROBABILITIES.astype(np.float64), CLASSES.astype(np.int32), LABELS
    )
    assert orjson.loads(body)["predictions"][1] == {
        "class": 2, "label": "virginica", "probabilities": [0.1, 0.3, 0.6]
    }


def infer_request(*outputs: RequestedOutput, request_id: str | None = None) -> InferRequest:
    return InferRequest(request_id, X, list(outputs))


def split_response(body: bytes, headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Parse a V2 response by hand: the JSON part and each binary output's raw bytes."""
    length = int(headers[HEADER_LENGTH_HEADER]) if HEADER_LENGTH_HEADER in headers else len(body)
    header = orjson.loads(body[:length])
    raw: dict[str, bytes] = {}
    offset = length
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            raw[output["name"]] = body[offset : offset + size]
            offset += size
    assert offset == len(body)
    return header, raw


def test_encode_infer_json() -> None:
    request = infer_request(
        RequestedOutput("probabilities"), RequestedOutput("class"), request_id="r1"
    )
    body, headers = encode_infer("iris", "3", request, PROBABILITIES, CLASSES, LABELS)
    assert headers == {"Content-Type": JSON_CONTENT_TYPE}
    assert orjson.loads(body) == {
        "model_name": "iris",
        "model_version": "3",
        "id": "r1",
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [3, 3],
             "data": [0.97, 0.02, 0.01, 0.1, 0.3, 0.6, 0.25, 0.5, 0.25]},
            {"name": "class", "datatype": "INT64", "shape": [3], "data": [0, 2, 1]},
        ],
    }


def test_encode_infer_without_id_and_in_requested_order() -> None:
    request = infer_request(RequestedOutput("class"))
    body, _ = encode_infer("iris", "1", request, PROBABILITIES, CLASSES, LABELS)
    decoded = orjson.loads(body)
    assert "id" not in decoded
    assert [o["name"] for o in decoded["outputs"]] == ["class"]


def test_encode_infer_binary() -> None:
    request = infer_request(
        RequestedOutput("class", binary=True), RequestedOutput("probabilities", binary=True)
    )
    body, headers = encode_infer("iris", "2", request, PROBABILITIES, CLASSES, LABELS)
    assert headers["Content-Type"] == BINARY_CONTENT_TYPE
    header, raw = split_response(body, headers)
    assert header["outputs"] == [
        {"name": "class", "datatype": "INT64", "shape": [3],
         "parameters": {"binary_data_size": 24}},
        {"name": "probabilities", "datatype": "FP32", "shape": [3, 3],
         "parameters": {"binary_data_size": 36}},
    ]
    np.testing.assert_array_equal(np.frombuffer(raw["class"], "<i8"), CLASSES)
    np.testing.assert_array_equal(
        np.frombuffer(raw["probabilities"], "<f4").reshape(3, 3), PROBABILITIES
    )


def test_encode_infer_mixed_binary_and_json() -> None:
    request = infer_request(RequestedOutput("probabilities"), RequestedOutput("class", binary=True))
    body, headers = encode_infer("iris", "2", request, PROBABILITIES, CLASSES, LABELS)
    header, raw = split_response(body, headers)
    np.testing.assert_array_equal(
        np.array(header["outputs"][0]["data"], dtype=np.float32), PROBABILITIES.ravel()
    )
    assert "data" not in header["outputs"][1]
    np.testing.assert_array_equal(np.frombuffer(raw["class"], "<i8"), CLASSES)


def test_classification_strings_follow_triton() -> None:
    # Triton: "<value>:<index>:<label>", value via std::to_string (printf "%f"), best first.
    assert classification_strings(PROBABILITIES, LABELS, 2) == [
        "0.970000:0:setosa", "0.020000:1:versicolor",
        "0.600000:2:virginica", "0.300000:1:versicolor",
        "0.500000:1:versicolor", "0.250000:0:setosa",  # a tie: the lower index first
    ]


def test_encode_infer_classification_json() -> None:
    request = infer_request(RequestedOutput("probabilities", classification=3))
    body, headers = encode_infer("iris", "1", request, PROBABILITIES, CLASSES, LABELS)
    assert headers == {"Content-Type": JSON_CONTENT_TYPE}
    (output,) = orjson.loads(body)["outputs"]
    assert output["name"] == "probabilities"
    assert output["datatype"] == "BYTES"
    assert output["shape"] == [3, 3]
    assert output["data"][:3] == [
        "0.970000:0:setosa", "0.020000:1:versicolor", "0.010000:2:virginica"
    ]


def test_encode_infer_classification_binary() -> None:
    request = infer_request(RequestedOutput("probabilities", binary=True, classification=1))
    body, headers = encode_infer("iris", "1", request, PROBABILITIES, CLASSES, LABELS)
    header, raw = split_response(body, headers)
    assert header["outputs"][0]["shape"] == [3, 1]
    strings, offset = [], 0
    while offset < len(raw["probabilities"]):
        (size,) = struct.unpack_from("<I", raw["probabilities"], offset)
        strings.append(raw["probabilities"][offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    assert strings == ["0.970000:0:setosa", "0.600000:2:virginica", "0.500000:1:versicolor"]


def test_v2_round_trip_through_decode_and_encode() -> None:
    body, length = binary_body(X.tobytes(), parameters={"binary_data_output": True}, id="rt")
    request = decode_infer(body, length, IRIS, MAX_ROWS)
    response, headers = encode_infer("iris", "9", request, PROBABILITIES, CLASSES, LABELS)
    header, raw = split_response(response, headers)
    assert header["id"] == "rt"
    assert [o["name"] for o in header["outputs"]] == ["probabilities", "class"]
    np.testing.assert_array_equal(np.frombuffer(raw["class"], "<i8"), CLASSES)


# ----------------------------------------------------------------------------- tritonclient


def triton_input(values: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("input", list(values.shape), datatype)
    tensor.set_data_from_numpy(values, binary_data=binary)
    return tensor


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(
    ("datatype", "values"), ACCEPTED_INPUTS)
def test_tritonclient_request_decodes(datatype: str, values: np.ndarray, binary: bool) -> None:
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=True, class_count=2),
        triton.InferRequestedOutput("class", binary_data=False),
    ]
    body, header_length = triton.InferenceServerClient.generate_request_body(
        [triton_input(values, datatype, binary)], outputs=outputs, request_id="tc-1"
    )
    assert (header_length is not None) == binary
    request = decode_infer(body, header_length, IRIS, MAX_ROWS)
    assert_input_array(request.inputs, values)
    assert request.id == "tc-1"
    assert request.outputs == [
        RequestedOutput("probabilities", binary=True, classification=2),
        RequestedOutput("class", binary=False),
    ]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_parses_responses(binary: bool) -> None:
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=binary),
        triton.InferRequestedOutput("class", binary_data=binary),
    ]
    body, header_length = triton.InferenceServerClient.generate_request_body(
        [triton_input(X, "FP32", binary)], outputs=outputs, request_id="tc-2"
    )
    request = decode_infer(body, header_length, IRIS, MAX_ROWS)
    response, headers = encode_infer("iris", "4", request, PROBABILITIES, CLASSES, LABELS)
    assert (HEADER_LENGTH_HEADER in headers) == binary
    result = triton.InferenceServerClient.parse_response_body(
        response,
        verbose=False,
        header_length=int(headers[HEADER_LENGTH_HEADER]) if binary else None,
        content_encoding=None,
    )
    assert result.get_response()["id"] == "tc-2"
    assert result.get_response()["model_version"] == "4"
    probabilities = result.as_numpy("probabilities")
    classes = result.as_numpy("class")
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, 3)
    assert classes.dtype == np.int64 and classes.shape == (3,)
    np.testing.assert_array_equal(probabilities, PROBABILITIES)
    np.testing.assert_array_equal(classes, CLASSES)


def test_tritonclient_default_outputs_are_binary() -> None:
    # With no outputs named, tritonclient asks for binary_data_output: every output binary.
    body, header_length = triton.InferenceServerClient.generate_request_body(
        [triton_input(X, "FP32", True)]
    )
    request = decode_infer(body, header_length, IRIS, MAX_ROWS)
    assert all(output.binary for output in request.outputs)
    response, headers = encode_infer("iris", "1", request, PROBABILITIES, CLASSES, LABELS)
    result = triton.InferenceServerClient.parse_response_body(
        response, verbose=False, header_length=int(headers[HEADER_LENGTH_HEADER])
    )
    np.testing.assert_array_equal(result.as_numpy("probabilities"), PROBABILITIES)
    np.testing.assert_array_equal(result.as_numpy("class"), CLASSES)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_parses_classification(binary: bool) -> None:
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=2),
        triton.InferRequestedOutput("class", binary_data=True),
    ]
    body, header_length = triton.InferenceServerClient.generate_request_body(
        [triton_input(X, "FP32", False)], outputs=outputs
    )
    request = decode_infer(body, header_length, IRIS, MAX_ROWS)
    response, headers = encode_infer("iris", "1", request, PROBABILITIES, CLASSES, LABELS)
    result = triton.InferenceServerClient.parse_response_body(
        response, verbose=False, header_length=int(headers[HEADER_LENGTH_HEADER])
    )
    top = result.as_numpy("probabilities")
    assert top.shape == (3, 2)
    as_text = [[v.decode() if isinstance(v, bytes) else v for v in row] for row in top.tolist()]
    assert as_text == [
        ["0.970000:0:setosa", "0.020000:1:versicolor"],
        ["0.600000:2:virginica", "0.300000:1:versicolor"],
        ["0.500000:1:versicolor", "0.250000:0:setosa"],
    ]
    np.testing.assert_array_equal(result.as_numpy("class"), CLASSES)


# ------------------------------------------------- the small-batch path agrees with the full one


@pytest.mark.parametrize("data", [
    [[1, 2, 3, 4], 5],               # rows and bare numbers mixed
    [[1, 2, 3, 4], [5, 6, 7]],       # ragged
    [[1, 2, 3, True]],               # a boolean
    [[1, 2, 3, "4"]],                # a string
    [[1, 2, 3, 1e39]],               # beyond float32
])
def test_small_batches_are_refused_like_large_ones(data) -> None:
    body = orjson.dumps({"instances": data})
    with pytest.raises(BadRequest):
        decode_instances(body, IRIS, 100)
    with pytest.raises(BadRequest):
        decode_instances(orjson.dumps({"instances": data * 20}), IRIS, 100)
    v2 = orjson.dumps({"inputs": [{"name": "input", "shape": [len(data), 4],
                                   "datatype": "FP32", "data": data}]})
    with pytest.raises(BadRequest):
        decode_infer(v2, None, IRIS, 100)


def test_small_and_large_batches_decode_to_the_same_values() -> None:
    rng = np.random.default_rng(0)
    rows = rng.uniform(-1e3, 1e3, (40, 4)).tolist()
    small = decode_instances(orjson.dumps({"instances": rows[:3]}), IRIS, 100)
    large = decode_instances(orjson.dumps({"instances": rows}), IRIS, 100)
    assert small.dtype == np.float32 and small.flags.c_contiguous and small.shape == (3, 4)
    np.testing.assert_array_equal(small, large[:3])


# ---------------------------------------------------- models of other shapes: F features, K classes

WINE = ModelShape("wine", [f"f{i}" for i in range(13)], 2)  # the non-Iris battery's model
CENSUS = ModelShape("census", [f"f{i}" for i in range(13)], 3, impute=True)
WINE_ROW = [float(i) / 2 for i in range(13)]


def wine_v2(data: Any = None, *, shape: Any = (1, 13), **extra: Any) -> bytes:
    tensor = {"name": "input", "shape": list(shape), "datatype": "FP32",
              "data": WINE_ROW if data is None else data}
    return dumps({"inputs": [tensor], **extra})


def wine_binary(values: np.ndarray, *, shape: Any = None) -> tuple[bytes, int]:
    raw = np.ascontiguousarray(values, "<f4").tobytes()
    return binary_body(raw, shape=values.shape if shape is None else shape)


WINE_EXPECTED = ("list of 13 numbers, the features of model wine "
                 "(f0, f1, f2, f3, …, f12), or an object with those keys")
BAD_WINE_INSTANCES: list[tuple[str, bytes, list[str]]] = [
    ("row of F-1", dumps({"instances": [WINE_ROW[:12]]}),
     ["instances[0] has 12 values", WINE_EXPECTED]),
    ("row of F+1", dumps({"instances": [WINE_ROW, [*WINE_ROW, 1.0]]}),
     ["instances[1] has 14 values", WINE_EXPECTED]),
    ("iris row", dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}), ["has 4 values", WINE_EXPECTED]),
    ("iris keys", dumps({"instances": [dict(zip(NAMES, [5.1, 3.5, 1.4, 0.2]))]}),
     ["instances[0] lacks", "has unknown keys", "(the 13 features of model wine)"]),
    ("keys but one", dumps({"instances": [dict(zip(WINE.feature_names[1:], WINE_ROW))]}),
     ['instances[0] lacks ["f0"]']),
    ("null without imputation", dumps({"instances": [[*WINE_ROW[:5], None, *WINE_ROW[6:]]]}),
     ["instances[0][5] is null", "does not accept missing values"]),
    ("null in an object", dumps({"instances": [{**dict(zip(WINE.feature_names, WINE_ROW)),
                                                 "f12": None}]}),
     ['instances[0]["f12"] is null', "does not accept missing values"]),
    ("not an object", b"[1]", ['such as {"instances": [[5.1, 3.5, 1.4, … (13 numbers)]]}']),
    ("many rows, one short", dumps({"instances": [WINE_ROW] * 9 + [WINE_ROW[:12]]}),
     ["instances[9] has 12 values"]),
    ("many rows, a string", dumps({"instances": [WINE_ROW] * 9 + [[*WINE_ROW[:12], "1"]]}),
     ['instances[9][12] is the string "1"']),
]


@pytest.mark.parametrize(("body", "fragments"), [case[1:] for case in BAD_WINE_INSTANCES],
                         ids=[case[0] for case in BAD_WINE_INSTANCES])
def test_bad_instances_for_another_shape(body: bytes, fragments: list[str]) -> None:
    with pytest.raises(BadRequest) as info:
        decode_instances(body, WINE, MAX_ROWS * 2)
    assert_refused(info.value, BadRequest, 400, fragments)


def _bad_wine_infer() -> list[tuple[str, bytes, int | None, list[str]]]:
    nan_row = np.array([WINE_ROW], np.float32)
    nan_row[0, 12] = np.nan
    return [
        ("shape of F-1", wine_v2(WINE_ROW[:12], shape=(1, 12)), None,
         ["12 features per row", "expected [N, 13] with 1 <= N <= 5 (model wine has 13 "
          "features: f0, f1, f2, f3, …, f12)"]),
        ("shape of F+1", wine_v2([*WINE_ROW, 1], shape=(1, 14)), None, ["14 features per row"]),
        ("iris shape", wine_v2([5.1, 3.5, 1.4, 0.2], shape=(1, 4)), None,
         ["4 features per row", "expected [N, 13]"]),
        ("data of F-1", wine_v2(WINE_ROW[:12]), None,
         ['has 12 values in "data" but shape [1, 13] needs 13']),
        ("inputs empty", dumps({"inputs": []}), None,
         ['one input tensor named "input", FP32, shape [N, 13], such as {"inputs": [{"name": '
          '"input", "shape": [1, 13], "datatype": "FP32", "data": [5.1, 3.5, 1.4, … (13 '
          'numbers)]}]}']),
        ("null without imputation", wine_v2([None, *WINE_ROW[1:]]), None,
         ["data[0] is null", "does not accept missing values"]),
        ("classification above K", wine_v2(outputs=[
            {"name": "probabilities", "parameters": {"classification": 3}}]), None,
         ["classification must be from 1 to 2 (the number of classes), got 3"]),
        ("ragged", wine_v2([WINE_ROW, WINE_ROW[:3]], shape=(2, 13)), None,
         ["ragged", "N*13 numbers", "[N, 13]"]),
        ("value 1e39 in row 1", wine_v2([*WINE_ROW, *WINE_ROW[:12], 1e39], shape=(2, 13)), None,
         ['"data" value 25 (row 1, column 12) is 1e+39']),
        ("binary NaN without imputation", *wine_binary(nan_row),
         ["binary value 12 (row 0, column 12)", "this model does not accept missing values"]),
        ("binary of F-1", *wine_binary(nan_row[:, :12], shape=(1, 13)),
         ["binary_data_size 48 but shape [1, 13] of FP32 takes 52 bytes"]),
    ]


BAD_WINE_INFER = _bad_wine_infer()


@pytest.mark.parametrize(("body", "header_length", "fragments"),
                         [case[1:] for case in BAD_WINE_INFER],
                         ids=[case[0] for case in BAD_WINE_INFER])
def test_bad_infer_for_another_shape(body: bytes, header_length: int | None,
                                     fragments: list[str]) -> None:
    with pytest.raises(BadRequest) as info:
        decode_infer(body, header_length, WINE, MAX_ROWS)
    assert_refused(info.value, BadRequest, 400, fragments)


@pytest.mark.parametrize("n_features", [1, 4, 13, 64, 784])
@pytest.mark.parametrize("rows", [1, 3])
def test_every_form_decodes_for_any_width(n_features: int, rows: int) -> None:
    names = [f"x{i}" for i in range(n_features)]
    shape = ModelShape("m", names, 2)
    x = np.random.default_rng(n_features).uniform(-5, 5, (rows, n_features)).astype(np.float32)
    objects = [dict(zip(names, row)) for row in x.tolist()]
    assert_input_array(decode_instances(dumps({"instances": x.tolist()}), shape, 10), x)
    assert_input_array(decode_instances(dumps({"instances": objects}), shape, 10), x)
    for data in (x.ravel().tolist(), x.tolist()):
        body = dumps({"inputs": [{"name": "input", "shape": [rows, n_features],
                                  "datatype": "FP32", "data": data}]})
        assert_input_array(decode_infer(body, None, shape, 10).inputs, x)
    body, length = binary_body(x.tobytes(), shape=x.shape)
    assert_input_array(decode_infer(body, length, shape, 10).inputs, x)


def _with_missing(rows: int) -> np.ndarray:
    x = np.tile(np.array([WINE_ROW], np.float32), (rows, 1))
    x[0, 0] = x[-1, 12] = np.nan
    return x


def _nulls(x: np.ndarray) -> list[list[Any]]:
    return [[None if v != v else v for v in row] for row in x.tolist()]


def assert_same_with_nan(array: np.ndarray, expected: np.ndarray) -> None:
    assert array.dtype == np.float32 and array.flags.c_contiguous
    np.testing.assert_array_equal(array, expected)  # NaN in the same places


@pytest.mark.parametrize("rows", [1, 2, 10], ids=["1 row", "2 rows", "10 rows (numpy path)"])
def test_a_model_that_imputes_takes_null_and_nan(rows: int) -> None:
    x = _with_missing(rows)
    instances = _nulls(x)
    assert_same_with_nan(decode_instances(dumps({"instances": instances}), CENSUS, 10), x)
    objects = [dict(zip(CENSUS.feature_names, row)) for row in instances]
    assert_same_with_nan(decode_instances(dumps({"instances": objects}), CENSUS, 10), x)
    for data in (instances, [v for row in instances for v in row]):
        for datatype in ("FP32", "FP64"):
            body = dumps({"inputs": [{"name": "input", "shape": [rows, 13],
                                      "datatype": datatype, "data": data}]})
            assert_same_with_nan(decode_infer(body, None, CENSUS, 10).inputs, x)
    body, length = wine_binary(x)
    assert_same_with_nan(decode_infer(body, length, CENSUS, 10).inputs, x)
    all_missing = [[None] * 13]
    assert np.isnan(decode_instances(dumps({"instances": all_missing}), CENSUS, 10)).all()


@pytest.mark.parametrize(("body", "header_length", "fragments"), [
    (dumps({"instances": [[*[None] * 12, "1"]]}), None, ['instances[0][12] is the string "1"']),
    (dumps({"instances": [[*[None] * 12, True]]}), None, ["instances[0][12] is a boolean"]),
    (dumps({"instances": [[None] * 12]}), None, ["instances[0] has 12 values"]),
    (dumps({"instances": [[*[None] * 12, 1e39]]}), None, ["instances[0][12] is 1e+39"]),
    (wine_v2([*[None] * 12, [1]]), None, ['"data" is ragged']),
    (wine_v2([*[None] * 12, False]), None, ["data[12] is a boolean"]),
    (wine_v2([None] * 12), None, ['has 12 values in "data" but shape [1, 13] needs 13']),
    (dumps({"inputs": [{"name": "input", "shape": [1, 13], "datatype": "INT32",
                        "data": [*[None] * 12, 2.5]}]}), None,
     ["INT32 data must be whole numbers"]),
    (*wine_binary(np.array([[np.inf, *[np.nan] * 12]], np.float32)), ["binary value 0", "inf"]),
], ids=["string", "boolean", "short row", "1e39", "nested", "V2 boolean", "V2 short",
        "V2 INT32 fraction", "binary inf"])
def test_a_model_that_imputes_still_refuses_what_is_not_missing(
        body: bytes, header_length: int | None, fragments: list[str]) -> None:
    with pytest.raises(BadRequest) as info:
        if body.startswith(b'{"instances"'):
            decode_instances(body, CENSUS, 10)
        else:
            decode_infer(body, header_length, CENSUS, 10)
    assert_refused(info.value, BadRequest, 400, fragments)


def test_a_model_that_imputes_decodes_int_data_with_null() -> None:
    body = dumps({"inputs": [{"name": "input", "shape": [1, 13], "datatype": "INT32",
                              "data": [None, *range(12)]}]})
    decoded = decode_infer(body, None, CENSUS, 10).inputs
    assert np.isnan(decoded[0, 0]) and decoded[0, 1:].tolist() == list(range(12))


def test_classification_bounds_follow_the_model() -> None:
    many = ModelShape("m", ["a"], 100)
    outputs = [{"name": "probabilities", "parameters": {"classification": 100}}]
    body = dumps({"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32",
                              "data": [1]}], "outputs": outputs})
    assert decode_infer(body, None, many, 10).outputs == [
        RequestedOutput("probabilities", classification=100)]
    with pytest.raises(BadRequest, match="from 1 to 2"):
        decode_infer(body, None, ModelShape("m", ["a"], 2), 10)


def test_encode_infer_gives_k_columns() -> None:
    probabilities = np.full((2, 10), 0.1, np.float32)
    request = InferRequest(None, np.zeros((2, 5), np.float32), [RequestedOutput("probabilities")])
    body, _ = encode_infer("m", "1", request, probabilities, np.zeros(2, np.int64),
                           [f"c{k}" for k in range(10)])
    assert orjson.loads(body)["outputs"][0]["shape"] == [2, 10]


# --------------------------------------------------------------- the package's one-way layers

# Which modules of serving.codecs each one may import: the protocol modules build on checks,
# v2_json on v2_binary too; nothing imports back up. A new module must be given its place here.
CODEC_LAYERS = {
    "checks": set(),
    "instances": {"checks"},
    "v2_binary": {"checks"},
    "v2_json": {"checks", "v2_binary"},
}


def codec_imports(path: Path) -> set[str]:
    """The serving.codecs modules a source file imports, by their short names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:  # from . import x, from .x import y
            found.update([node.module.split(".")[0]] if node.module else
                         [alias.name for alias in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("serving.codecs"):
            found.add(node.module.removeprefix("serving.codecs").lstrip(".") or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("serving.codecs"):
                    found.add(alias.name.removeprefix("serving.codecs").lstrip(".") or "__init__")
    return found


def test_codec_modules_import_only_downward() -> None:
    package = Path(serving.codecs.__file__).parent
    modules = {p.stem: p for p in package.glob("*.py") if p.stem != "__init__"}
    assert set(modules) == set(CODEC_LAYERS)
    for name, path in modules.items():
        assert codec_imports(path) <= CODEC_LAYERS[name], name
    # The package re-exports only what its modules define.
    assert codec_imports(package / "__init__.py") <= set(CODEC_LAYERS)
    assert all(hasattr(serving.codecs, name) for name in serving.codecs.__all__)
