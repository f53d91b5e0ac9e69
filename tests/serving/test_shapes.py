"""Any tabular classifier: models of F features and K classes, served side by side by one server.

The models are real ONNX linear classifiers of tests/support/models.py ``SHAPES`` (F in {1, 4,
13, 64, 784}, K in {2, 3, 10, 100}), published through ``modelrepo``. Every protocol — simple,
V1 rows as lists and objects, V2 JSON and binary, classification, the unmodified tritonclient,
V2 metadata, model configuration, the repository index — must answer each model in its own
shape, with exactly what onnxruntime, run here on the same model bytes, computes; errors name
the model's F and K; the model that imputes takes missing values, the others refuse them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

import modelrepo
from serving.model import LoadedModel
from tests.support.models import (SHAPES, class_labels, feature_names, linear_metadata,
                                  linear_model_bytes)
from tests.support.net import Reply, send
from tests.support.server import Server
from tests.support.triton import infer_outputs

HEADER_LENGTH = "Inference-Header-Content-Length"
NAMES = list(SHAPES)
EACH = pytest.mark.parametrize("name", NAMES)


@dataclass
class Reference:
    """One served model, run here by onnxruntime on the same bytes the server loaded."""

    name: str
    session: ort.InferenceSession
    n_features: int
    n_classes: int
    impute: bool

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities, classes = self.session.run(["probabilities", "class"], {"input": x})
        return probabilities, classes

    def rows(self, n: int, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).uniform(-3, 3, (n, self.n_features)).astype(np.float32)


@pytest.fixture(scope="module")
def references(shapes_repository: Path) -> dict[str, Reference]:
    found = {}
    for name, (n_features, n_classes, impute) in SHAPES.items():
        metadata, model_bytes = modelrepo.read_version(shapes_repository / name / "1")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as the server runs it
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        assert len(metadata["feature_names"]) == n_features
        found[name] = Reference(name, session, n_features, n_classes, impute)
    return found


def post(server: Server, path: str, doc: Any, headers: dict[str, str] | None = None) -> Reply:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return send(server.port, "POST", path, body, headers)


def ok_json(reply: Reply) -> Any:
    assert reply.status == 200, reply.body[:500]
    return reply.json()


def error(reply: Reply, status: int = 400) -> str:
    assert reply.status == status, reply.body[:500]
    doc = reply.json()
    assert list(doc) == ["error"], doc
    return str(doc["error"])


def assert_predictions(doc: dict[str, Any], ref: Reference, x: np.ndarray) -> None:
    probabilities, classes = ref.run(x)
    assert doc["model_name"] == ref.name and doc["model_version"] == "1"
    predictions = doc["predictions"]
    assert [p["class"] for p in predictions] == classes.tolist()
    labels = class_labels(ref.n_classes)
    assert [p["label"] for p in predictions] == [labels[c] for c in classes]
    served = np.array([p["probabilities"] for p in predictions], np.float32)
    assert served.shape == (len(x), ref.n_classes)
    np.testing.assert_array_equal(served, probabilities)


def v2_body(x: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}], **extra}


def binary_request(x: np.ndarray, **extra: Any) -> tuple[bytes, dict[str, str]]:
    raw = np.ascontiguousarray(x, "<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         **extra}).encode()
    return header + raw, {HEADER_LENGTH: str(len(header))}


def split_binary(reply: Reply) -> tuple[dict[str, Any], dict[str, bytes]]:
    length = int(reply.headers[HEADER_LENGTH.lower()])
    header = json.loads(reply.body[:length])
    raw, offset = {}, length
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        raw[output["name"]] = reply.body[offset:offset + size]
        offset += size
    assert offset == len(reply.body)
    return header, raw


# ----------------------------------------------------------------- what the server says of them


@EACH
def test_metadata_and_configuration_show_each_models_shape(shapes_server: Server,
                                                           name: str) -> None:
    n_features, n_classes, _ = SHAPES[name]
    doc = ok_json(send(shapes_server.port, "GET", f"/v2/models/{name}"))
    assert doc["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, n_features]}]
    assert doc["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]},
        {"name": "class", "datatype": "INT64", "shape": [-1]}]
    config = ok_json(send(shapes_server.port, "GET", f"/v2/models/{name}/config"))
    assert [t["dims"] for t in config["input"]] == [[-1, n_features]]
    assert [t["dims"] for t in config["output"]] == [[-1, n_classes], [-1]]


def test_config_pbtxt_has_each_models_dims(shapes_repository: Path) -> None:
    for name, (n_features, n_classes, _) in SHAPES.items():
        text = (shapes_repository / name / "config.pbtxt").read_text()
        assert f"dims: [ -1, {n_features} ]" in text and f"dims: [ -1, {n_classes} ]" in text


def test_repository_index_lists_every_shape_ready(shapes_server: Server) -> None:
    index = ok_json(post(shapes_server, "/v2/repository/index", {"ready": True}))
    assert sorted(e["name"] for e in index) == sorted(NAMES)
    assert {e["state"] for e in index} == {"READY"}


# ---------------------------------------------------------------------------------- inference


@EACH
def test_v1_rows_as_lists_and_as_objects(shapes_server: Server, references: dict[str, Reference],
                                         name: str) -> None:
    ref = references[name]
    x = ref.rows(3, seed=1)
    path = f"/v1/models/{name}:predict"
    assert_predictions(ok_json(post(shapes_server, path, {"instances": x.tolist()})), ref, x)
    names = feature_names(ref.n_features)
    objects = [dict(zip(reversed(names), reversed(row))) for row in x.tolist()]
    assert_predictions(ok_json(post(shapes_server, path, {"instances": objects})), ref, x)
    one = x[:1]  # the single-row fast path (for small F)
    assert_predictions(ok_json(post(shapes_server, path, {"instances": one.tolist()})), ref, one)


def test_simple_predict_serves_the_default_model(shapes_server: Server,
                                                 references: dict[str, Reference]) -> None:
    ref = references["wine"]
    x = ref.rows(2, seed=2)
    assert_predictions(ok_json(post(shapes_server, "/predict", {"instances": x.tolist()})),
                       ref, x)


@EACH
def test_v2_json_and_binary(shapes_server: Server, references: dict[str, Reference],
                            name: str) -> None:
    ref = references[name]
    x = ref.rows(4, seed=3)
    probabilities, classes = ref.run(x)
    doc = ok_json(post(shapes_server, f"/v2/models/{name}/infer", v2_body(x)))
    by_name = {o["name"]: o for o in doc["outputs"]}
    assert by_name["probabilities"]["shape"] == [4, ref.n_classes]
    np.testing.assert_array_equal(np.array(by_name["probabilities"]["data"], np.float32),
                                  probabilities.ravel())
    assert by_name["class"]["data"] == classes.tolist()

    body, headers = binary_request(x, parameters={"binary_data_output": True})
    reply = post(shapes_server, f"/v2/models/{name}/versions/1/infer", body, headers)
    assert reply.status == 200, reply.body[:300]
    header, raw = split_binary(reply)
    assert [o["shape"] for o in header["outputs"]] == [[4, ref.n_classes], [4]]
    np.testing.assert_array_equal(
        np.frombuffer(raw["probabilities"], "<f4").reshape(4, ref.n_classes), probabilities)
    np.testing.assert_array_equal(np.frombuffer(raw["class"], "<i8"), classes)


@EACH
def test_classification_top_k_uses_the_models_labels(shapes_server: Server,
                                                      references: dict[str, Reference],
                                                      name: str) -> None:
    ref = references[name]
    x = ref.rows(2, seed=4)
    probabilities, _ = ref.run(x)
    labels = class_labels(ref.n_classes)
    for k in sorted({1, min(3, ref.n_classes), ref.n_classes}):
        doc = ok_json(post(shapes_server, f"/v2/models/{name}/infer", v2_body(
            x, outputs=[{"name": "probabilities", "parameters": {"classification": k}}])))
        (output,) = doc["outputs"]
        assert output["datatype"] == "BYTES" and output["shape"] == [2, k]
        parsed = [s.split(":") for s in output["data"]]
        indices = np.array([int(i) for _, i, _ in parsed]).reshape(2, k)
        assert [label for _, _, label in parsed] == [labels[i] for i in indices.ravel()]
        expected = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(indices, expected)


@EACH
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_unmodified(shapes_server: Server, references: dict[str, Reference],
                                 name: str, binary: bool) -> None:
    ref = references[name]
    x = ref.rows(3, seed=5)
    probabilities, classes = ref.run(x)
    client = triton.InferenceServerClient(url=f"127.0.0.1:{shapes_server.port}")
    try:
        metadata = client.get_model_metadata(name)
        assert metadata["inputs"][0]["shape"] == [-1, ref.n_features]
        config = client.get_model_config(name)
        assert config["output"][0]["dims"] == [-1, ref.n_classes]
        tensor, answered, answered_classes = infer_outputs(client, name, x, binary)
        np.testing.assert_array_equal(answered, probabilities)
        np.testing.assert_array_equal(answered_classes, classes)
        k = min(3, ref.n_classes)
        result = client.infer(name, [tensor], outputs=[
            triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=k)])
        top = result.as_numpy("probabilities")
        assert top.shape == (3, k)
        labels = class_labels(ref.n_classes)
        best = [(v.decode() if isinstance(v, bytes) else v).split(":") for v in top[:, 0]]
        assert [int(i) for _, i, _ in best] == classes.tolist()
        assert [label for _, _, label in best] == [labels[c] for c in classes]
    finally:
        client.close()


def test_a_graph_of_another_shape_than_its_metadata_is_refused(tmp_path: Path) -> None:
    # The metadata is consistent (13 names, 3 labels, signature(13, 3)); the graph is 13 x 2.
    published = modelrepo.publish_version(tmp_path, "m", linear_model_bytes(13, 2),
                                          linear_metadata(13, 3))
    metadata, model_bytes = modelrepo.read_version(published.path)
    with pytest.raises(modelrepo.BrokenVersion, match="differ from metadata"):
        LoadedModel("m", 1, metadata, model_bytes, published.path)
    metadata, model_bytes = modelrepo.read_version(
        modelrepo.publish_version(tmp_path, "n", linear_model_bytes(13, 2),
                                  linear_metadata(13, 2)).path)
    model = LoadedModel("n", 1, metadata, model_bytes, published.path)
    assert (model.n_features, model.n_classes, model.impute) == (13, 2, False)


# ------------------------------------------------------------------------------------ errors


@EACH
def test_errors_name_the_models_shape(shapes_server: Server, name: str) -> None:
    n_features, n_classes, _ = SHAPES[name]
    numbers = f"list of {n_features} number"
    for width in (n_features - 1, n_features + 1):
        message = error(post(shapes_server, f"/v1/models/{name}:predict",
                             {"instances": [[0.5] * width]}))
        assert f"has {width} values" in message and numbers in message, message
        assert f"the features of model {name}" in message, message
        if width:
            message = error(post(shapes_server, f"/v2/models/{name}/infer",
                                 v2_body(np.zeros((1, width), np.float32))))
            assert f"{width} features per row" in message, message
            assert f"expected [N, {n_features}]" in message and f"model {name}" in message
    message = error(post(shapes_server, f"/v1/models/{name}:predict",
                         {"instances": [{"sepal_length": 1.0}]}))
    assert "lacks" in message and "f0" in message and f"model {name}" in message, message
    x = np.zeros((1, n_features), np.float32)
    message = error(post(shapes_server, f"/v2/models/{name}/infer", v2_body(
        x, outputs=[{"name": "probabilities", "parameters": {"classification": n_classes + 1}}])))
    assert f"from 1 to {n_classes}" in message and f"got {n_classes + 1}" in message
    body, headers = binary_request(np.zeros((1, n_features + 1), np.float32))
    body = body.replace(f"[1, {n_features + 1}]".encode(), f"[1, {n_features}]".encode())
    message = error(post(shapes_server, f"/v2/models/{name}/infer", body, headers))
    assert f"shape [1, {n_features}] of FP32 takes {4 * n_features} bytes" in message, message


# ------------------------------------------------------------------------- missing values


def test_the_imputing_model_takes_missing_values(shapes_server: Server,
                                                 references: dict[str, Reference]) -> None:
    ref = references["census"]
    assert ref.impute
    x = ref.rows(3, seed=6)
    x[0, 1] = x[2, 0] = x[2, 12] = np.nan
    instances: list[list[Any]] = [[None if v != v else v for v in row] for row in x.tolist()]
    path = "/v1/models/census:predict"
    assert_predictions(ok_json(post(shapes_server, path, {"instances": instances})), ref, x)
    assert_predictions(ok_json(post(shapes_server, path, {"instances": instances[:1]})), ref,
                       x[:1])
    objects = [dict(zip(feature_names(13), row)) for row in instances]
    assert_predictions(ok_json(post(shapes_server, path, {"instances": objects})), ref, x)
    probabilities, classes = ref.run(x)
    for data in ([v for row in instances for v in row], instances):  # flat and nested
        doc = ok_json(post(shapes_server, "/v2/models/census/infer", {"inputs": [{
            "name": "input", "shape": [3, 13], "datatype": "FP32", "data": data}]}))
        np.testing.assert_array_equal(np.array(doc["outputs"][0]["data"], np.float32),
                                      probabilities.ravel())
        assert doc["outputs"][1]["data"] == classes.tolist()
    body, headers = binary_request(x, parameters={"binary_data_output": True})
    header, raw = split_binary(post(shapes_server, "/v2/models/census/infer", body, headers))
    np.testing.assert_array_equal(np.frombuffer(raw["probabilities"], "<f4").reshape(3, 3),
                                  probabilities)
    # Missing is null or NaN; anything else bad is still refused, and so is infinity.
    bad = [[*instances[0][:12], "x"]]
    assert "instances[0][12] is the string" in error(post(shapes_server, path,
                                                          {"instances": bad}))
    x[1, 3] = np.inf
    body, headers = binary_request(x)
    assert "binary value 16 (row 1, column 3)" in error(
        post(shapes_server, "/v2/models/census/infer", body, headers))


@pytest.mark.parametrize("name", ["wine", "digits"])
def test_models_that_do_not_impute_refuse_missing_values(shapes_server: Server,
                                                         name: str) -> None:
    n_features = SHAPES[name][0]
    row: list[Any] = [0.5] * n_features
    row[n_features // 2] = None
    message = error(post(shapes_server, f"/v1/models/{name}:predict", {"instances": [row]}))
    assert f"instances[0][{n_features // 2}] is null" in message
    assert "does not accept missing values" in message
    message = error(post(shapes_server, f"/v2/models/{name}/infer", {"inputs": [{
        "name": "input", "shape": [1, n_features], "datatype": "FP32", "data": row}]}))
    assert f"data[{n_features // 2}] is null" in message
    x = np.zeros((1, n_features), np.float32)
    x[0, -1] = np.nan
    body, headers = binary_request(x)
    message = error(post(shapes_server, f"/v2/models/{name}/infer", body, headers))
    assert f"binary value {n_features - 1}" in message and "missing value" in message


def test_the_log_is_clean(shapes_server: Server) -> None:
    log = shapes_server.log()
    assert "Traceback" not in log and '"status":500' not in log.replace(" ", ""), log
    assert log.count("Booting worker") == 1, log
