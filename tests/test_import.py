"""``python -m modelrepo import``: real classifiers, exported by the real converters, imported,
served by a real gunicorn, and compared with the libraries' own predictions.

scikit-learn models are exported with skl2onnx (ZipMap left in and taken out), a PyTorch MLP
with torch.onnx.export (logits out). Every refusal is tried, and the repository must be byte for
byte unchanged after it. The import command itself must never need torch.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from onnx import TensorProto, helper
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skl2onnx import to_onnx

import modelrepo
from modelrepo.__main__ import main
from tests.support import ROOT
from tests.support.models import publish_linear_model
from tests.support.net import send, wait_until
from tests.support.server import Server, start_server
from tests.support.triton import infer_outputs

F, K = 6, 3
# Served probabilities against predict_proba: float32 graphs against float64 scikit-learn.
# Linear models stay within 1e-5; tree ensembles sum float32 leaf values, so 1e-4 is allowed
# (the figures measured are far below both; see the closing note of issue 15).
LINEAR_TOLERANCE = 1e-5
TREE_TOLERANCE = 1e-4
TIE = 1e-6  # two top probabilities this close are a tie: argmax may pick either


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = make_classification(n_samples=400, n_features=F, n_informative=4, n_redundant=1,
                               n_classes=K, random_state=0)
    x = x.astype(np.float32)  # what clients send and the server runs on
    return x[:300], y[:300], x[300:], y[300:]


X_TRAIN, Y_TRAIN, X_TEST, Y_TEST = _data()
NAMES = [f"f{i}" for i in range(F)]


def write_sample(path: Path, x: np.ndarray, y: np.ndarray | None,
                 labels: list[str] | None = None) -> Path:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*NAMES, *(["target"] if y is not None else [])])
        for i, row in enumerate(x):
            label = [] if y is None else [labels[y[i]] if labels else str(y[i])]
            out.writerow([repr(float(v)) for v in row] + label)
    return path


def run_import(repository: Path, *args: str) -> int:
    return main(["--artifacts", str(repository), "import", *args])


def snapshot(repository: Path) -> dict[str, str]:
    """Every file under the repository with its sha256: what 'unchanged' means."""
    return {str(p.relative_to(repository)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(repository.rglob("*")) if p.is_file()}


def sklearn_models() -> dict[str, tuple[Any, dict[str, Any], float]]:
    """name: (fitted model, skl2onnx options, tolerance)."""
    lr = LogisticRegression(max_iter=1000).fit(X_TRAIN, Y_TRAIN)
    rf = RandomForestClassifier(n_estimators=25, max_depth=6, random_state=0).fit(X_TRAIN,
                                                                                  Y_TRAIN)
    # HistGradientBoostingClassifier: skl2onnx 1.20 fails on scikit-learn 1.9's trees
    # (a bool in an ints attribute), so the classic GradientBoostingClassifier stands in.
    gb = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(
        X_TRAIN, Y_TRAIN)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
        X_TRAIN.astype(np.float64), Y_TRAIN)
    return {
        "lr": (lr, {}, LINEAR_TOLERANCE),  # ZipMap left in: unwrapped
        "rf": (rf, {id(rf): {"zipmap": False}}, TREE_TOLERANCE),
        "gb": (gb, {}, TREE_TOLERANCE),
        "pipe": (pipe, {id(pipe): {"zipmap": False}}, LINEAR_TOLERANCE),  # FP64 input: cast
    }


class Imports:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.repository = folder / "repository"
        self.models = sklearn_models()
        self.sample = write_sample(folder / "sample.csv", X_TEST, Y_TEST)
        self.files: dict[str, Path] = {}
        for name, (model, options, _) in self.models.items():
            dtype = np.float64 if name == "pipe" else np.float32
            proto = to_onnx(model, X_TRAIN[:1].astype(dtype), options=options or None)
            path = folder / f"{name}.onnx"
            path.write_bytes(proto.SerializeToString())
            self.files[name] = path
            assert run_import(self.repository, str(path), "--name", name, "--sample",
                              str(self.sample)) == 0


@pytest.fixture(scope="module")
def imports(tmp_path_factory: pytest.TempPathFactory) -> Imports:
    return Imports(tmp_path_factory.mktemp("imports"))


@pytest.fixture(scope="module")
def imported_server(imports: Imports,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(imports.repository, tmp_path_factory.mktemp("import-logs"), workers=1,
                       ready_path="/v2/health/ready")
    yield srv
    assert srv.stop() == 0, srv.log()


def served(server: Server, name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    reply = send(server.port, "POST", f"/v2/models/{name}/infer", body,
                 {"Content-Type": "application/json"})
    assert reply.status == 200, reply.body
    outputs = {o["name"]: o for o in json.loads(reply.body)["outputs"]}
    probabilities = np.asarray(outputs["probabilities"]["data"], dtype=np.float64)
    return (probabilities.reshape(outputs["probabilities"]["shape"]),
            np.asarray(outputs["class"]["data"], dtype=np.int64))


@pytest.mark.parametrize("name", ["lr", "rf", "gb", "pipe"])
def test_scikit_learn_models_serve_their_own_predictions(imports: Imports,
                                                         imported_server: Server,
                                                         name: str) -> None:
    model, _, tolerance = imports.models[name]
    x = np.concatenate([X_TEST, X_TRAIN[:50]])
    probabilities, classes = served(imported_server, name, x)
    expected = model.predict_proba(x.astype(np.float64))
    assert probabilities.shape == expected.shape == (len(x), K)
    assert np.max(np.abs(probabilities - expected)) <= tolerance
    top2 = np.sort(expected, axis=1)[:, -2:]
    ties = np.abs(top2[:, 1] - top2[:, 0]) <= TIE
    mismatched = classes != model.predict(x.astype(np.float64))
    assert not np.any(mismatched & ~ties), f"{int(ties.sum())} ties"

    metadata = json.loads((imports.repository / name / "1" / "metadata.json").read_text())
    source = metadata["source"]
    assert source["kind"] == "import"
    assert source["sha256"] == hashlib.sha256(imports.files[name].read_bytes()).hexdigest()
    assert source["producer_name"] == "skl2onnx"
    assert "ai.onnx.ml" in source["domains"] or name == "pipe"
    assert source["scores"]["kind"] == "probabilities"
    assert source["scores"]["zipmap_unwrapped"] == (name in ("lr", "gb"))
    assert source["input"]["datatype"] == ("DOUBLE" if name == "pipe" else "FLOAT")
    assert metadata["class_labels"] == ["0", "1", "2"]  # skl2onnx's own classes_
    assert metadata["feature_names"] == NAMES  # the sample's header
    assert metadata["parity"]["passed"] and metadata["parity"]["max_abs_diff"] <= 1e-5
    assert metadata["parity"]["argmax_agreement"] == 1.0
    sample = metadata["metrics"]["sample"]
    assert sample["rows"] == len(X_TEST)
    assert sample["accuracy"] == pytest.approx(np.mean(model.predict(X_TEST) == Y_TEST))
    assert np.asarray(sample["confusion_matrix"]).sum() == len(X_TEST)
    # One self-contained file, the served signature, a Triton config beside it.
    proto = onnx.load(str(imports.repository / name / "1" / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["probabilities", "class"]
    assert not any(n.op_type == "ZipMap" for n in proto.graph.node)
    config = (imports.repository / name / "config.pbtxt").read_text()
    assert f"dims: [ -1, {F} ]" in config and f"dims: [ -1, {K} ]" in config


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_against_the_imported_forest(imports: Imports, imported_server: Server,
                                                  binary: bool) -> None:
    model = imports.models["rf"][0]
    client = triton.InferenceServerClient(url=f"127.0.0.1:{imported_server.port}")
    try:
        assert client.is_model_ready("rf")
        meta = client.get_model_metadata("rf")
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, F]}]
        _, probabilities, classes = infer_outputs(client, "rf", X_TEST, binary)
    finally:
        client.close()
    assert probabilities.dtype == np.float32 and classes.dtype == np.int64
    assert np.max(np.abs(probabilities - model.predict_proba(X_TEST))) <= TREE_TOLERANCE
    expected = model.predict_proba(X_TEST)
    top2 = np.sort(expected, axis=1)[:, -2:]
    ties = np.abs(top2[:, 1] - top2[:, 0]) <= TIE
    assert not np.any((classes != model.predict(X_TEST)) & ~ties)


def test_an_import_while_serving_is_picked_up_and_rolled_back(imports: Imports,
                                                              imported_server: Server) -> None:
    """Versions, hot reload and rollback work for imports as for trained models: "late" is
    imported into the running server's repository twice, then rolled back to version 1."""
    def serves(number: int) -> None:
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, F], "datatype": "FP32",
                                       "data": X_TEST[0].tolist()}]}).encode()
        reply = send(imported_server.port, "POST", "/v2/models/late/infer", body,
                     {"Content-Type": "application/json"})
        assert reply.status == 200 and json.loads(reply.body)["model_version"] == str(number)

    for number, name in ((1, "lr"), (2, "gb")):
        assert run_import(imports.repository, str(imports.files[name]), "--name", "late",
                          "--sample", str(imports.sample)) == 0
        wait_until(lambda n=number: serves(n), timeout=20)
    gb = imports.models["gb"][0]
    probabilities, _ = served(imported_server, "late", X_TEST)
    assert np.max(np.abs(probabilities - gb.predict_proba(X_TEST))) <= TREE_TOLERANCE
    assert main(["--artifacts", str(imports.repository), "rollback", "late"]) == 0
    wait_until(lambda: serves(1), timeout=20)
    lr = imports.models["lr"][0]
    probabilities, _ = served(imported_server, "late", X_TEST)
    assert np.max(np.abs(probabilities - lr.predict_proba(X_TEST))) <= LINEAR_TOLERANCE


def test_string_labels_come_from_the_graph(tmp_path: Path) -> None:
    names = np.array(["ant", "bee", "cat"])
    model = LogisticRegression(max_iter=1000).fit(X_TRAIN, names[Y_TRAIN])
    path = tmp_path / "animals.onnx"
    path.write_bytes(to_onnx(model, X_TRAIN[:1]).SerializeToString())
    sample = write_sample(tmp_path / "s.csv", X_TEST, Y_TEST, labels=list(names))
    repository = tmp_path / "repository"
    assert run_import(repository, str(path), "--name", "animals", "--sample", str(sample)) == 0
    metadata, model_bytes = modelrepo.read_version(repository / "animals" / "1")
    assert metadata["class_labels"] == ["ant", "bee", "cat"]
    assert metadata["source"]["class_labels_from"] == "the graph"
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    probabilities, classes = session.run(None, {"input": X_TEST})
    assert np.max(np.abs(probabilities - model.predict_proba(X_TEST))) <= LINEAR_TOLERANCE
    assert list(names[classes]) == list(model.predict(X_TEST))


def test_a_torch_mlp_with_logits_gets_a_softmax(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(F, 16), torch.nn.ReLU(), torch.nn.Linear(16, K))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    x, y = torch.from_numpy(X_TRAIN), torch.from_numpy(Y_TRAIN.astype(np.int64))
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    net.eval()
    path = tmp_path / "mlp.onnx"
    # torch's own exporter (dynamo, the default), a dynamic batch axis, logits out.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    program = torch.onnx.export(net, (x[:2],), dynamo=True, external_data=False, verbose=False,
                                input_names=["input"], output_names=["logits"],
                                dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    path.write_bytes(program.model_proto.SerializeToString())
    repository = tmp_path / "repository"
    sample = write_sample(tmp_path / "s.csv", X_TEST, Y_TEST, labels=["a", "b", "c"])
    assert run_import(repository, str(path), "--name", "mlp", "--sample", str(sample),
                      "--labels", "a,b,c") == 0
    metadata, model_bytes = modelrepo.read_version(repository / "mlp" / "1")
    assert metadata["source"]["scores"]["kind"] == "logits"
    assert "Softmax" in metadata["source"]["added_nodes"]
    assert metadata["source"]["producer_name"] == "pytorch"
    assert metadata["class_labels"] == ["a", "b", "c"]
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(X_TEST)), dim=1).numpy()
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    probabilities, classes = session.run(["probabilities", "class"], {"input": X_TEST})
    assert np.max(np.abs(probabilities - expected)) <= LINEAR_TOLERANCE
    top2 = np.sort(expected, axis=1)[:, -2:]
    ties = np.abs(top2[:, 1] - top2[:, 0]) <= TIE
    assert not np.any((classes != expected.argmax(axis=1)) & ~ties)


def test_external_data_is_inlined_and_logits_need_no_sample(tmp_path: Path) -> None:
    """A hand-made logits graph (Gemm at the end) with its weights in an external file: the
    graph says logits, synthetic rows confirm it, and the published file holds the weights."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(F, K)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W"], ["scores"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", F])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", K])],
        [onnx.numpy_helper.from_array(w, "W")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    folder = tmp_path / "src"
    folder.mkdir()
    onnx.save_model(proto, str(folder / "gemm.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    assert (folder / "weights.bin").stat().st_size == w.nbytes
    repository = tmp_path / "repository"
    size = (folder / "gemm.onnx").stat().st_size
    assert run_import(repository, str(folder / "gemm.onnx"), "--name", "gemm",
                      "--max-bytes", str(size + 10)) == 2  # the file fits, its weights do not
    assert not repository.exists()
    assert run_import(repository, str(folder / "gemm.onnx"), "--name", "gemm") == 0
    metadata, model_bytes = modelrepo.read_version(repository / "gemm" / "1")
    assert metadata["source"]["external_data_inlined"] is True
    assert metadata["source"]["scores"]["kind"] == "logits"
    assert metadata["feature_names"] == [f"x{i + 1}" for i in range(F)]
    assert metadata["class_labels"] == ["0", "1", "2"]
    loaded = onnx.load_model_from_string(model_bytes)
    assert all(t.data_location != TensorProto.EXTERNAL for t in loaded.graph.initializer)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    probabilities, _ = session.run(["probabilities", "class"], {"input": X_TEST})
    logits = X_TEST.astype(np.float64) @ w
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    assert np.max(np.abs(probabilities - expected)) <= LINEAR_TOLERANCE


# ------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("location", ["../outside.bin", "missing.bin"])
def test_external_data_outside_the_folder_or_missing_is_refused(
        tmp_path: Path, location: str, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "outside.bin").write_bytes(np.ones((F, K), np.float32).tobytes())
    weights = onnx.numpy_helper.from_array(np.ones((F, K), np.float32), "W")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    entry = weights.external_data.add()
    entry.key, entry.value = "location", location
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "m.onnx"
    path.write_bytes(_graph_model([_float("x", ["N", F])], [_float("y", ["N", K])],
                                  [helper.make_node("MatMul", ["x", "W"], ["y"])],
                                  initializers=[weights]))
    assert run_import(tmp_path / "repository", str(path), "--name", "m") == 2
    assert "external data files that cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "repository").exists()


def _graph_model(inputs: list[Any], outputs: list[Any], nodes: list[Any],
                 opsets: list[Any] | None = None, initializers: list[Any] | None = None) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers or [])
    proto = helper.make_model(graph, opset_imports=opsets or [helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto.SerializeToString()


def _float(name: str, shape: list[Any]) -> Any:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


_W = onnx.numpy_helper.from_array(np.ones((F, K), np.float32), "W")
REFUSALS: dict[str, tuple[Any, list[str], str]] = {
    # name: (file bytes or a maker, extra arguments, what the message must say)
    "pickle": (pickle.dumps({"coef": [1.0, 2.0]}), [],
               "looks like a Python pickle"),
    "not-onnx": (b"feature,label\n1,2\n", [], "is not an ONNX model"),
    "zip": (b"PK\x03\x04" + b"\0" * 40, [], "is a zip archive"),
    "two-inputs": (_graph_model([_float("a", ["N", F]), _float("b", ["N", F])],
                                [_float("s", ["N", F])],
                                [helper.make_node("Add", ["a", "b"], ["s"])]), [],
                   "has 2 inputs"),
    "string-input": (_graph_model(
        [helper.make_tensor_value_info("x", TensorProto.STRING, ["N", F])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, ["N", F])],
        [helper.make_node("Identity", ["x"], ["y"])]), [], "not numeric"),
    "free-features": (_graph_model([_float("x", ["N", "F"])], [_float("y", ["N", "F"])],
                                   [helper.make_node("Relu", ["x"], ["y"])]), [],
                      "feature dimension is not fixed"),
    "fixed-batch": (_graph_model([_float("x", [1, F])], [_float("y", [1, K])],
                                 [helper.make_node("MatMul", ["x", "W"], ["y"])],
                                 initializers=[_W]), [], "batch dimension is fixed at 1"),
    "no-scores": (_graph_model([_float("x", ["N", F])], [_float("y", ["N"])],
                               [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)]), [],
                  "none of the model's outputs holds scores"),
    "one-column": (_graph_model([_float("x", ["N", F])], [_float("y", ["N", 1])],
                                [helper.make_node("MatMul", ["x", "W1"], ["y"])],
                                initializers=[onnx.numpy_helper.from_array(
                                    np.ones((F, 1), np.float32), "W1")]),
                   ["--scores", "logits"], "expected K >= 2 columns"),
    "several-scores": (_graph_model([_float("x", ["N", F])],
                                    [_float("y", ["N", K]), _float("z", ["N", K])],
                                    [helper.make_node("MatMul", ["x", "W"], ["y"]),
                                     helper.make_node("Relu", ["y"], ["z"])],
                                    initializers=[_W]), [], "several outputs could hold"),
    "domain": (_graph_model([_float("x", ["N", F])], [_float("y", ["N", K])],
                            [helper.make_node("Magic", ["x"], ["y"], domain="com.example")],
                            opsets=[helper.make_opsetid("", 17),
                                    helper.make_opsetid("com.example", 1)]), [],
               "operator domain 'com.example'"),
    "opset": (_graph_model([_float("x", ["N", F])], [_float("y", ["N", K])],
                           [helper.make_node("MatMul", ["x", "W"], ["y"])],
                           opsets=[helper.make_opsetid("", 99)], initializers=[_W]), [],
              "opset 99"),
    "ml-opset": (_graph_model([_float("x", ["N", F])], [_float("y", ["N", K])],
                              [helper.make_node("MatMul", ["x", "W"], ["y"])],
                              opsets=[helper.make_opsetid("", 17),
                                      helper.make_opsetid("ai.onnx.ml", 99)],
                              initializers=[_W]), [], "ai.onnx.ml opset 99"),
    "too-big": ("lr", ["--max-bytes", "100"], "over the limit of 100 bytes"),
    "labels": ("lr", ["--labels", "a,b"], "--labels names 2 labels, the model has 3"),
    "features": ("lr", ["--features", "a,b,c"], "--features names 3 features, the model has 6"),
    "not-probabilities": ("gemm", ["--scores", "probabilities"],
                          "--scores probabilities, but the output"),
    "cannot-tell": ("relu", [], "cannot tell whether output"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_say_why_and_publish_nothing(imports: Imports, tmp_path: Path, case: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    content, extra, expected = REFUSALS[case]
    repository = tmp_path / "repository"
    publish_linear_model(repository, "clf", F, K)
    before = snapshot(repository)
    if content == "lr":
        path = imports.files["lr"]
    elif content in ("gemm", "relu"):
        op = "MatMul" if content == "gemm" else "Relu"
        nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]),
                 helper.make_node(op, ["m"] + (["V"] if op == "MatMul" else []), ["y"])]
        v = onnx.numpy_helper.from_array(np.eye(K, dtype=np.float32) * 5, "V")
        path = tmp_path / f"{content}.onnx"
        path.write_bytes(_graph_model([_float("x", ["N", F])], [_float("y", ["N", K])], nodes,
                                      initializers=[_W, v]))
    else:
        path = tmp_path / ("model.pkl" if case == "pickle" else f"{case}.onnx")
        path.write_bytes(content)
    capsys.readouterr()
    assert run_import(repository, str(path), "--name", "clf", *extra) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "nothing was published" in err
    assert snapshot(repository) == before


def test_a_pickle_is_refused_by_its_bytes_whatever_its_name(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(pickle.dumps(LogisticRegression()))
    assert run_import(tmp_path / "repository", str(path), "--name", "clf") == 2
    assert "never unpickles" in capsys.readouterr().err
    assert not (tmp_path / "repository").exists()


def test_the_promotion_gate_guards_imports(imports: Imports, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    repository = tmp_path / "repository"
    assert run_import(repository, str(imports.files["lr"]), "--name", "m", "--sample",
                      str(imports.sample)) == 0
    # A worse model: trained on shuffled labels.
    rng = np.random.default_rng(0)
    worse = LogisticRegression(max_iter=200).fit(X_TRAIN, rng.permutation(Y_TRAIN))
    path = tmp_path / "worse.onnx"
    path.write_bytes(to_onnx(worse, X_TRAIN[:1]).SerializeToString())
    before = snapshot(repository)
    capsys.readouterr()
    assert run_import(repository, str(path), "--name", "m", "--sample", str(imports.sample)) == 1
    err = capsys.readouterr().err
    assert "promotion gate: candidate accuracy" in err and "--force overrides" in err
    assert snapshot(repository) == before
    # Other feature names: refused even without labels, and the message says --name.
    assert run_import(repository, str(imports.files["lr"]), "--name", "m",
                      "--features", "a,b,c,d,e,f") == 1
    assert "feature names differ from version 1's" in capsys.readouterr().err
    assert snapshot(repository) == before
    assert run_import(repository, str(path), "--name", "m", "--sample", str(imports.sample),
                      "--force") == 0
    metadata, _ = modelrepo.read_version(repository / "m" / "2")
    assert metadata["promotion"]["forced"] is True
    assert metadata["promotion"]["against_version"] == 1


def test_imports_follow_the_traffic_policy(imports: Imports, tmp_path: Path) -> None:
    """An import publishes like training: --no-promote leaves production where it is (and
    tags the new version candidate), a plain import moves production, and the gate compares
    with production — the version served — not with the newest version."""
    from modelrepo import policy

    repository = tmp_path / "repository"
    model_dir = repository / "m"
    sample = str(imports.sample)
    assert run_import(repository, str(imports.files["lr"]), "--name", "m", "--sample",
                      sample) == 0
    assert run_import(repository, str(imports.files["rf"]), "--name", "m", "--sample", sample,
                      "--no-promote") == 0
    assert policy.read_policy(model_dir).aliases == {"production": 1, "candidate": 2}
    # A worse model that --force published as version 3 while production stays 1.
    rng = np.random.default_rng(0)
    worse = LogisticRegression(max_iter=200).fit(X_TRAIN, rng.permutation(Y_TRAIN))
    path = tmp_path / "worse.onnx"
    path.write_bytes(to_onnx(worse, X_TRAIN[:1]).SerializeToString())
    assert run_import(repository, str(path), "--name", "m", "--sample", sample, "--force",
                      "--no-promote") == 0
    assert policy.read_policy(model_dir).production == 1
    # The gate judges the next candidate against production (1), not the worse version 3.
    assert run_import(repository, str(imports.files["gb"]), "--name", "m", "--sample",
                      sample) == 0
    metadata, _ = modelrepo.read_version(model_dir / "4")
    assert metadata["promotion"]["against_version"] == 1
    assert policy.read_policy(model_dir).production == 4


def test_dry_run_publishes_nothing(imports: Imports, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    assert run_import(repository, str(imports.files["gb"]), "--name", "m", "--dry-run") == 0
    assert modelrepo.version_dirs(repository / "m") == {}


def test_the_command_never_imports_torch_and_serving_never_imports_onnx(
        imports: Imports, tmp_path: Path) -> None:
    """The import runs with torch made unimportable; the modules serving and the other
    subcommands load do not import onnx; without onnx the command says how to get it."""
    block = "import sys; sys.modules['{}'] = None; from modelrepo.__main__ import main; "
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    repository = tmp_path / "repository"
    code = block.format("torch") + (
        f"sys.exit(main(['--artifacts', {str(repository)!r}, 'import', "
        f"{str(imports.files['rf'])!r}, '--name', 'rf', '--sample', {str(imports.sample)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert modelrepo.version_dirs(repository / "rf").keys() == {1}

    code = ("import sys, modelrepo, modelrepo.__main__, modelrepo.gate; "
            "assert 'onnx' not in sys.modules, 'onnx imported'")
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0

    code = block.format("onnx") + (
        f"sys.exit(main(['--artifacts', {str(repository)!r}, 'import', "
        f"{str(imports.files['rf'])!r}, '--name', 'rf']))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "pip install 'softserve[import]'" in done.stderr
    assert modelrepo.version_dirs(repository / "rf").keys() == {1}


def test_an_integer_input_is_cast_inside_the_graph(tmp_path: Path) -> None:
    """A model that takes INT64 features gets a Cast from the served FP32 input."""
    w = np.arange(F * K, dtype=np.float32).reshape(F, K) / 10
    path = tmp_path / "ints.onnx"
    path.write_bytes(_graph_model(
        [helper.make_tensor_value_info("counts", TensorProto.INT64, ["N", F])],
        [_float("scores", ["N", K])],
        [helper.make_node("Cast", ["counts"], ["c"], to=TensorProto.FLOAT),
         helper.make_node("MatMul", ["c", "W"], ["scores"])],
        initializers=[onnx.numpy_helper.from_array(w, "W")]))
    repository = tmp_path / "repository"
    assert run_import(repository, str(path), "--name", "ints", "--scores", "logits") == 0
    metadata, model_bytes = modelrepo.read_version(repository / "ints" / "1")
    assert metadata["source"]["input"] == {"name": "counts", "datatype": "INT64"}
    assert metadata["source"]["scores"]["decided_by"] == "--scores"
    assert metadata["source"]["added_nodes"][0] == "Cast to INT64"
    counts = np.random.default_rng(2).integers(0, 5, (20, F))
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    probabilities, classes = session.run(["probabilities", "class"],
                                         {"input": counts.astype(np.float32)})
    logits = counts @ w.astype(np.float64)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    assert np.max(np.abs(probabilities - expected)) <= LINEAR_TOLERANCE
    assert list(classes) == list(expected.argmax(1))


def test_help_names_the_extra_and_the_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["import", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "pip install 'softserve[import]'" in text
    for option in ("--name", "--labels", "--features", "--sample", "--scores",
                   "--probabilities-output", "--force", "--max-bytes", "--dry-run"):
        assert option in text
    assert "never unpickled" in text


@pytest.mark.parametrize(("name", "expected"), [("stats", "is reserved"),
                                                ("../up", "invalid model name")])
def test_the_name_rules_of_training_apply(imports: Imports, tmp_path: Path, name: str,
                                          expected: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert run_import(tmp_path / "repository", str(imports.files["lr"]), "--name", name) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "repository").exists()
