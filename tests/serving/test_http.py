"""Every endpoint over real HTTP: a real gunicorn, real onnxruntime, the session's trained iris.

What the server answers must equal onnxruntime's own run of the same model.onnx on the same rows,
in-process: exactly for binary FP32, and exactly after reading the JSON numbers back as float32
(the server prints the shortest text that reads back as the same float32). The probabilities
must also equal torch's within the export tolerance (atol 1e-5): torch recomputes them from the
graph's own initializers (``torch.nn.functional.linear`` and ``softmax``).

Configurations that differ from the session server's (two models, an empty repository, a broken
only version, a small row limit) get their own short-lived server.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import modelrepo
from tests.support.models import train
from tests.support.net import Reply
from tests.support.net import send as send_to
from tests.support.server import Server, start_server
from training.data import iris

HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT_DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}
OUTPUT_DTYPES = {"FP32": "<f4", "INT64": "<i8"}
TORCH_ATOL = 1e-5  # the export tolerance of training's parity check
# Argmax is compared only where the top two probabilities are further apart than this: closer
# than float rounding, torch and onnxruntime may legitimately pick different classes.
CLEAR_MARGIN = 1e-5


# --------------------------------------------------------------------------------- helpers


def send(url: str, method: str, path: str, body: bytes | None = None,
         headers: Mapping[str, str] | None = None) -> Reply:
    """One request to the server at ``url`` on a fresh connection."""
    return send_to(urlsplit(url).port, method, path, body, headers)


def post_json(url: str, path: str, doc: Any, headers: Mapping[str, str] | None = None) -> Reply:
    return send(url, "POST", path, json.dumps(doc).encode(), headers)


def get_json(url: str, path: str, status: int = 200) -> Any:
    reply = send(url, "GET", path)
    assert reply.status == status, reply.body
    assert reply.content_type == "application/json"
    return reply.json()


def deserialize_bytes(raw: bytes) -> list[str]:
    """A BYTES tensor in binary form: 4-byte little-endian lengths, each followed by its bytes."""
    out, offset = [], 0
    while offset < len(raw):
        (size,) = struct.unpack_from("<I", raw, offset)
        out.append(raw[offset + 4: offset + 4 + size].decode())
        offset += 4 + size
    return out


def v2_outputs(reply: Reply) -> tuple[dict[str, Any], dict[str, np.ndarray | list[str]]]:
    """(response JSON, output name -> values) of a V2 infer response, JSON or binary."""
    assert reply.status == 200, reply.body
    length = reply.headers.get(HEADER_LENGTH.lower())
    if length is None:
        assert reply.content_type == "application/json"
        doc, offset = json.loads(reply.body), len(reply.body)
    else:
        assert reply.content_type == "application/octet-stream"
        offset = int(length)
        doc = json.loads(reply.body[:offset])
    values: dict[str, np.ndarray | list[str]] = {}
    for out in doc["outputs"]:
        shape = out["shape"]
        if "data" in out:
            assert "parameters" not in out or "binary_data_size" not in out["parameters"]
            if out["datatype"] == "BYTES":
                values[out["name"]] = out["data"]
            else:
                values[out["name"]] = np.array(out["data"],
                                               OUTPUT_DTYPES[out["datatype"]]).reshape(shape)
            continue
        size = out["parameters"]["binary_data_size"]
        raw = reply.body[offset: offset + size]
        assert len(raw) == size
        offset += size
        if out["datatype"] == "BYTES":
            values[out["name"]] = deserialize_bytes(raw)
        else:
            values[out["name"]] = np.frombuffer(raw, OUTPUT_DTYPES[out["datatype"]]).reshape(shape)
    assert offset == len(reply.body), "bytes left over after the last binary output"
    return doc, values


def v2_json_request(x: np.ndarray, datatype: str = "FP32", nested: bool = False,
                    **extra: Any) -> dict[str, Any]:
    data = x.tolist() if nested else x.reshape(-1).tolist()
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": datatype,
                        "data": data}], **extra}


def v2_binary_request(x: np.ndarray, datatype: str = "FP32",
                      **extra: Any) -> tuple[bytes, dict[str, str]]:
    raw = np.ascontiguousarray(x, INPUT_DTYPES[datatype]).tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape),
                                     "datatype": datatype,
                                     "parameters": {"binary_data_size": len(raw)}}],
                         **extra}).encode()
    return header + raw, {HEADER_LENGTH: str(len(header))}


@dataclass
class Reference:
    """onnxruntime, in this process, on a version's model.onnx."""

    path: Path
    session: ort.InferenceSession
    feature_names: list[str]
    class_labels: list[str]

    @classmethod
    def load(cls, version_dir: Path) -> Reference:
        metadata = json.loads((version_dir / modelrepo.METADATA_FILE).read_text())
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as the server runs it
        path = version_dir / modelrepo.MODEL_FILE
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return cls(path, session, metadata["feature_names"], metadata["class_labels"])

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities, classes = self.session.run(
            ["probabilities", "class"], {"input": np.ascontiguousarray(x, np.float32)})
        return probabilities, classes


def torch_forward(model_path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The graph recomputed by torch from its initializers: (x - mean) / std, linear, softmax."""
    import torch
    import torch.nn.functional as F

    model = onnx.load(str(model_path))
    env = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
           for i in model.graph.initializer}
    env["input"] = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        args = [env[name] for name in node.input]
        if node.op_type == "Sub":
            out = args[0] - args[1]
        elif node.op_type == "Div":
            out = args[0] / args[1]
        elif node.op_type == "Gemm":
            assert (attrs.get("transA", 0), attrs.get("transB", 0)) == (0, 1), attrs
            assert (attrs.get("alpha", 1.0), attrs.get("beta", 1.0)) == (1.0, 1.0), attrs
            out = F.linear(args[0], args[1], args[2] if len(args) > 2 else None)
        elif node.op_type == "Softmax":
            out = torch.softmax(args[0], dim=attrs.get("axis", -1))
        elif node.op_type == "ArgMax":
            out = torch.argmax(args[0], dim=attrs.get("axis", 0),
                               keepdim=bool(attrs.get("keepdims", 1)))
        elif node.op_type == "Identity":
            out = args[0]
        else:
            raise AssertionError(f"torch_forward does not know the op {node.op_type}")
        (name,) = node.output
        env[name] = out
    return env["probabilities"].numpy(), env["class"].numpy()


def clear_margin(probabilities: np.ndarray) -> np.ndarray:
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > CLEAR_MARGIN


def assert_predictions(doc: dict[str, Any], ref: Reference, x: np.ndarray, model: str = "iris",
                       version: str = "1") -> None:
    """A simple/V1 answer equals onnxruntime's run on ``x``, read back as float32."""
    probabilities, classes = ref.run(x)
    assert doc["model_name"] == model and doc["model_version"] == version
    predictions = doc["predictions"]
    assert len(predictions) == len(x)
    served = np.array([p["probabilities"] for p in predictions], dtype=np.float32)
    np.testing.assert_array_equal(served, probabilities)
    assert [p["class"] for p in predictions] == classes.tolist()
    assert [p["label"] for p in predictions] == [ref.class_labels[c] for c in classes]


def log_events(log: str) -> list[tuple[str, str]]:
    """(pid, message) of each of softserve's log records, in either of its log formats.

    Plain lines read ``<time> <LEVEL> [<pid>] softserve...: <message>``; JSON lines carry
    ``pid`` and ``message`` fields. gunicorn's own lines are neither.
    """
    events = []
    for line in log.splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "pid" in record and "message" in record:
                events.append((str(record["pid"]), str(record["message"])))
        elif match := re.search(r"\[(\d+)\] softserve[\w.]*: (.*)$", line):
            events.append((match[1], match[2]))
    return events


def wait_for(predicate: Any, what: str, srv: Server, limit: float = 30) -> None:
    """Poll until ``predicate()`` holds; fail with the server log if it never does."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"never saw {what}:\n{srv.log()}")
        time.sleep(0.05)


# -------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ref(iris_repository: Path) -> Reference:
    return Reference.load(iris_repository / "iris" / "1")


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """The 150 iris rows and 30 random ones (values far from the data, many digits)."""
    rng = np.random.default_rng(7)
    extra = rng.uniform(-20, 20, size=(30, 4)).astype(np.float32)
    return np.ascontiguousarray(np.concatenate([iris().features, extra]), dtype=np.float32)


@pytest.fixture(scope="module")
def rows64(rows: np.ndarray) -> np.ndarray:
    """Float64 rows with digits float32 cannot hold: the server rounds them as numpy does."""
    rng = np.random.default_rng(8)
    return rows.astype(np.float64) + rng.uniform(-1e-3, 1e-3, size=rows.shape)


@pytest.fixture(scope="module")
def int_rows(rows: np.ndarray) -> np.ndarray:
    return np.rint(rows * 3).astype(np.int64)


# ------------------------------------------------------------------- simple and V1 JSON


def test_predict_with_one_model_serves_it(server: Server, ref: Reference,
                                          rows: np.ndarray) -> None:
    reply = post_json(server.url, "/predict", {"instances": rows.tolist()})
    assert reply.status == 200, reply.body
    assert reply.content_type == "application/json"
    assert_predictions(reply.json(), ref, rows)


def test_v1_predict_rows_as_lists(server: Server, ref: Reference, rows: np.ndarray) -> None:
    reply = post_json(server.url, "/v1/models/iris:predict", {"instances": rows.tolist()})
    assert reply.status == 200, reply.body
    assert reply.content_type == "application/json"
    assert_predictions(reply.json(), ref, rows)


def test_v1_predict_rows_as_objects(server: Server, ref: Reference, rows: np.ndarray) -> None:
    # Keys in reverse order: objects are matched by name, not position.
    names = ref.feature_names
    instances = [{n: v for n, v in reversed(list(zip(names, row)))} for row in rows.tolist()]
    reply = post_json(server.url, "/v1/models/iris:predict", {"instances": instances})
    assert reply.status == 200, reply.body
    assert_predictions(reply.json(), ref, rows)


def test_v1_model_status(server: Server) -> None:
    assert get_json(server.url, "/v1/models/iris") == {"name": "iris", "ready": True,
                                                        "versions": ["1"]}


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded",
                                          "text/plain", "application/json"])
def test_any_content_type_is_read_as_the_raw_body(server: Server, ref: Reference,
                                                  rows: np.ndarray,
                                                  content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    x = rows[:7]
    for path in ("/predict", "/v1/models/iris:predict"):
        reply = post_json(server.url, path, {"instances": x.tolist()}, headers)
        assert reply.status == 200, reply.body
        assert_predictions(reply.json(), ref, x)
    reply = post_json(server.url, "/v2/models/iris/infer", v2_json_request(x), headers)
    _, values = v2_outputs(reply)
    np.testing.assert_array_equal(values["probabilities"], ref.run(x)[0])
    body, binary_headers = v2_binary_request(x)
    reply = send(server.url, "POST", "/v2/models/iris/infer", body, {**headers, **binary_headers})
    _, values = v2_outputs(reply)
    np.testing.assert_array_equal(values["probabilities"], ref.run(x)[0])


def test_served_probabilities_equal_torch(server: Server, ref: Reference,
                                          rows: np.ndarray) -> None:
    """Over HTTP, the served model is still the torch model it was exported from."""
    body, headers = v2_binary_request(rows, parameters={"binary_data_output": True})
    _, values = v2_outputs(send(server.url, "POST", "/v2/models/iris/infer", body, headers))
    served_p, served_c = values["probabilities"], values["class"]
    torch_p, torch_c = torch_forward(ref.path, rows)
    max_diff = float(np.max(np.abs(served_p - torch_p)))
    assert max_diff <= TORCH_ATOL, f"max |p_served - p_torch| = {max_diff:.3g}"
    clear = clear_margin(torch_p)
    assert clear.sum() >= len(rows) - 2  # the comparison below is not vacuous
    np.testing.assert_array_equal(served_c[clear], torch_c[clear])


# ------------------------------------------------------------------------ V2 metadata


def test_v2_server_metadata(server: Server) -> None:
    doc = get_json(server.url, "/v2")
    assert doc["name"] == "softserve"
    assert isinstance(doc["version"], str) and doc["version"]
    assert set(doc["extensions"]) >= {"binary_tensor_data", "classification"}


def test_v2_health(server: Server) -> None:
    assert get_json(server.url, "/v2/health/live")["live"] is True
    assert get_json(server.url, "/v2/health/ready")["ready"] is True


@pytest.mark.parametrize("path", ["/v2/models/iris", "/v2/models/iris/versions/1"])
def test_v2_model_metadata(server: Server, path: str) -> None:
    doc = get_json(server.url, path)
    assert doc["name"] == "iris"
    assert doc["versions"] == ["1"]
    assert doc["platform"] == "onnxruntime_onnx"
    assert doc["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert doc["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
                              {"name": "class", "datatype": "INT64", "shape": [-1]}]


@pytest.mark.parametrize("path", ["/v2/models/iris/ready", "/v2/models/iris/versions/1/ready"])
def test_v2_model_ready(server: Server, path: str) -> None:
    doc = get_json(server.url, path)
    assert doc["name"] == "iris" and doc["ready"] is True


# --------------------------------------------------------------------------- V2 infer

INFER_PATHS = ["/v2/models/iris/infer", "/v2/models/iris/versions/1/infer"]


def _inputs_for(datatype: str, rows: np.ndarray, rows64: np.ndarray,
                int_rows: np.ndarray) -> np.ndarray:
    return {"FP32": rows, "FP64": rows64, "INT32": int_rows.astype(np.int32),
            "INT64": int_rows}[datatype]


@pytest.mark.parametrize("path", INFER_PATHS)
@pytest.mark.parametrize("datatype", list(INPUT_DTYPES))
@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_v2_infer_json(server: Server, ref: Reference, rows: np.ndarray, rows64: np.ndarray,
                       int_rows: np.ndarray, path: str, datatype: str, nested: bool) -> None:
    x = _inputs_for(datatype, rows, rows64, int_rows)
    reply = post_json(server.url, path, v2_json_request(x, datatype, nested))
    doc, values = v2_outputs(reply)
    assert doc["model_name"] == "iris" and doc["model_version"] == "1"
    assert "id" not in doc
    assert [(o["name"], o["datatype"], o["shape"]) for o in doc["outputs"]] == [
        ("probabilities", "FP32", [len(x), 3]), ("class", "INT64", [len(x)])]
    probabilities, classes = ref.run(x.astype(np.float32))
    np.testing.assert_array_equal(values["probabilities"], probabilities)
    np.testing.assert_array_equal(values["class"], classes)


@pytest.mark.parametrize("path", INFER_PATHS)
@pytest.mark.parametrize("datatype", list(INPUT_DTYPES))
def test_v2_infer_binary_inputs(server: Server, ref: Reference, rows: np.ndarray,
                                rows64: np.ndarray, int_rows: np.ndarray, path: str,
                                datatype: str) -> None:
    x = _inputs_for(datatype, rows, rows64, int_rows)
    body, headers = v2_binary_request(x, datatype, parameters={"binary_data_output": True})
    doc, values = v2_outputs(send(server.url, "POST", path, body, headers))
    assert all("data" not in o for o in doc["outputs"])
    probabilities, classes = ref.run(x.astype(np.float32))
    np.testing.assert_array_equal(values["probabilities"], probabilities)  # bit for bit
    np.testing.assert_array_equal(values["class"], classes)


def test_v2_infer_binary_input_at_an_odd_offset(server: Server, ref: Reference,
                                                rows: np.ndarray) -> None:
    """Binary data right after a JSON header of odd length: unaligned floats still read right."""
    for pad in range(4):
        x = rows[:5]
        body, headers = v2_binary_request(x, id="x" * pad)
        _, values = v2_outputs(send(server.url, "POST", INFER_PATHS[0], body, headers))
        np.testing.assert_array_equal(values["probabilities"], ref.run(x)[0])


@pytest.mark.parametrize("selection", [["probabilities"], ["class"], ["class", "probabilities"]])
def test_v2_infer_outputs_selection(server: Server, ref: Reference, rows: np.ndarray,
                                    selection: list[str]) -> None:
    x = rows[:10]
    request = v2_json_request(x, outputs=[{"name": n} for n in selection])
    doc, values = v2_outputs(post_json(server.url, INFER_PATHS[0], request))
    assert [o["name"] for o in doc["outputs"]] == selection
    probabilities, classes = ref.run(x)
    expected = {"probabilities": probabilities, "class": classes}
    for name in selection:
        np.testing.assert_array_equal(values[name], expected[name])


def test_v2_infer_id_is_echoed(server: Server, rows: np.ndarray) -> None:
    for request_id in ["42", "", "request-ü-\u2603"]:
        doc, _ = v2_outputs(post_json(server.url, INFER_PATHS[0],
                                      v2_json_request(rows[:2], id=request_id)))
        assert doc["id"] == request_id
    body, headers = v2_binary_request(rows[:2], id="binary-7")
    doc, _ = v2_outputs(send(server.url, "POST", INFER_PATHS[1], body, headers))
    assert doc["id"] == "binary-7"


def test_v2_binary_data_output(server: Server, ref: Reference, rows: np.ndarray) -> None:
    x = rows[:11]
    probabilities, classes = ref.run(x)
    # Request-wide binary output.
    request = v2_json_request(x, parameters={"binary_data_output": True})
    reply = post_json(server.url, INFER_PATHS[0], request)
    doc, values = v2_outputs(reply)
    assert [o["parameters"]["binary_data_size"] for o in doc["outputs"]] == [
        len(x) * 3 * 4, len(x) * 8]
    assert int(reply.headers[HEADER_LENGTH.lower()]) + len(x) * 20 == len(reply.body)
    np.testing.assert_array_equal(values["probabilities"], probabilities)
    np.testing.assert_array_equal(values["class"], classes)
    # Per output, overriding the request-wide default both ways.
    request = v2_json_request(x, parameters={"binary_data_output": True}, outputs=[
        {"name": "class", "parameters": {"binary_data": False}},
        {"name": "probabilities"}])
    doc, values = v2_outputs(post_json(server.url, INFER_PATHS[0], request))
    assert "data" in doc["outputs"][0] and "data" not in doc["outputs"][1]
    np.testing.assert_array_equal(values["probabilities"], probabilities)
    np.testing.assert_array_equal(values["class"], classes)
    request = v2_json_request(x, outputs=[{"name": "class", "parameters": {"binary_data": True}}])
    doc, values = v2_outputs(post_json(server.url, INFER_PATHS[0], request))
    np.testing.assert_array_equal(values["class"], classes)


def _parse_classification(strings: list[str], labels: list[str]
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Triton's "<probability>:<index>:<label>" strings as (probabilities, indices)."""
    probabilities, indices = [], []
    for s in strings:
        p, i, label = s.split(":", 2)
        assert re.fullmatch(r"\d+\.\d{6}", p), s  # C's %f
        assert label == labels[int(i)], s
        probabilities.append(float(p))
        indices.append(int(i))
    return np.array(probabilities), np.array(indices)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_v2_classification(server: Server, ref: Reference, rows: np.ndarray, binary: bool,
                           top_k: int) -> None:
    x = rows
    request = v2_json_request(x, outputs=[{"name": "probabilities", "parameters": {
        "classification": top_k, "binary_data": binary}}, {"name": "class"}])
    doc, values = v2_outputs(post_json(server.url, INFER_PATHS[0], request))
    out = doc["outputs"][0]
    assert (out["datatype"], out["shape"]) == ("BYTES", [len(x), top_k])
    strings = values["probabilities"]
    assert isinstance(strings, list) and len(strings) == len(x) * top_k
    p, i = _parse_classification(strings, ref.class_labels)
    p, i = p.reshape(len(x), top_k), i.reshape(len(x), top_k)
    probabilities, classes = ref.run(x)
    expected_i = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    np.testing.assert_array_equal(i, expected_i)
    np.testing.assert_array_equal(i[:, 0], classes)
    expected_p = np.take_along_axis(probabilities, expected_i, axis=1)
    assert strings[0].split(":")[0] == f"{float(expected_p[0, 0]):f}"
    np.testing.assert_allclose(p, expected_p, atol=5e-7, rtol=0)  # %f keeps 6 decimals


# --------------------------------------------------- configurations of their own


def test_two_models(repository: Path, tmp_path: Path) -> None:
    """/predict stays on the first model published (iris) when another is published; with
    SOFTSERVE_DEFAULT_MODEL it serves that one."""
    assert train(repository, "--data", "toy", "--epochs", "20") == 0
    toy = Reference.load(repository / "toy" / "1")
    iris_ref = Reference.load(repository / "iris" / "1")
    x = np.array([[0.5, 1.5, 2.5, 3.5], [5.1, 3.5, 1.4, 0.2], [-1, 0, 1, 2]], np.float32)
    both = start_server(repository, tmp_path, workers=1, ready_path="/v2/health/ready")
    try:
        reply = post_json(both.url, "/predict", {"instances": x.tolist()})
        assert_predictions(reply.json(), iris_ref, x)
        # Each model is still reachable by name.
        reply = post_json(both.url, "/v1/models/toy:predict", {"instances": x.tolist()})
        assert_predictions(reply.json(), toy, x, model="toy")
        instances = [dict(zip(toy.feature_names, row)) for row in x.tolist()]
        reply = post_json(both.url, "/v1/models/toy:predict", {"instances": instances})
        assert_predictions(reply.json(), toy, x, model="toy")
        reply = post_json(both.url, "/v1/models/iris:predict", {"instances": x.tolist()})
        assert_predictions(reply.json(), iris_ref, x)
        doc, values = v2_outputs(post_json(both.url, "/v2/models/toy/infer", v2_json_request(x)))
        assert doc["model_name"] == "toy"
        np.testing.assert_array_equal(values["probabilities"], toy.run(x)[0])
    finally:
        assert both.stop() == 0, both.log()
    chosen = start_server(repository, tmp_path, workers=1, ready_path="/v2/health/ready",
                          env={"SOFTSERVE_DEFAULT_MODEL": "toy"})
    try:
        reply = post_json(chosen.url, "/predict", {"instances": x.tolist()})
        assert reply.status == 200, reply.body
        assert_predictions(reply.json(), toy, x, model="toy")
    finally:
        assert chosen.stop() == 0, chosen.log()
    assert "Traceback" not in both.log() + chosen.log()


def test_empty_repository(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    srv = start_server(empty, tmp_path, workers=1)
    try:
        assert get_json(srv.url, "/v2/health/live")["live"] is True
        doc = get_json(srv.url, "/v2/health/ready", status=503)
        assert doc["ready"] is False
        assert "no model" in doc["error"] and "SOFTSERVE_MODEL_REPOSITORY" in doc["error"]
        assert str(empty) not in doc["error"]  # the setting, never the path
        reply = post_json(srv.url, "/predict", {"instances": [[1, 2, 3, 4]]})
        assert reply.status == 404 and "no model" in reply.json()["error"]
        assert get_json(srv.url, "/v2/models/iris/ready", status=404)["error"]
    finally:
        assert srv.stop() == 0, srv.log()


def _truncate(version_dir: Path) -> str:
    model = version_dir / modelrepo.MODEL_FILE
    model.write_bytes(model.read_bytes()[:100])
    return "does not match metadata"


def _garbage_with_matching_sha256(version_dir: Path) -> str:
    garbage = b"this is not an ONNX model" * 10
    (version_dir / modelrepo.MODEL_FILE).write_bytes(garbage)
    metadata_path = version_dir / modelrepo.METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    metadata["model"]["sha256"] = hashlib.sha256(garbage).hexdigest()
    metadata_path.write_text(json.dumps(metadata))
    return "onnxruntime cannot load model.onnx"


@pytest.mark.parametrize("breakage", [_truncate, _garbage_with_matching_sha256],
                         ids=["sha256-mismatch", "onnxruntime-refuses"])
def test_broken_only_version(repository: Path, iris_repository: Path, tmp_path: Path,
                             breakage: Any) -> None:
    reason = breakage(repository / "iris" / "1")
    srv = start_server(repository, tmp_path, workers=2)
    try:
        doc = get_json(srv.url, "/v2/health/ready", status=503)
        assert doc["ready"] is False and reason in doc["error"] and "iris" in doc["error"]
        for path in ("/v2/models/iris/ready", "/v2/models/iris/versions/1/ready"):
            doc = get_json(srv.url, path, status=503)
            assert doc["ready"] is False and reason in doc["error"], doc
        reply = post_json(srv.url, "/v2/models/iris/infer", v2_json_request(np.ones((1, 4))))
        assert reply.status == 503 and reason in reply.json()["error"]
        reply = post_json(srv.url, "/predict", {"instances": [[1, 2, 3, 4]]})
        assert reply.status == 503 and reason in reply.json()["error"]
        doc = get_json(srv.url, "/v1/models/iris", status=503)  # one rule with V2's ready
        assert doc["ready"] is False and doc["versions"] == [] and reason in doc["error"], doc
        # A model added later is one more thing both workers log after their first scan: once
        # both have, each has rescanned the broken version at least once.
        staging = repository / ".tmp-sentinel"  # not a model name: invisible until renamed
        shutil.copytree(iris_repository / "iris", staging)
        staging.rename(repository / "sentinel")
        wait_for(lambda: len({pid for pid, message in log_events(srv.log())
                              if message.startswith("loaded model sentinel version 1")}) == 2,
                 "both workers load the sentinel model", srv)
        assert get_json(srv.url, "/v2/health/ready")["ready"] is True
    finally:
        assert srv.stop() == 0, srv.log()
    log = srv.log()
    workers = re.findall(r"Booting worker with pid: (\d+)", log)
    assert len(workers) == 2, log
    refusals = [(pid, message) for pid, message in log_events(log)
                if message.startswith("refusing model iris version 1: ")]
    assert sorted(pid for pid, _ in refusals) == sorted(workers), log  # once per worker
    assert all(reason in message for _, message in refusals), log
    assert "Traceback" not in log


def test_max_batch_rows(iris_repository: Path, tmp_path: Path, ref: Reference,
                        rows: np.ndarray) -> None:
    small = start_server(iris_repository, tmp_path, workers=1,
                         env={"SOFTSERVE_MAX_BATCH_ROWS": "5"}, ready_path="/v2/health/ready")
    try:
        for n, status in ((5, 200), (6, 413)):
            x = rows[:n]
            for path in ("/predict", "/v1/models/iris:predict"):
                reply = post_json(small.url, path, {"instances": x.tolist()})
                assert reply.status == status, reply.body
            reply = post_json(small.url, INFER_PATHS[0], v2_json_request(x))
            assert reply.status == status, reply.body
            body, headers = v2_binary_request(x)
            reply = send(small.url, "POST", INFER_PATHS[1], body, headers)
            assert reply.status == status, reply.body
            assert reply.content_type == "application/json"
            if status == 413:
                assert "5" in reply.json()["error"] and "6" in reply.json()["error"]
            else:
                _, values = v2_outputs(reply)
                np.testing.assert_array_equal(values["probabilities"], ref.run(x)[0])
    finally:
        assert small.stop() == 0, small.log()


def test_paths_past_the_remembered_ones_are_routed_alike(server: Server, ref: Reference,
                                                          rows: np.ndarray) -> None:
    """The hot path remembers what each path it saw matched (issue 20), MATCHED_PATHS of them
    per worker at most: past that many distinct paths (hot routes naming unknown models, paths
    no route takes), every path is still routed as the first time, asked again or not."""
    from serving.fastpath import MATCHED_PATHS

    doc = v2_json_request(rows[:1], "FP32", False)
    body = json.dumps(doc).encode()
    paths = [p for i in range(MATCHED_PATHS + 20)
             for p in (f"/v2/models/nosuch{i}/infer", f"/nowhere{i}")]
    for path in [*paths, *paths[:4], *paths[-4:]]:
        reply = send_to(server.port, "POST", path, body, {"Content-Type": "application/json"})
        assert reply.status == 404, (path, reply.status)
        error = json.loads(reply.body)["error"]
        assert ("'nosuch" in error) if "nosuch" in path else ("no route matches" in error), error
    for path in ("/v2/models/iris/infer", "/v2/models/iris/versions/1/infer"):
        _, values = v2_outputs(post_json(server.url, path, doc))
        np.testing.assert_array_equal(values["class"], ref.run(rows[:1])[1])
    reply = send_to(server.port, "GET", "/v2/models/iris/infer")
    assert reply.status == 405 and reply.headers["allow"] == "OPTIONS, POST"
    assert send_to(server.port, "GET", "/v2/health/live").status == 200
