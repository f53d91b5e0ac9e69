"""Bad requests against a running server: each is answered as JSON with a useful message, and
the same worker pool goes on serving good requests.

One parametrized test sends every bad input to the session's 2-worker server. Body-size limits
get a server of their own (SOFTSERVE_MAX_BODY_BYTES=65536) and a raw socket, to prove that a
body declared too large is refused from its headers alone, without the server reading it.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tests.support.net import Reply, send
from tests.support.server import Server, start_server

HEADER_LENGTH = "Inference-Header-Content-Length"
INFER = "/v2/models/iris/infer"
ROW = [5.1, 3.5, 1.4, 0.2]
GOOD_INSTANCES = {"instances": [ROW, [6.2, 2.9, 4.3, 1.3]]}
DEFAULT_MAX_ROWS = 100_000  # serving.config.Config.max_batch_rows
BODY_LIMIT = 65536


# --------------------------------------------------------------------------------- helpers


def error_message(reply: Reply) -> str:
    """The message of an error answer, checking that it is exactly ``{"error": "<text>"}``."""
    assert reply.headers.get("content-type") == "application/json", reply
    doc = json.loads(reply.body)
    assert isinstance(doc, dict) and list(doc) == ["error"], doc
    assert isinstance(doc["error"], str) and len(doc["error"]) > 10, doc
    return doc["error"]


def v2(data: Any = None, *, shape: Any = (1, 4), datatype: Any = "FP32", **extra: Any) -> bytes:
    tensor = {"name": "input", "shape": list(shape) if isinstance(shape, tuple) else shape,
              "datatype": datatype, "data": ROW if data is None else data}
    return json.dumps({"inputs": [tensor], **extra}).encode()


def v2_binary(raw: bytes, *, size: Any = None, shape: Any = (1, 4), datatype: str = "FP32",
              header_length: str | None = None, extra_json: bytes = b"") -> tuple[bytes, dict]:
    """A binary-data request; ``size`` (binary_data_size) and the header may be made to lie."""
    header = json.dumps({"inputs": [{
        "name": "input", "shape": list(shape), "datatype": datatype,
        "parameters": {"binary_data_size": len(raw) if size is None else size}}]}).encode()
    header += extra_json
    length = str(len(header)) if header_length is None else header_length
    return header + raw, {HEADER_LENGTH: length}


def raw_text(text: str) -> bytes:
    """A body spelled out by hand: for JSON literals json.dumps will not write."""
    return text.encode()


FP32_ROW = np.array(ROW, "<f4").tobytes()

def _cases() -> Iterator[Any]:
    def case(id: str, method: str, path: str, body: bytes | None, status: int,
             *words: str, headers: dict[str, str] | None = None) -> Any:
        """One bad request, the status it must get and words its message must hold."""
        return pytest.param(method, path, body, headers or {}, status, list(words), id=id)

    for path in ("/predict", "/v1/models/iris:predict"):
        p = "simple" if path == "/predict" else "v1"
        yield case(f"{p}-not-json", "POST", path, b"rows please", 400, "not valid UTF-8 JSON",
                   "instances")
        yield case(f"{p}-empty-body", "POST", path, b"", 400, "empty", "instances")
        yield case(f"{p}-not-utf8", "POST", path,
                   b'{"instances": [[5.1, 3.5, 1.4, 0.2]], "\xff": 1}', 400, "UTF-8")
        # Latin-1 from a client: é is the one byte 0xE9 at offset 50 (orjson said "char 0").
        yield case(f"{p}-latin1", "POST", path,
                   '{"instances": [[5.1, 3.5, 1.4, 0.2]], "note": "café"}'.encode("latin-1"),
                   400, "not UTF-8", "byte 0xE9 at offset 50", "send JSON encoded as UTF-8")
        # Each é is two bytes: the trailing comma is at byte 46 (orjson said "char 43").
        yield case(f"{p}-syntax-error-after-multibyte", "POST", path,
                   '{"note": "ééé", "instances": [[1, 2, 3, 4]],}'.encode(), 400,
                   "trailing comma", "at byte offset 46")
        yield case(f"{p}-utf16-bom", "POST", path,
                   json.dumps(GOOD_INSTANCES).encode("utf-16"), 400, "UTF-16", "UTF-8")
        yield case(f"{p}-utf16-no-bom", "POST", path,
                   json.dumps(GOOD_INSTANCES).encode("utf-16-le"), 400, "UTF-16", "UTF-8")
        yield case(f"{p}-not-an-object", "POST", path, b"[[5.1, 3.5, 1.4, 0.2]]", 400,
                   "JSON object", "instances")
        yield case(f"{p}-missing-key", "POST", path, b"{}", 400, 'no "instances" key')
        yield case(f"{p}-wrong-key", "POST", path, json.dumps({"inputs": [ROW]}).encode(), 400,
                   "unexpected keys", "inputs", "instances")
        yield case(f"{p}-extra-key", "POST", path,
                   json.dumps({**GOOD_INSTANCES, "signature_name": "x"}).encode(), 400,
                   "unexpected keys", "signature_name")
        yield case(f"{p}-instances-not-a-list", "POST", path, b'{"instances": 4}', 400,
                   '"instances" must be a list')
        yield case(f"{p}-empty-batch", "POST", path, b'{"instances": []}', 400,
                   '"instances" is empty')
        yield case(f"{p}-row-too-short", "POST", path, b'{"instances": [[1, 2, 3]]}', 400,
                   "instances[0] has 3 values", "4 numbers")
        yield case(f"{p}-row-too-long", "POST", path,
                   b'{"instances": [[1, 2, 3, 4], [1, 2, 3, 4, 5]]}', 400,
                   "instances[1] has 5 values")
        yield case(f"{p}-row-not-a-list", "POST", path, b'{"instances": [5.1]}', 400,
                   "instances[0]", "list of 4 numbers")
        yield case(f"{p}-mixed-row-forms", "POST", path,
                   b'{"instances": [[1, 2, 3, 4], {"sepal_length": 1}]}', 400,
                   "instances[1] is an object", "same form")
        yield case(f"{p}-object-missing-feature", "POST", path,
                   json.dumps({"instances": [{"sepal_length": 5.1, "sepal_width": 3.5,
                                              "petal_length": 1.4}]}).encode(), 400,
                   "lacks", "petal_width")
        yield case(f"{p}-object-unknown-feature", "POST", path,
                   json.dumps({"instances": [{"sepal_length": 5.1, "sepal_width": 3.5,
                                              "petal_length": 1.4, "petal_width": 0.2,
                                              "colour": 1}]}).encode(), 400,
                   "unknown keys", "colour")
        for name, value, words in [
            ("non-numeric", '{"a": 1}', ["instances[1][2]", "an object", "expected a number"]),
            ("nested-list", "[1]", ["instances[1][2]", "a list", "expected a number"]),
            ("string-number", '"1.4"', ["instances[1][2]", "string", "must not be quoted"]),
            ("null", "null", ["instances[1][2]", "null", "expected a number"]),
            ("true", "true", ["instances[1][2]", "boolean", "expected a number"]),
            ("false", "false", ["instances[1][2]", "boolean", "expected a number"]),
            ("NaN", "NaN", ["NaN and Infinity are not JSON numbers"]),
            ("Infinity", "Infinity", ["NaN and Infinity are not JSON numbers"]),
            ("-Infinity", "-Infinity", ["NaN and Infinity are not JSON numbers"]),
            ("1e39", "1e39", ["instances[1][2]", "float32 range"]),
            ("-1e39", "-1e39", ["instances[1][2]", "float32 range"]),
            ("1e400", "1e400", ["not valid UTF-8 JSON", "infinity"]),
        ]:
            # The bad value is in the second row, third column: the message must say where.
            body = raw_text(f'{{"instances": [[5.1, 3.5, 1.4, 0.2], [5.1, 3.5, {value}, 0.2]]}}')
            yield case(f"{p}-{name}", "POST", path, body, 400, *words)
        too_many = json.dumps({"instances": [ROW] * (DEFAULT_MAX_ROWS + 1)}).encode()
        yield case(f"{p}-too-many-rows", "POST", path, too_many, 413,
                   str(DEFAULT_MAX_ROWS + 1), str(DEFAULT_MAX_ROWS), "split the batch")

    # ---- V2 infer, JSON
    yield case("v2-not-json", "POST", INFER, b"input=5.1,3.5", 400, "not valid UTF-8 JSON",
               '"inputs"')
    yield case("v2-empty-body", "POST", INFER, b"", 400, "empty")
    yield case("v2-not-utf8", "POST", INFER, v2()[:-1] + b', "id": "\xc3\x28"}', 400, "UTF-8")
    # é in Latin-1 is the one byte 0xE9, here at offset 109 (orjson said "char 0").
    yield case("v2-latin1", "POST", INFER,
               ('{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", '
                '"data": [5.1, 3.5, 1.4, 0.2]}], "id": "café"}').encode("latin-1"), 400,
               "not UTF-8", "byte 0xE9 at offset 109", "send JSON encoded as UTF-8")
    yield case("v2-utf16-bom", "POST", INFER, v2().decode().encode("utf-16"), 400, "UTF-16")
    yield case("v2-utf16-be-no-bom", "POST", INFER, v2().decode().encode("utf-16-be"), 400,
               "UTF-16")
    yield case("v2-not-an-object", "POST", INFER, b"[]", 400, "JSON object")
    yield case("v2-no-inputs", "POST", INFER, b'{"instances": [[1, 2, 3, 4]]}', 400,
               '"inputs" must be a list')
    yield case("v2-wrong-input-name", "POST", INFER,
               json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                       "data": ROW}]}).encode(), 400,
               'exactly one input named "input"')
    yield case("v2-two-inputs", "POST", INFER,
               json.dumps({"inputs": [json.loads(v2())["inputs"][0]] * 2}).encode(), 400,
               "exactly one input", "2 input(s)")
    yield case("v2-inputs-empty", "POST", INFER, b'{"inputs": []}', 400, '"inputs" is empty',
               'one input tensor named "input", FP32, shape [N, 4]', '"data": [')
    for key in ("name", "shape", "datatype", "data"):
        tensor = {k: v for k, v in json.loads(v2())["inputs"][0].items() if k != key}
        yield case(f"v2-no-{key}-key", "POST", INFER, json.dumps({"inputs": [tensor]}).encode(),
                   400, f'has no "{key}"')
    yield case("v2-no-datatype-names-the-accepted", "POST", INFER,
               json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "data": ROW}]}).encode(),
               400, 'has no "datatype"', "FP32 (or FP64, INT32, INT64)")
    yield case("v2-output-without-name", "POST", INFER, v2(outputs=[{}]), 400,
               'outputs[0] has no "name"')
    yield case("v2-no-data", "POST", INFER,
               json.dumps({"inputs": [{"name": "input", "shape": [1, 4],
                                       "datatype": "FP32"}]}).encode(), 400, 'no "data"')
    yield case("v2-id-not-a-string", "POST", INFER, v2(id=7), 400, '"id" must be a string')
    yield case("v2-shape-disagrees-with-data", "POST", INFER, v2(shape=(2, 4)), 400,
               '4 values in "data"', "[2, 4]", "needs 8")
    yield case("v2-nested-data-disagrees", "POST", INFER, v2([ROW, ROW, ROW], shape=(2, 4)), 400,
               '12 values in "data"', "needs 8")
    yield case("v2-ragged-data", "POST", INFER, v2([ROW, [1, 2]], shape=(2, 4)), 400, "ragged")
    yield case("v2-wrong-width", "POST", INFER, v2(ROW[:3], shape=(1, 3)), 400,
               "3 features per row", "[N, 4]")
    yield case("v2-shape-rank-1", "POST", INFER, v2(shape=[4]), 400, "shape [4]", "[N, 4]")
    yield case("v2-negative-shape", "POST", INFER, v2(shape=(-1, 4)), 400, "shape [-1,4]",
               "non-negative integers")
    yield case("v2-absurd-shape", "POST", INFER, v2(shape=(10**30, 4)), 400,
               "non-negative integers")
    yield case("v2-string-shape", "POST", INFER, v2(shape=["1", "4"]), 400,
               "non-negative integers")
    yield case("v2-float-shape", "POST", INFER, v2(shape=[1.0, 4]), 400,
               "non-negative integers")
    yield case("v2-empty-batch", "POST", INFER, v2([], shape=(0, 4)), 400, "empty batch")
    yield case("v2-too-many-rows", "POST", INFER, v2(shape=(DEFAULT_MAX_ROWS + 1, 4)), 413,
               str(DEFAULT_MAX_ROWS + 1), str(DEFAULT_MAX_ROWS), "split the batch")
    yield case("v2-very-many-rows", "POST", INFER, v2(shape=(10**15, 4)), 413,
               "split the batch")
    yield case("v2-unknown-datatype", "POST", INFER, v2(datatype="FLOAT"), 400,
               "unknown datatype", "FLOAT", "FP32")
    yield case("v2-datatype-not-a-string", "POST", INFER, v2(datatype=1), 400,
               "unknown datatype")
    for datatype in ("BOOL", "BYTES", "FP16", "UINT8"):
        yield case(f"v2-unsupported-{datatype}", "POST", INFER, v2(datatype=datatype), 400,
                   "unsupported datatype", datatype, "FP32")
    for name, value, words in [
        ("non-numeric", '{"a": 1}', ["data[2]", "an object", "expected a number"]),
        ("string-number", '"1.4"', ["data[2]", "string", "must not be quoted"]),
        ("null", "null", ["data[2]", "null", "expected a number"]),
        ("true", "true", ["data[2]", "boolean"]),
        ("false", "false", ["data[2]", "boolean"]),
        ("NaN", "NaN", ["NaN and Infinity are not JSON numbers"]),
        ("Infinity", "Infinity", ["NaN and Infinity are not JSON numbers"]),
        ("-Infinity", "-Infinity", ["NaN and Infinity are not JSON numbers"]),
        ("1e39", "1e39", ["value 2", "float32 range"]),
        ("1e400", "1e400", ["not valid UTF-8 JSON", "infinity"]),
    ]:
        body = raw_text('{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", '
                        f'"data": [5.1, 3.5, {value}, 0.2]}}]}}')
        yield case(f"v2-{name}", "POST", INFER, body, 400, *words)
    yield case("v2-int32-not-whole", "POST", INFER, v2([1, 2, 3.5, 4], datatype="INT32"), 400,
               "INT32", "whole numbers")
    yield case("v2-int32-overflow", "POST", INFER, v2([1, 2, 2**31, 4], datatype="INT32"), 400,
               "INT32 range")
    yield case("v2-unknown-output", "POST", INFER, v2(outputs=[{"name": "logits"}]), 400,
               "unknown output", "logits")
    yield case("v2-output-twice", "POST", INFER,
               v2(outputs=[{"name": "class"}, {"name": "class"}]), 400, "requested twice")
    yield case("v2-classification-on-class", "POST", INFER,
               v2(outputs=[{"name": "class", "parameters": {"classification": 1}}]), 400,
               "only available on output")
    yield case("v2-classification-too-large", "POST", INFER,
               v2(outputs=[{"name": "probabilities", "parameters": {"classification": 4}}]),
               400, "from 1 to 3")
    yield case("v2-binary-output-not-bool", "POST", INFER,
               v2(parameters={"binary_data_output": "yes"}), 400, "true or false")

    # ---- V2 infer, binary tensor data
    body, headers = v2_binary(FP32_ROW, size=32)
    yield case("v2-binary-size-disagrees-with-shape", "POST", INFER, body, 400,
               "binary_data_size 32", "takes 16 bytes", headers=headers)
    body, headers = v2_binary(FP32_ROW[:12], size=16)
    yield case("v2-binary-size-disagrees-with-body", "POST", INFER, body, 400,
               "holds 12 bytes", "declare 16 bytes", headers=headers)
    body, headers = v2_binary(FP32_ROW + b"\0" * 4, size=16)
    yield case("v2-binary-body-too-long", "POST", INFER, body, 400,
               "holds 20 bytes", "declare 16 bytes", headers=headers)
    body, headers = v2_binary(FP32_ROW, size=-16)
    yield case("v2-binary-size-negative", "POST", INFER, body, 400,
               "binary_data_size must be a non-negative integer", headers=headers)
    body, headers = v2_binary(FP32_ROW, size="16")
    yield case("v2-binary-size-string", "POST", INFER, body, 400,
               "binary_data_size must be a non-negative integer", headers=headers)
    body, headers = v2_binary(np.array([5.1, 3.5, np.nan, 0.2], "<f4").tobytes())
    yield case("v2-binary-NaN", "POST", INFER, body, 400, "binary value 2", "finite",
               headers=headers)
    body, headers = v2_binary(np.array([5.1, 3.5, 1e300, 0.2], "<f8").tobytes(), datatype="FP64")
    yield case("v2-binary-FP64-beyond-float32", "POST", INFER, body, 400, "binary value 2",
               "float32", headers=headers)
    body, headers = v2_binary(b"", size=16)
    yield case("v2-binary-size-without-header", "POST", INFER, body, 400, HEADER_LENGTH,
               "binary_data_size")
    body, headers = v2_binary(FP32_ROW)
    yield case("v2-binary-data-without-header", "POST", INFER, body, 400, "JSON")
    # 5.1 as FP32 is 33 33 A3 40: the first byte that is not UTF-8 is the third of the data.
    yield case("v2-binary-data-without-header-says-where", "POST", INFER, body, 400,
               f"byte 0xA3 at offset {int(headers[HEADER_LENGTH]) + 2}",
               f"send the {HEADER_LENGTH} header")
    header = ('{"id": "café", "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", '
              '"parameters": {"binary_data_size": 16}}]}').encode("latin-1")
    yield case("v2-binary-header-latin1", "POST", INFER, header + FP32_ROW, 400,
               "inference request header is not UTF-8", "byte 0xE9 at offset 11",
               headers={HEADER_LENGTH: str(len(header))})
    for name, value in [("letters", "abc"), ("negative", "-5"), ("float", "1.5"),
                        ("empty", ""), ("huge", "9" * 40)]:
        body, headers = v2_binary(FP32_ROW, header_length=value)
        yield case(f"v2-header-length-{name}", "POST", INFER, body, 400, HEADER_LENGTH,
                   "non-negative integer", headers=headers)
    body, headers = v2_binary(FP32_ROW)
    headers = {HEADER_LENGTH: str(len(body) + 1)}
    yield case("v2-header-length-beyond-body", "POST", INFER, body, 400, HEADER_LENGTH,
               f"only {len(body)} bytes", headers=headers)
    body, headers = v2_binary(FP32_ROW)
    headers = {HEADER_LENGTH: str(int(headers[HEADER_LENGTH]) - 3)}
    yield case("v2-header-length-splits-the-json", "POST", INFER, body, 400,
               "inference request header", "not valid UTF-8 JSON", headers=headers)
    body = v2()
    yield case("v2-header-length-with-json-data-and-trailing-bytes", "POST", INFER,
               body + b"\0" * 8, 400, "0 bytes of binary data", headers={
                   HEADER_LENGTH: str(len(body))})
    yield case("v2-binary-and-data", "POST", INFER, json.dumps({"inputs": [{
        "name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW,
        "parameters": {"binary_data_size": 16}}]}).encode() + FP32_ROW, 400, "one way only",
        headers={HEADER_LENGTH: str(len(json.dumps({"inputs": [{
            "name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW,
            "parameters": {"binary_data_size": 16}}]}).encode()))})

    # ---- unknown models, versions, routes, methods
    good_v2 = v2()
    for method, path, body in [("POST", "/v2/models/nope/infer", good_v2),
                               ("GET", "/v2/models/nope", None),
                               ("GET", "/v2/models/nope/ready", None),
                               ("GET", "/v1/models/nope", None),
                               ("POST", "/v1/models/nope:predict",
                                json.dumps(GOOD_INSTANCES).encode())]:
        yield case(f"unknown-model-{method}-{path}", method, path, body, 404,
                   "unknown model 'nope'", "iris")
    for version in ("2", "0", "abc", "01", "1.0", "-1", "99999999999999999999999"):
        for method, suffix, body in [("POST", "/infer", good_v2), ("GET", "", None),
                                     ("GET", "/ready", None)]:
            path = f"/v2/models/iris/versions/{version}{suffix}"
            yield case(f"unknown-version-{method}-{path}", method, path, body, 404,
                       "has no version", repr(version))
    for method, path, allowed in [("GET", "/predict", "POST"),
                                  ("PUT", "/predict", "POST"),
                                  ("GET", "/v1/models/iris:predict", None),
                                  ("DELETE", INFER, "POST"),
                                  ("GET", INFER, "POST"),
                                  ("GET", "/v2/models/iris/versions/1/infer", "POST"),
                                  ("POST", "/v2/health/ready", "GET"),
                                  ("POST", "/v2", "GET"), ("POST", "/", "GET"),
                                  ("DELETE", "/v2/models/iris", "GET")]:
        words = ["not allowed", method] + ([allowed] if allowed else [])
        yield case(f"wrong-method-{method}-{path}", method, path, None, 405, *words)
    for method, path in [("GET", "/nope"), ("GET", "/docs//"), ("POST", "/v2/models/iris/explain"),
                         ("POST", "/v2/models/iris/versions/1/infer/more"),
                         ("GET", "/v2/health"), ("POST", "/v3/models/iris/infer")]:
        yield case(f"unknown-route-{method}-{path}", method, path, b"{}", 404,
                   "no route matches", path)


CASES = list(_cases())


# -------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def session(iris_repository: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(iris_repository / "iris" / "1" / "model.onnx"), options,
                                providers=["CPUExecutionProvider"])


def assert_serves_good_requests(port: int, session: ort.InferenceSession) -> None:
    """The pool still answers (twice: with 2 workers, a lost one would likely show)."""
    x = np.array(GOOD_INSTANCES["instances"], np.float32)
    probabilities, classes = session.run(["probabilities", "class"], {"input": x})
    for _ in range(2):
        reply = send(port, "POST", "/predict", json.dumps(GOOD_INSTANCES).encode())
        assert reply.status == 200, reply.body
        predictions = json.loads(reply.body)["predictions"]
        np.testing.assert_array_equal(
            np.array([p["probabilities"] for p in predictions], np.float32), probabilities)
        assert [p["class"] for p in predictions] == classes.tolist()
        reply = send(port, "POST", INFER, v2(GOOD_INSTANCES["instances"], shape=(2, 4)))
        assert reply.status == 200, reply.body
        served = json.loads(reply.body)["outputs"][0]["data"]
        np.testing.assert_array_equal(np.array(served, np.float32), probabilities.reshape(-1))


def assert_clean_log(srv: Server, workers: int) -> None:
    """No traceback, no 500, and no worker replaced since start-up."""
    log = srv.log()
    assert "Traceback" not in log, log
    assert "internal error" not in log and "unhandled error" not in log, log
    # A 500 in plain text or in a JSON access record; not the ",500" of a timestamp.
    assert not re.search(r'(?:^|\s)500\s|HTTP 5\d\d|"status":\s*500\b', log), log
    assert log.count("Booting worker") == workers, log
    assert "WORKER TIMEOUT" not in log and "Worker exited" not in log, log


# ----------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("method, path, body, headers, status, words", CASES)
def test_bad_request_is_answered_as_json(server: Server, session: ort.InferenceSession,
                                         method: str, path: str, body: bytes | None,
                                         headers: dict[str, str], status: int,
                                         words: list[str]) -> None:
    reply = send(server.port, method, path, body, headers)
    assert reply.status == status, reply.body
    message = error_message(reply)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    if status == 405:
        assert reply.headers.get("allow"), reply.headers  # werkzeug's Allow header is kept
    assert_serves_good_requests(server.port, session)
    assert_clean_log(server, workers=2)


# ---- body size: a server with a 64 KiB limit


@pytest.fixture(scope="module")
def limited(iris_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(iris_repository, tmp_path_factory.mktemp("limited"), workers=1,
                       env={"SOFTSERVE_MAX_BODY_BYTES": str(BODY_LIMIT)},
                       ready_path="/v2/health/ready")
    yield srv
    assert srv.stop() == 0, srv.log()


def raw_exchange(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (and ``body``) on a raw socket, keep it open for writing, read the answer.

    The socket timeout only keeps a hung server from hanging the test: a server waiting for a
    body that never comes fails the test instead of answering.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head + body)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                pytest.fail(f"no complete answer: the server waits for the body; got {data!r}")
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            header_end = data.find(b"\r\n\r\n")
            if header_end >= 0:
                m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", data[:header_end])
                if m and len(data) >= header_end + 4 + int(m.group(1)):
                    break
    head_text, _, payload = data.partition(b"\r\n\r\n")
    lines = head_text.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return status, headers, payload


def _head(path: str, extra: str) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


@pytest.mark.parametrize("path", ["/predict", "/v1/models/iris:predict", INFER])
def test_declared_body_over_the_limit_is_refused_unread(limited: Server,
                                                        session: ort.InferenceSession,
                                                        path: str) -> None:
    """Content-Length over the limit and no body at all: the 413 comes from the headers alone."""
    status, headers, payload = raw_exchange(
        limited.port, _head(path, f"Content-Length: {BODY_LIMIT + 1}\r\n"))
    assert status == 413, payload
    assert headers["content-type"] == "application/json"
    message = json.loads(payload)["error"]
    assert str(BODY_LIMIT) in message and list(json.loads(payload)) == ["error"]
    assert_serves_good_requests(limited.port, session)


def _padded_instances(size: int) -> bytes:
    """A valid /predict body of exactly ``size`` bytes (JSON allows trailing whitespace)."""
    body = json.dumps(GOOD_INSTANCES).encode()
    return body + b" " * (size - len(body))


def test_body_at_the_limit_is_served_one_byte_more_is_not(limited: Server) -> None:
    reply = send(limited.port, "POST", "/predict", _padded_instances(BODY_LIMIT))
    assert reply.status == 200, reply.body
    reply = send(limited.port, "POST", "/predict", _padded_instances(BODY_LIMIT + 1))
    assert reply.status == 413, reply.body
    assert str(BODY_LIMIT) in error_message(reply)


def _chunked(body: bytes, size: int = 8192) -> bytes:
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def test_chunked_body_within_the_limit_is_served(limited: Server) -> None:
    status, _, payload = raw_exchange(
        limited.port, _head("/predict", "Transfer-Encoding: chunked\r\n"),
        _chunked(_padded_instances(BODY_LIMIT)))
    assert status == 200, payload
    assert len(json.loads(payload)["predictions"]) == 2


@pytest.mark.parametrize("path, body", [
    ("/predict", _padded_instances(BODY_LIMIT + 4096)),
    ("/v1/models/iris:predict", json.dumps({"instances": [ROW] * 5000}).encode()),
    (INFER, v2(ROW * 5000, shape=(5000, 4))),
], ids=["padded-valid-json", "many-rows", "v2-many-rows"])
def test_chunked_body_over_the_limit_is_refused(limited: Server, session: ort.InferenceSession,
                                                path: str, body: bytes) -> None:
    """A chunked body has no Content-Length: the limit must hold while it is read."""
    assert len(body) > BODY_LIMIT
    status, headers, payload = raw_exchange(
        limited.port, _head(path, "Transfer-Encoding: chunked\r\n"), _chunked(body))
    assert status == 413, payload
    assert headers["content-type"] == "application/json"
    assert str(BODY_LIMIT) in json.loads(payload)["error"]
    assert_serves_good_requests(limited.port, session)


# ---- the same battery's relevant part against a model of another shape: "wine", 13 x 2

WINE = "/v2/models/wine/infer"
WINE_ROW = [0.5] * 13


def _wine_cases() -> Iterator[Any]:
    def case(id: str, path: str, body: bytes, *words: str,
             headers: dict[str, str] | None = None) -> Any:
        return pytest.param(path, body, headers or {}, list(words), id=id)

    def rows(*rows: Any) -> bytes:
        return json.dumps({"instances": list(rows)}).encode()

    for path in ("/predict", "/v1/models/wine:predict"):
        p = "simple" if path == "/predict" else "v1"
        yield case(f"{p}-row-of-F-1", path, rows(WINE_ROW[:12]), "instances[0] has 12 values",
                   "list of 13 numbers, the features of model wine")
        yield case(f"{p}-row-of-F+1", path, rows(WINE_ROW, [*WINE_ROW, 1]),
                   "instances[1] has 14 values", "13 numbers")
        yield case(f"{p}-iris-row", path, json.dumps(GOOD_INSTANCES).encode(),
                   "instances[0] has 4 values", "13 numbers", "model wine")
        yield case(f"{p}-iris-keys", path, rows(dict(zip(
            ["sepal_length", "sepal_width", "petal_length", "petal_width"], ROW))),
            "lacks", "unknown keys", "sepal_length", "13 features of model wine")
        yield case(f"{p}-null-without-imputation", path, rows([*WINE_ROW[:12], None]),
                   "instances[0][12] is null", "does not accept missing values")
        yield case(f"{p}-not-json", path, b"rows please", "not valid UTF-8 JSON",
                   '{"instances": [[5.1, 3.5, 1.4, … (13 numbers)]]}')
    yield case("v2-iris-shape", WINE, v2(), "4 features per row", "expected [N, 13]",
               "model wine has 13 features")
    yield case("v2-shape-F+1", WINE, v2([*WINE_ROW, 1], shape=(1, 14)), "14 features per row")
    yield case("v2-data-F-1", WINE, v2(WINE_ROW[:12], shape=(1, 13)),
               '12 values in "data"', "needs 13")
    yield case("v2-null-without-imputation", WINE, v2([None, *WINE_ROW[1:]], shape=(1, 13)),
               "data[0] is null", "does not accept missing values")
    yield case("v2-classification-above-K", WINE, v2(WINE_ROW, shape=(1, 13), outputs=[
        {"name": "probabilities", "parameters": {"classification": 3}}]), "from 1 to 2")
    yield case("v2-label-not-the-models", WINE, v2(WINE_ROW, shape=(1, 13), outputs=[
        {"name": "setosa"}]), "unknown output")
    nan_row = np.array(WINE_ROW, "<f4")
    nan_row[3] = np.nan
    body, headers = v2_binary(nan_row.tobytes(), shape=(1, 13))
    yield case("v2-binary-NaN-without-imputation", WINE, body, "binary value 3",
               "does not accept missing values", headers=headers)
    body, headers = v2_binary(FP32_ROW, shape=(1, 13))
    yield case("v2-binary-iris-row", WINE, body, "binary_data_size 16",
               "shape [1, 13] of FP32 takes 52 bytes", headers=headers)


WINE_CASES = list(_wine_cases())


@pytest.mark.parametrize("path, body, headers, words", WINE_CASES)
def test_bad_request_for_another_shape_is_answered_as_json(
        shapes_server: Server, path: str, body: bytes, headers: dict[str, str],
        words: list[str]) -> None:
    reply = send(shapes_server.port, "POST", path, body, headers)
    message = error_message(reply)
    assert reply.status == 400, reply.body
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    good = send(shapes_server.port, "POST", WINE, v2(WINE_ROW, shape=(1, 13)))
    assert good.status == 200 and json.loads(good.body)["outputs"][0]["shape"] == [1, 2]


def test_logs_are_clean(server: Server, limited: Server, shapes_server: Server) -> None:
    """Runs last in this module: nothing above produced a traceback, a 500 or a worker restart."""
    assert_clean_log(server, workers=2)
    assert_clean_log(limited, workers=1)
    assert_clean_log(shapes_server, workers=1)
