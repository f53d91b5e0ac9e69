"""Tiny real models: iris trained through the training CLI into a repository folder, and linear
classifiers of any shape built with onnx.helper (no torch), published through modelrepo."""

from __future__ import annotations

import datetime as dt
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

import modelrepo
from tests.support import ROOT

MODEL = "iris"


def training_args(repository: Path, *args: str) -> list[str]:
    """The training CLI's arguments that publish into ``repository``, quietly."""
    return ["--artifacts", str(repository), "--log-every", "0", *args]


def train(repository: Path, *args: str) -> int:
    """Run the real training CLI in-process (quiet); returns its exit status."""
    from training.__main__ import main  # torch: imported only by whoever trains here

    return main(training_args(repository, *args))


def train_in_subprocess(repository: Path, *args: str, python: str = sys.executable) -> None:
    """Run the real training CLI as ``python -m training``, keeping torch out of this process.

    Raises RuntimeError, with the CLI's output, if it fails.
    """
    command = [python, "-m", "training", *training_args(repository, *args)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"training failed ({done.returncode}): {shlex.join(command)}\n"
                           f"{done.stdout}\n{done.stderr}")


def served_version(repository: Path, model: str = MODEL) -> Path:
    """The version directory a server serves for ``model``: the highest one that passes
    ``modelrepo.read_version`` (the repository contract: names, metadata, sha256).

    Raises RuntimeError if there is none.
    """
    for _, path in sorted(modelrepo.version_dirs(repository / model).items(), reverse=True):
        try:
            modelrepo.read_version(path)
        except modelrepo.BrokenVersion:
            continue
        return path
    raise RuntimeError(f"no valid version of {model!r} in the repository")


# --- tiny real models of any shape, built without torch ---------------------------------------

# The shapes the tests serve side by side (name: features F, classes K, imputes), covering
# F in {1, 4, 13, 64, 784} and K in {2, 3, 10, 100}; "wine" (13 x 2) is the non-Iris model the
# hostile-input batteries also run against, "census" imputes missing values.
SHAPES: dict[str, tuple[int, int, bool]] = {
    "tiny": (1, 2, False),
    "iris-like": (4, 10, False),
    "wine": (13, 2, False),
    "census": (13, 3, True),
    "sixty-four": (64, 100, False),
    "digits": (784, 10, False),
}


def feature_names(n_features: int) -> list[str]:
    """The feature names the linear test models have: ``f0``, ``f1``, ..."""
    return [f"f{i}" for i in range(n_features)]


def class_labels(n_classes: int) -> list[str]:
    """The class labels the linear test models have: ``c0``, ``c1``, ..."""
    return [f"c{k}" for k in range(n_classes)]


def linear_model_bytes(n_features: int, n_classes: int, *, impute: bool = False,
                       seed: int = 0) -> bytes:
    """A real ONNX softmax classifier (opset 17) with random weights, made with onnx.helper.

    ``input`` FP32 [N, F] -> MatMul W [F, K] -> Add b [K] -> ``probabilities`` = Softmax,
    ``class`` = ArgMax (INT64 [N]); with ``impute``, ``Where(IsNaN(x), means, x)`` first.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 1, (n_features, n_classes)).astype(np.float32)
    bias = rng.normal(0, 0.5, n_classes).astype(np.float32)
    initializers = [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")]
    nodes = []
    x = "input"
    if impute:
        means = rng.normal(0, 1, n_features).astype(np.float32)
        initializers.append(numpy_helper.from_array(means, "means"))
        nodes += [helper.make_node("IsNaN", [x], ["missing"]),
                  helper.make_node("Where", ["missing", "means", x], ["imputed"])]
        x = "imputed"
    nodes += [
        helper.make_node("MatMul", [x, "W"], ["product"]),
        helper.make_node("Add", ["product", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("ArgMax", ["logits"], ["class"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_classes]),
         helper.make_tensor_value_info("class", TensorProto.INT64, ["N"])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime reads IR 8 everywhere
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def linear_metadata(n_features: int, n_classes: int, *, impute: bool = False) -> dict[str, Any]:
    """A complete metadata.json for a linear test model (name, version, sha256 filled at
    publish)."""
    inputs, outputs = modelrepo.signature(n_features, n_classes)
    return {
        "name": None, "version": None,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "feature_names": feature_names(n_features),
        "class_labels": class_labels(n_classes),
        "inputs": inputs, "outputs": outputs,
        "missing_values": "impute" if impute else "refuse",
        "model": {"opset": 17, "exporter": "onnx.helper (tests/support/models.py)"},
        "libraries": {}, "data": {"source": "random weights"}, "training": {},
        "loss_curve": [], "metrics": {}, "parity": {},
    }


def publish_linear_model(repository: Path, name: str, n_features: int, n_classes: int, *,
                         impute: bool = False, seed: int = 0) -> modelrepo.Published:
    """Publish a linear test model of F features and K classes as the next version of
    ``name`` through ``modelrepo.publish_version``. Raises what that raises."""
    return modelrepo.publish_version(
        repository, name, linear_model_bytes(n_features, n_classes, impute=impute, seed=seed),
        linear_metadata(n_features, n_classes, impute=impute))


def publish_shapes(repository: Path) -> dict[str, modelrepo.Published]:
    """Every model of :data:`SHAPES`, published into ``repository``, by name."""
    return {name: publish_linear_model(repository, name, f, k, impute=impute, seed=i)
            for i, (name, (f, k, impute)) in enumerate(SHAPES.items())}
