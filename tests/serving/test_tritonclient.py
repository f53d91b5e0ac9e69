"""The real, unmodified tritonclient against the session's running server.

Results must equal onnxruntime's own run of the same model.onnx on the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.support.server import Server
from training.data import iris

LABELS = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def session(iris_repository: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the server runs it
    return ort.InferenceSession(str(iris_repository / "iris" / "1" / "model.onnx"), options,
                                providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    rng = np.random.default_rng(11)
    extra = rng.uniform(-10, 10, size=(25, 4)).astype(np.float32)
    return np.ascontiguousarray(np.concatenate([iris().features, extra]), dtype=np.float32)


def reference(session: ort.InferenceSession, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probabilities, classes = session.run(["probabilities", "class"],
                                         {"input": np.ascontiguousarray(x, np.float32)})
    return probabilities, classes


def make_input(x: np.ndarray, binary: bool, datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def test_health(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() is True
    assert client.is_server_ready() is True
    assert client.is_model_ready("iris") is True
    assert client.is_model_ready("iris", model_version="1") is True
    assert client.is_model_ready("nope") is False
    assert client.is_model_ready("iris", model_version="2") is False


def test_server_metadata(client: triton.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata["name"] == "softserve"
    assert {"binary_tensor_data", "classification"} <= set(metadata["extensions"])


@pytest.mark.parametrize("version", ["", "1"])
def test_model_metadata(client: triton.InferenceServerClient, version: str) -> None:
    metadata = client.get_model_metadata("iris", model_version=version)
    assert metadata["name"] == "iris"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in metadata["outputs"]] == ["probabilities", "class"]


@pytest.mark.parametrize("binary_output", [False, True], ids=["json-out", "binary-out"])
@pytest.mark.parametrize("binary_input", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("version", ["", "1"])
def test_infer(client: triton.InferenceServerClient, session: ort.InferenceSession,
               rows: np.ndarray, binary_input: bool, binary_output: bool, version: str) -> None:
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary_output),
               triton.InferRequestedOutput("class", binary_data=binary_output)]
    result = client.infer("iris", [make_input(rows, binary_input)], model_version=version,
                          outputs=outputs)
    probabilities, classes = reference(session, rows)
    served_p = result.as_numpy("probabilities")
    served_c = result.as_numpy("class")
    assert served_p.dtype == np.float32 and served_p.shape == (len(rows), 3)
    assert served_c.dtype == np.int64 and served_c.shape == (len(rows),)
    np.testing.assert_array_equal(served_p, probabilities)
    np.testing.assert_array_equal(served_c, classes)
    response = result.get_response()
    assert response["model_name"] == "iris" and response["model_version"] == "1"


def test_infer_without_requested_outputs(client: triton.InferenceServerClient,
                                         session: ort.InferenceSession,
                                         rows: np.ndarray) -> None:
    result = client.infer("iris", [make_input(rows, binary=True)])
    probabilities, classes = reference(session, rows)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)
    np.testing.assert_array_equal(result.as_numpy("class"), classes)


@pytest.mark.parametrize("datatype", ["FP64", "INT32", "INT64"])
@pytest.mark.parametrize("binary_input", [False, True], ids=["json-in", "binary-in"])
def test_infer_other_input_datatypes(client: triton.InferenceServerClient,
                                     session: ort.InferenceSession, rows: np.ndarray,
                                     datatype: str, binary_input: bool) -> None:
    dtype = {"FP64": np.float64, "INT32": np.int32, "INT64": np.int64}[datatype]
    x = (rows.astype(np.float64) + 1e-4) if datatype == "FP64" else np.rint(rows).astype(dtype)
    result = client.infer("iris", [make_input(x, binary_input, datatype)])
    probabilities, classes = reference(session, x.astype(np.float32))
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)
    np.testing.assert_array_equal(result.as_numpy("class"), classes)


def test_infer_one_output(client: triton.InferenceServerClient, session: ort.InferenceSession,
                          rows: np.ndarray) -> None:
    result = client.infer("iris", [make_input(rows, binary=False)],
                          outputs=[triton.InferRequestedOutput("class", binary_data=False)])
    assert result.as_numpy("probabilities") is None
    np.testing.assert_array_equal(result.as_numpy("class"), reference(session, rows)[1])


@pytest.mark.parametrize("binary_output", [False, True], ids=["json-out", "binary-out"])
@pytest.mark.parametrize("class_count", [1, 2, 3])
def test_classification(client: triton.InferenceServerClient, session: ort.InferenceSession,
                        rows: np.ndarray, class_count: int, binary_output: bool) -> None:
    output = triton.InferRequestedOutput("probabilities", binary_data=binary_output,
                                         class_count=class_count)
    result = client.infer("iris", [make_input(rows, binary=True)], outputs=[output])
    served = result.as_numpy("probabilities")
    assert served.shape == (len(rows), class_count)
    probabilities, classes = reference(session, rows)
    expected = np.argsort(-probabilities, axis=1, kind="stable")[:, :class_count]
    for r, row in enumerate(served):
        for k, item in enumerate(row):
            text = item.decode() if isinstance(item, bytes) else item
            p, index, label = text.split(":", 2)
            assert int(index) == expected[r, k], (r, text)
            assert label == LABELS[int(index)]
            assert p == f"{float(probabilities[r, int(index)]):f}"  # Triton prints with %f
    first = np.array([int(item.decode().split(":")[1]) if isinstance(item, bytes) else
                      int(item.split(":")[1]) for item in served[:, 0]])
    np.testing.assert_array_equal(first, classes)


def test_request_id_is_echoed(client: triton.InferenceServerClient, rows: np.ndarray) -> None:
    result = client.infer("iris", [make_input(rows[:3], binary=True)], request_id="req-42")
    assert result.get_response()["id"] == "req-42"


@pytest.mark.parametrize("binary_input", [False, True], ids=["json-in", "binary-in"])
def test_bad_request_raises_with_the_servers_message(client: triton.InferenceServerClient,
                                                     rows: np.ndarray,
                                                     binary_input: bool) -> None:
    x = rows[:2, :3]  # three features: the model takes four
    with pytest.raises(InferenceServerException) as info:
        client.infer("iris", [make_input(np.ascontiguousarray(x), binary_input)])
    assert info.value.status() == "400"
    assert "3 features per row" in info.value.message()
    assert "[N, 4]" in info.value.message()


def test_unknown_model_and_version_raise(client: triton.InferenceServerClient,
                                         rows: np.ndarray) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [make_input(rows[:1], binary=True)])
    assert info.value.status() == "404" and "unknown model 'nope'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer("iris", [make_input(rows[:1], binary=True)], model_version="7")
    assert info.value.status() == "404" and "no version '7'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("nope")
    assert info.value.status() == "404"


def test_model_repository_index(client: triton.InferenceServerClient) -> None:
    """Triton's model-repository extension, read-only: the index lists every version."""
    assert "model_repository" in client.get_server_metadata()["extensions"]
    assert client.get_model_repository_index() == [
        {"name": "iris", "version": "1", "state": "READY", "reason": ""}]


@pytest.mark.parametrize("version", ["", "1"])
def test_model_config(client: triton.InferenceServerClient, iris_repository: Path,
                      version: str) -> None:
    """Triton's model-configuration extension: config.pbtxt's content as JSON."""
    assert "model_configuration" in client.get_server_metadata()["extensions"]
    config = client.get_model_config("iris", version)
    assert config["name"] == "iris" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 0
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1, 4]}]
    assert config["output"] == [
        {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [-1, 3]},
        {"name": "class", "data_type": "TYPE_INT64", "dims": [-1]}]
    # The same facts as the config.pbtxt Triton itself would read.
    pbtxt = (iris_repository / "iris" / "config.pbtxt").read_text()
    assert 'data_type: TYPE_FP32\n    dims: [ -1, 4 ]' in pbtxt


def test_model_load_is_refused_with_the_reason(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="read-only"):
        client.load_model("iris")
