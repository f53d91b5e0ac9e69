"""Real data sets of other shapes, end to end: scikit-learn's bundled wine (13 features, 3
classes) and breast cancer (30 features, 2 classes, trained with --impute mean) written to CSV,
trained and published by the training CLI, served by a real gunicorn, asked through every
protocol and the unmodified tritonclient; every answer equals onnxruntime's own run of the
published model.onnx on the same rows."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_breast_cancer, load_wine

from tests.support.models import train
from tests.support.net import Reply, send
from tests.support.server import Server, start_server
from tests.support.triton import infer_outputs

DATASETS = {"wine": (load_wine, ()), "cancer": (load_breast_cancer, ("--impute", "mean"))}


def write_csv(path: Path, loader: Any) -> tuple[np.ndarray, list[str]]:
    """The data set as a CSV with the label (the class's name) in the middle column."""
    bunch = loader()
    names = [str(n) for n in bunch.feature_names]
    middle = len(names) // 2
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*names[:middle], "label", *names[middle:]])
        for row, target in zip(bunch.data, bunch.target):
            out.writerow([*row[:middle], bunch.target_names[target], *row[middle:]])
    return bunch.data.astype(np.float32), names


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("datasets")
    repository = tmp / "repository"
    data: dict[str, Any] = {}
    for name, (loader, options) in DATASETS.items():
        x, features = write_csv(tmp / f"{name}.csv", loader)
        assert train(repository, "--data", str(tmp / f"{name}.csv"), "--label-column", "label",
                     "--epochs", "300", *options) == 0
        session = ort.InferenceSession(str(repository / name / "1" / "model.onnx"),
                                       providers=["CPUExecutionProvider"])
        data[name] = (x, features, session,
                      json.loads((repository / name / "1" / "metadata.json").read_text()))
    server = start_server(repository, tmp, workers=1, ready_path="/v2/health/ready")
    yield server, data
    assert server.stop() == 0, server.log()


def post(server: Server, path: str, doc: Any, headers: dict[str, str] | None = None) -> Reply:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return send(server.port, "POST", path, body, headers)


def reference(session: ort.InferenceSession, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probabilities, classes = session.run(["probabilities", "class"], {"input": x})
    return probabilities, classes


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_protocol_answers_as_onnxruntime(served: tuple[Server, dict[str, Any]],
                                               name: str) -> None:
    server, data = served
    x, features, session, metadata = data[name]
    x = x[::7]
    probabilities, classes = reference(session, x)
    labels = metadata["class_labels"]
    # V1: rows as lists, then as objects keyed by the feature names.
    for instances in (x.tolist(), [dict(zip(features, row)) for row in x.tolist()]):
        reply = post(server, f"/v1/models/{name}:predict", {"instances": instances})
        assert reply.status == 200, reply.body
        predictions = reply.json()["predictions"]
        np.testing.assert_array_equal([p["class"] for p in predictions], classes)
        assert [p["label"] for p in predictions] == [labels[c] for c in classes]
        np.testing.assert_array_equal(
            np.asarray([p["probabilities"] for p in predictions], np.float32), probabilities)
    # V2 JSON.
    reply = post(server, f"/v2/models/{name}/infer", {"inputs": [
        {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}]})
    assert reply.status == 200, reply.body
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    assert outputs["probabilities"]["shape"] == [len(x), len(labels)]
    np.testing.assert_array_equal(np.asarray(outputs["probabilities"]["data"], np.float32),
                                  probabilities.ravel())
    # V2 binary, by hand.
    header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    reply = post(server, f"/v2/models/{name}/infer", header + x.tobytes(),
                 {"Inference-Header-Content-Length": str(len(header))})
    assert reply.status == 200, reply.body
    np.testing.assert_array_equal([o["data"] for o in json.loads(reply.body)["outputs"]
                                   if o["name"] == "class"][0], classes)


@pytest.mark.parametrize("name", list(DATASETS))
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_unmodified(served: tuple[Server, dict[str, Any]], name: str,
                                 binary: bool) -> None:
    server, data = served
    x, _, session, metadata = data[name]
    x = np.ascontiguousarray(x[::11])
    probabilities, classes = reference(session, x)
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        assert client.get_model_metadata(name)["inputs"][0]["shape"] == [-1, x.shape[1]]
        tensor, answered, answered_classes = infer_outputs(client, name, x, binary)
        np.testing.assert_array_equal(answered, probabilities)
        np.testing.assert_array_equal(answered_classes, classes)
        top = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)
        best = client.infer(name, [tensor], outputs=[top]).as_numpy("probabilities")
        labels = metadata["class_labels"]
        for row, answer in zip(probabilities, best):
            first = answer[0].decode() if isinstance(answer[0], bytes) else answer[0]
            score, index, label = first.split(":", 2)
            assert int(index) == int(np.argmax(row)) and label == labels[int(index)]
    finally:
        client.close()


def test_a_missing_value_is_imputed_only_by_the_model_trained_to(
        served: tuple[Server, dict[str, Any]]) -> None:
    server, data = served
    for name, accepted in (("cancer", True), ("wine", False)):
        row: list[float | None] = data[name][0][0].tolist()
        row[3] = None
        reply = post(server, f"/v1/models/{name}:predict", {"instances": [row]})
        assert (reply.status == 200) is accepted, reply.body
        if not accepted:
            assert reply.status == 400 and "missing" in reply.json()["error"], reply.body
