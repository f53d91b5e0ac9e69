"""One loaded model version: an onnxruntime session and its metadata."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from modelrepo import CLASS, INPUT_NAME, PROBABILITIES, BrokenVersion, imputes
from serving.codecs import ModelShape

# No usage telemetry from a model server (also ORT_DISABLE_TELEMETRY=1 in gunicorn.conf.py).
ort.disable_telemetry_events()

_ORT_TYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(int64)": "INT64",
              "tensor(int32)": "INT32"}


def _signature(values: list[Any]) -> list[dict[str, Any]]:
    """onnxruntime's view of a graph's tensors in V2 terms (symbolic dimensions as -1)."""
    return [{"name": v.name, "datatype": _ORT_TYPES.get(v.type, v.type),
             "shape": [d if isinstance(d, int) else -1 for d in v.shape]} for v in values]


class LoadedModel:
    """A verified, loaded version. ``predict`` is safe to call from several threads."""

    def __init__(self, name: str, version: int, metadata: dict[str, Any], model_bytes: bytes,
                 path: Path) -> None:
        """Create the session (one intra-op thread: gunicorn's workers give the parallelism) and
        run it once on a row of zeros, so the first request does not pay for the session's
        first run and a graph that loads but cannot run is never served.

        ``metadata`` is as ``modelrepo.read_version`` checked it (its signature is the
        contract's for its F features and K classes). ``timings`` holds the seconds each step
        took ("session", "warm-up"). Raises BrokenVersion if onnxruntime cannot load or run the
        graph, its tensor signature differs from the metadata's, or its answer to one row has
        the wrong shape.
        """
        started = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model_bytes, options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad graph
            raise BrokenVersion(path, f"onnxruntime cannot load model.onnx: {exc}") from None
        found = (_signature(self.session.get_inputs()), _signature(self.session.get_outputs()))
        declared = (metadata["inputs"], metadata["outputs"])
        if found != declared:
            raise BrokenVersion(path, f"model.onnx tensors {found} differ from metadata {declared}")
        self.name = name
        self.version = str(version)  # versions are strings on the wire, as in V2
        self.metadata = metadata
        self.feature_names: list[str] = list(metadata["feature_names"])
        self.class_labels: list[str] = list(metadata["class_labels"])
        self.n_features, self.n_classes = len(self.feature_names), len(self.class_labels)
        self.impute = imputes(metadata)
        # What the codecs check requests against, worked out once for every request.
        self.shape = ModelShape(name, self.feature_names, self.n_classes, self.impute)
        self._outputs = [PROBABILITIES, CLASS]
        loaded = time.perf_counter()
        self._warm_up(path)
        self.timings = {"session": loaded - started, "warm-up": time.perf_counter() - loaded}

    def _warm_up(self, path: Path) -> None:
        """Run one row through the new session. Raises BrokenVersion if that fails."""
        try:
            probabilities, classes = self.predict(
                np.zeros((1, self.n_features), dtype=np.float32))
        except Exception as exc:  # whatever the graph's kernels raise
            raise BrokenVersion(path, f"onnxruntime cannot run model.onnx: {exc}") from None
        if probabilities.shape != (1, self.n_classes) or classes.shape != (1,):
            raise BrokenVersion(path, f"model.onnx answers one row with shapes "
                                      f"{list(probabilities.shape)} and {list(classes.shape)}, "
                                      f"not [1, {self.n_classes}] and [1]")

    def predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities FP32 (N, K) and classes INT64 (N,) for float32 rows (N, F)."""
        probabilities, classes = self.session.run(self._outputs, {INPUT_NAME: rows})
        return probabilities, classes
