"""``python -m modelrepo import``: bring your own ONNX classifier into the model repository.

Any ONNX classifier with one numeric input ``[batch, F]`` and either one ``[batch, K]`` float
output (logits or probabilities) or skl2onnx's classifier outputs (a label tensor and a
probabilities tensor, with or without ZipMap) is rewritten to softmax's served signature: input
``input`` FP32 ``[-1, F]`` (cast inside the graph to what the model takes), outputs
``probabilities`` FP32 ``[-1, K]`` (a Softmax added when the model gives logits) and ``class``
INT64 ``[-1]`` (ArgMax). The result is one self-contained file (external data inlined) that passes
``onnx.checker``'s full check and loads in onnxruntime; it is published through
:func:`modelrepo.publish_version`, with the promotion gate of :mod:`modelrepo.gate`.

Needs the ``onnx`` package (``pip install 'softserve[import]'``), never torch; the serving
environment needs neither (this module is imported by the ``import`` subcommand only). Files are
never unpickled: a pickle/joblib file is recognized by its first bytes and refused.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import os
import platform
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

import modelrepo
from modelrepo import gate, policy
from modelrepo.drift import feature_statistics

ONNX_MISSING = ("python -m modelrepo import needs the onnx package, which the serving "
                "environment does not install: pip install 'softserve[import]' "
                "(or pip install 'onnx>=1.17')")

try:  # the import subcommand's own dependency: say how to get it, not a traceback
    import onnx
    from onnx import TensorProto, helper
except ImportError as _exc:  # pragma: no cover - exercised where onnx is absent
    raise ImportError(ONNX_MISSING) from _exc

# Operator domains onnxruntime (and Triton's onnxruntime backend) runs.
KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
# Prefix given to every name of the imported graph, so that none can clash with the names of
# the served signature (skl2onnx calls its output "probabilities", torch its input "input").
PREFIX = "src_"
SCORES = ("logits", "probabilities")
# A row of probabilities: every value in [0, 1] and a sum within this of 1 (float32 sums of
# a few thousand classes stay well inside it).
PROBABILITY_SUM_TOLERANCE = 1e-3
PROBE_ROWS = 64  # synthetic rows the graphs run on when there is no --sample
PARITY_TOLERANCE = 1e-5
# What a file that is not ONNX starts with, when it is one of the usual mistakes.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive (PyTorch's torch.save checkpoints, .npz and Keras files are "
                    "zip archives)"),
    (b"\x1f\x8b", "a gzip file (joblib writes compressed pickles like this)"),
    (b"BZh", "a bzip2 file (joblib writes compressed pickles like this)"),
    (b"\xfd7zXZ\x00", "an xz file (joblib writes compressed pickles like this)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x89HDF", "an HDF5 file (Keras .h5)"),
)
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".sav")
_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
_INT_TYPES = {TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
              TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64}
# Nodes that pass scores through unchanged, looked through to find what made them.
_PASS_THROUGH = {"Identity", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}
_LOGIT_MAKERS = {"Gemm", "MatMul", "Add", "Sub", "LogSoftmax", "MatMulInteger", "QLinearMatMul"}
_ML_CLASSIFIERS = {"LinearClassifier", "TreeEnsembleClassifier", "SVMClassifier",
                   "TreeEnsemble"}

Array = npt.NDArray[Any]
Say = Callable[[str], None]


class ImportRefused(Exception):
    """A file that cannot be imported; the message says what was found and what is expected."""


@dataclass
class Sample:
    """The rows of ``--sample``: features in the model's order, labels as class indices.

    Kept whole so that later steps (parity, accuracy, the gate, per-feature statistics) all
    read the same rows.
    """

    rows: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64] | None
    label_column: str | None
    source: str
    sha256: str
    header: list[str]


@dataclass
class Imported:
    """What an import produced: the served graph, its metadata, and the checks' figures."""

    model_bytes: bytes
    metadata: dict[str, Any]
    sample: Sample | None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading the file


def _read_source(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, after the checks that need no parsing. Raises ImportRefused."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImportRefused(f"{path.name}: no such file") from None
    except OSError as exc:
        raise ImportRefused(f"{path.name}: cannot read it: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImportRefused(f"{path.name} is not a regular file; expected an .onnx file")
    if st.st_size > max_bytes:
        raise ImportRefused(f"{path.name} is {st.st_size} bytes, over the limit of {max_bytes} "
                            "bytes (--max-bytes; one ONNX file holds at most 2 GiB)")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix.lower() in _PICKLE_SUFFIXES or (
            len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise ImportRefused(
            f"{path.name} looks like a Python pickle (joblib/pickle/torch.save file): softserve "
            "never unpickles a file (loading one runs any code it holds). Export the model to "
            "ONNX instead: skl2onnx.to_onnx(model, X[:1].astype('float32')) for scikit-learn, "
            "torch.onnx.export for PyTorch")
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise ImportRefused(f"{path.name} is {what}, not an ONNX model; export the model "
                                "to ONNX (skl2onnx, torch.onnx.export, tf2onnx, onnxmltools)")
    with open(path, "rb") as f:
        return f.read()


def load_onnx(path: Path,
              max_bytes: int = modelrepo.MAX_MODEL_BYTES) -> tuple[Any, bytes, bool]:
    """The parsed model (external data loaded into it), the file's own bytes, and whether it
    had external data.

    Raises ImportRefused for anything that is not a readable ONNX model.
    """
    raw = _read_source(path, max_bytes)
    try:
        model = onnx.load_model_from_string(raw)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ImportRefused(f"{path.name} is not an ONNX model: it does not parse as one "
                            f"({type(exc).__name__}); expected a file written by an ONNX "
                            "exporter (skl2onnx, torch.onnx.export, ...)") from None
    if model.ir_version <= 0 or not model.opset_import or not model.graph.node:
        raise ImportRefused(f"{path.name} is not an ONNX model: no graph, IR version or opset "
                            "in it; expected a file written by an ONNX exporter")
    uses_external = any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)
    if uses_external:
        # The external files' sizes first: an oversized model is refused before it is read.
        files = {entry.value for t in model.graph.initializer
                 if t.data_location == TensorProto.EXTERNAL
                 for entry in t.external_data if entry.key == "location"}
        listed = 0
        for name in files:
            with contextlib.suppress(OSError):
                listed += os.stat(path.parent / name).st_size
        if len(raw) + listed > max_bytes:
            raise ImportRefused(f"{path.name} is {len(raw) + listed} bytes with its external "
                                f"data, over the limit of {max_bytes} bytes (--max-bytes)")
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:  # OSError, or onnx's ValidationError for a path that leaves
            # the model's folder (onnx refuses those itself)
            raise ImportRefused(f"{path.name} keeps weights in external data files that cannot "
                                f"be read ({type(exc).__name__}: {exc}); keep them next to "
                                "the .onnx file (inside its folder), as the exporter wrote "
                                "them") from None
        total = sum(len(t.raw_data) for t in model.graph.initializer)
        if total > max_bytes:
            raise ImportRefused(f"{path.name}'s weights are {total} bytes with its external "
                                f"data, over the limit of {max_bytes} bytes (--max-bytes)")
    return model, raw, uses_external


# ------------------------------------------------------------------------------ the graph


def _opsets(model: Any) -> dict[str, int]:
    return {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}


def _check_domains(model: Any) -> None:
    """Refuse operator domains and opsets onnxruntime cannot run. Raises ImportRefused."""
    for opset in model.opset_import:
        if opset.domain not in KNOWN_DOMAINS:
            raise ImportRefused(
                f"the model uses operator domain {opset.domain!r} (version {opset.version}), "
                "which onnxruntime cannot run: it runs the ONNX operators (ai.onnx), "
                "ai.onnx.ml and com.microsoft; export with the standard operators only")
    newest: dict[str, int] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        domain = schema.domain or "ai.onnx"
        newest[domain] = max(newest.get(domain, 0), schema.since_version)
    for domain, version in _opsets(model).items():
        if domain in newest and version > newest[domain]:
            raise ImportRefused(
                f"the model uses {'ONNX' if domain == 'ai.onnx' else domain} opset {version}, "
                f"newer than onnx and onnxruntime here run (at most {newest[domain]}); export "
                f"it with an older opset (e.g. skl2onnx target_opset="
                f"{{'': 17, 'ai.onnx.ml': 3}}, torch.onnx.export(opset_version=17))")


def _session(model_bytes: bytes, what: str) -> ort.InferenceSession:
    """An onnxruntime session. Raises ImportRefused with onnxruntime's reason."""
    try:
        return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... classes
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImportRefused(
            f"onnxruntime {ort.__version__} cannot load {what}: {reason[:400]}; check the "
            "opsets and operator domains it uses (export with an older opset if it is newer "
            "than onnxruntime supports)") from None


def _describe_type(value_info: Any) -> str:
    t = value_info.type
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in t.tensor_type.shape.dim] if t.tensor_type.HasField("shape") else None
        name = TensorProto.DataType.Name(t.tensor_type.elem_type)
        return f"{name} {dims}" if dims is not None else f"{name} (shape unknown)"
    if kind == "sequence_type":
        return "a sequence (of maps: ZipMap's output)" \
            if t.sequence_type.elem_type.WhichOneof("value") == "map_type" else "a sequence"
    return kind or "unknown"


@dataclass
class _Input:
    name: str
    elem_type: int
    n_features: int
    batch_param: str


def _the_input(model: Any) -> _Input:
    """The model's one numeric ``[batch, F]`` input. Raises ImportRefused."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        found = ", ".join(f"{i.name!r} ({_describe_type(i)})" for i in inputs) or "none"
        raise ImportRefused(
            f"the model has {len(inputs)} inputs ({found}); expected one numeric [batch, F] "
            "input holding all the features (skl2onnx: one initial_types entry, e.g. "
            "[('X', FloatTensorType([None, F]))]; put column transforms inside the model)")
    value = inputs[0]
    t = value.type
    if t.WhichOneof("value") != "tensor_type" or \
            t.tensor_type.elem_type not in _FLOAT_TYPES | _INT_TYPES:
        raise ImportRefused(
            f"the model's input {value.name!r} is {_describe_type(value)}, not numeric; "
            "expected FLOAT (or DOUBLE/FLOAT16/an integer type, cast inside the graph) "
            "[batch, F]: encode strings and booleans as numbers before the model")
    dims = list(t.tensor_type.shape.dim) if t.tensor_type.HasField("shape") else None
    if dims is None or len(dims) != 2:
        raise ImportRefused(
            f"the model's input {value.name!r} is {_describe_type(value)}; expected two "
            "dimensions [batch, F]: rows of F features")
    batch, features = dims
    if not features.HasField("dim_value") or features.dim_value < 1:
        raise ImportRefused(
            f"the model's input {value.name!r} is {_describe_type(value)}: its feature "
            "dimension is not fixed; expected [batch, F] with a number F (skl2onnx: "
            "FloatTensorType([None, F]); torch.onnx.export: a dynamic batch axis only)")
    if batch.HasField("dim_value") and batch.dim_value != 0:
        raise ImportRefused(
            f"the model's input {value.name!r} is {_describe_type(value)}: its batch "
            f"dimension is fixed at {batch.dim_value}; expected a dynamic batch dimension "
            "(skl2onnx: None; torch.onnx.export: dynamic_axes={'x': {0: 'batch'}} or "
            "dynamic_shapes)")
    if features.dim_value > modelrepo.MAX_FEATURES:
        raise ImportRefused(f"the model takes {features.dim_value} features; softserve serves "
                            f"at most {modelrepo.MAX_FEATURES}")
    return _Input(value.name, t.tensor_type.elem_type, int(features.dim_value),
                  batch.dim_param or "batch")


@dataclass
class _Scores:
    tensor: str  # the tensor holding [batch, K] scores in the original graph
    graph_output: str  # the original graph output it is (or ZipMap's output)
    zipmap: bool
    zipmap_labels: list[str] | None
    label_output: str | None


def _producers(graph: Any) -> dict[str, Any]:
    return {out: node for node in graph.node for out in node.output}


def _zipmap_labels(node: Any) -> list[str] | None:
    for attr in node.attribute:
        if attr.name in ("classlabels_int64s", "classlabels_ints") and attr.ints:
            return [str(v) for v in attr.ints]
        if attr.name == "classlabels_strings" and attr.strings:
            return [s.decode() for s in attr.strings]
    return None


def _find_scores(model: Any, chosen: str | None) -> _Scores:
    """Which output holds the scores. Raises ImportRefused."""
    graph = model.graph
    producers = _producers(graph)
    candidates: list[_Scores] = []
    labels: list[str] = []
    described = ", ".join(f"{o.name!r} ({_describe_type(o)})" for o in graph.output)
    names = [o.name for o in graph.output]
    if chosen is not None and chosen not in names:
        raise ImportRefused(f"--probabilities-output {chosen!r} is not an output of the model; "
                            f"its outputs: {described}")
    for out in graph.output:
        t = out.type
        kind = t.WhichOneof("value")
        if kind == "sequence_type":
            node = producers.get(out.name)
            if node is None or node.op_type != "ZipMap":
                continue
            candidates.append(_Scores(node.input[0], out.name, True, _zipmap_labels(node), None))
        elif kind == "tensor_type":
            elem = t.tensor_type.elem_type
            rank = len(t.tensor_type.shape.dim) if t.tensor_type.HasField("shape") else None
            if elem in _FLOAT_TYPES and rank in (2, None):
                candidates.append(_Scores(out.name, out.name, False, None, None))
            elif rank in (1, None) and (elem in _INT_TYPES or elem == TensorProto.STRING):
                labels.append(out.name)
    if chosen is not None:
        candidates = [c for c in candidates if c.graph_output == chosen]
        if not candidates:
            raise ImportRefused(
                f"--probabilities-output {chosen!r} is not a [batch, K] float tensor of scores "
                f"(nor ZipMap's output); the model's outputs: {described}")
    if not candidates:
        raise ImportRefused(
            f"none of the model's outputs holds scores: {described}; expected one [batch, K] "
            "float tensor of logits or probabilities (and optionally a label tensor), or "
            "skl2onnx's classifier outputs (label and probabilities, ZipMap or not; to export "
            "without ZipMap: to_onnx(model, X, options={id(model): {'zipmap': False}}))")
    if len(candidates) > 1:
        raise ImportRefused(
            "several outputs could hold the scores: "
            + ", ".join(repr(c.graph_output) for c in candidates)
            + "; name the one of probabilities or logits with --probabilities-output")
    found = candidates[0]
    found.label_output = labels[0] if len(labels) == 1 else None
    return found


def _scores_maker(graph: Any, tensor: str) -> Any:
    """The node that computed ``tensor``, looking through reshapes, casts and identities."""
    producers = _producers(graph)
    node = producers.get(tensor)
    while node is not None and node.op_type in _PASS_THROUGH and node.input:
        node = producers.get(node.input[0])
    return node


def _graph_says(graph: Any, tensor: str) -> str | None:
    """What the graph says the scores are: "probabilities", "logits" or None (cannot tell)."""
    node = _scores_maker(graph, tensor)
    if node is None:
        return None
    if node.op_type == "Softmax":
        return "probabilities"
    if node.op_type in _LOGIT_MAKERS:
        return "logits"
    if node.domain == "ai.onnx.ml" and node.op_type in _ML_CLASSIFIERS | {"Normalizer"}:
        return "probabilities"
    return None


def _graph_labels(graph: Any) -> list[str] | None:
    for node in graph.node:
        if node.domain == "ai.onnx.ml" and node.op_type in _ML_CLASSIFIERS:
            found = _zipmap_labels(node)
            if found:
                return found
    return None


def _prune(graph: Any) -> None:
    """Drop the nodes and initializers no graph output needs (ZipMap, the label branch)."""
    needed = {o.name for o in graph.output}

    def sub_inputs(node: Any) -> set[str]:
        names: set[str] = set()
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                for inner in g.node:
                    names.update(inner.input)
                    names.update(sub_inputs(inner))
        return names

    kept = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(node.input)
            needed.update(sub_inputs(node))
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    value_info = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(value_info)


def _np_dtype(elem_type: int) -> Any:
    return helper.tensor_dtype_to_np_dtype(elem_type)


def _probe_rows(n_features: int) -> npt.NDArray[np.float32]:
    """Rows to run the graphs on without a sample: zeros and standard normal rows (seed 0)."""
    rng = np.random.default_rng(0)
    rows = rng.normal(0.0, 1.0, (PROBE_ROWS, n_features)).astype(np.float32)
    rows[0] = 0.0
    return rows


def _run_original(session: ort.InferenceSession, source_input: _Input, scores: _Scores,
                  rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The original graph's scores for ``rows`` (given in float32, as the server would, then
    converted to the model's input type) as float64 [N, K]. Raises ImportRefused."""
    x = rows.astype(_np_dtype(source_input.elem_type))
    try:
        (out,) = session.run([scores.graph_output], {source_input.name: x})
    except Exception as exc:  # onnxruntime's own error classes
        raise ImportRefused(f"the model does not run in onnxruntime on {len(rows)} rows of "
                            f"{source_input.n_features} features: "
                            f"{str(exc).strip()[:400]}") from None
    if scores.zipmap:
        keys = list(out[0].keys()) if out else []
        return np.asarray([[row[k] for k in keys] for row in out], dtype=np.float64)
    array = np.asarray(out)
    if array.ndim != 2 or array.shape[0] != len(rows):
        raise ImportRefused(f"the model's output {scores.graph_output!r} gave shape "
                            f"{list(array.shape)} for {len(rows)} rows; expected [batch, K]")
    return array.astype(np.float64)


def _are_probabilities(scores: npt.NDArray[np.float64]) -> bool:
    return bool(np.all(np.isfinite(scores)) and scores.min() >= -1e-6
                and scores.max() <= 1 + 1e-6
                and np.all(np.abs(scores.sum(axis=1) - 1) <= PROBABILITY_SUM_TOLERANCE))


def _softmax(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    result: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return result


def wrap(model: Any, source_input: _Input, scores: _Scores, logits: bool,
         n_classes: int) -> Any:
    """The served graph: ``input`` FP32 -> (Cast) -> the model -> (Softmax) -> probabilities,
    ArgMax -> class. Every original name gets :data:`PREFIX`; ZipMap and the label branch go."""
    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    graph = wrapped.graph
    # The scores tensor becomes the one output (typed: ZipMap's input is always float).
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(scores.tensor, TensorProto.UNDEFINED,
                                                      None))
    _prune(graph)
    onnx.compose.add_prefix_graph(graph, PREFIX, inplace=True)
    src_in, src_scores = PREFIX + source_input.name, PREFIX + scores.tensor
    del graph.output[:]
    kept_inputs = [i for i in graph.input if i.name != src_in]
    del graph.input[:]
    batch = source_input.batch_param
    graph.input.append(helper.make_tensor_value_info(
        modelrepo.INPUT_NAME, TensorProto.FLOAT, [batch, source_input.n_features]))
    graph.input.extend(kept_inputs)  # IR < 4 lists initializers as inputs too
    head = []
    if source_input.elem_type == TensorProto.FLOAT:
        head.append(helper.make_node("Identity", [modelrepo.INPUT_NAME], [src_in],
                                     name="softserve_input"))
    else:
        head.append(helper.make_node("Cast", [modelrepo.INPUT_NAME], [src_in],
                                     to=source_input.elem_type, name="softserve_cast_input"))
    tail = [helper.make_node("Cast", [src_scores], ["softserve_scores"], to=TensorProto.FLOAT,
                             name="softserve_cast_scores")]
    if logits:
        tail.append(helper.make_node("Softmax", ["softserve_scores"], [modelrepo.PROBABILITIES],
                                     axis=1, name="softserve_softmax"))
    else:
        tail.append(helper.make_node("Identity", ["softserve_scores"],
                                     [modelrepo.PROBABILITIES], name="softserve_probabilities"))
    tail.append(helper.make_node("ArgMax", [modelrepo.PROBABILITIES], [modelrepo.CLASS],
                                 axis=1, keepdims=0, name="softserve_argmax"))
    nodes = [*head, *graph.node, *tail]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.output.extend([
        helper.make_tensor_value_info(modelrepo.PROBABILITIES, TensorProto.FLOAT,
                                      [batch, n_classes]),
        helper.make_tensor_value_info(modelrepo.CLASS, TensorProto.INT64, [batch])])
    if not any(o.domain in ("", "ai.onnx") for o in wrapped.opset_import):
        # A graph of ai.onnx.ml operators only: Softmax, Cast and ArgMax need the ONNX domain.
        wrapped.opset_import.append(helper.make_opsetid("", 13))
        wrapped.ir_version = max(wrapped.ir_version, 7)
    return wrapped


# ------------------------------------------------------------------------------- the sample


def _parse_float(cell: str, row: int, column: str, source: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise ImportRefused(f"{source}: row {row}, column {column!r}: {cell!r} is not a "
                            "number") from None
    if not np.isfinite(value):
        raise ImportRefused(f"{source}: row {row}, column {column!r}: {cell!r} is not a "
                            "finite number (imported models refuse missing values)")
    return value


def read_sample(path: Path, n_features: int, features: list[str] | None,
                label_column: str | None) -> tuple[Sample, list[str], list[str] | None]:
    """Read ``--sample``: a CSV with a header; returns the sample (labels still as text in the
    third value, matched to the model's classes later), the feature columns' names.

    Columns: ``features`` (by name) when given, else every column but the label column. The
    label column is ``label_column`` when given; else, with F + 1 columns, the last. Raises
    ImportRefused.
    """
    source = path.name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportRefused(f"--sample {source}: cannot read it: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRefused(f"--sample {source} is not UTF-8 text; expected a CSV") from None
    lines = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if len(lines) < 2:
        raise ImportRefused(f"--sample {source}: expected a header line and at least one row")
    header = [c.strip() for c in lines[0]]
    if label_column is not None and label_column not in header:
        raise ImportRefused(f"--sample {source}: no column {label_column!r} (--label-column); "
                            f"its columns: {', '.join(header[:20])}")
    if features is not None:
        missing = [f for f in features if f not in header]
        if missing:
            raise ImportRefused(f"--sample {source} lacks the feature column(s) "
                                f"{', '.join(map(repr, missing[:5]))} named by --features")
        feature_cols = [header.index(f) for f in features]
        others = [i for i in range(len(header)) if i not in feature_cols]
        if label_column is None and len(others) == 1:
            label_column = header[others[0]]
    else:
        if label_column is None and len(header) == n_features + 1:
            label_column = header[-1]
        feature_cols = [i for i, h in enumerate(header) if h != label_column]
    if len(feature_cols) != n_features:
        raise ImportRefused(
            f"--sample {source} has {len(feature_cols)} feature columns "
            f"({', '.join(header[i] for i in feature_cols[:8])}"
            f"{', ...' if len(feature_cols) > 8 else ''}); the model takes {n_features}: give "
            f"{n_features} feature columns (and optionally one label column, --label-column)")
    label_idx = header.index(label_column) if label_column is not None else None
    rows = np.empty((len(lines) - 1, n_features), dtype=np.float32)
    texts: list[str] = []
    for r, line in enumerate(lines[1:], start=2):
        if len(line) != len(header):
            raise ImportRefused(f"--sample {source}: row {r} has {len(line)} cells, the header "
                                f"{len(header)}")
        rows[r - 2] = [_parse_float(line[c].strip(), r, header[c], f"--sample {source}")
                       for c in feature_cols]
        if label_idx is not None:
            texts.append(line[label_idx].strip())
    sample = Sample(rows, None, label_column, source, hashlib.sha256(data).hexdigest(), header)
    return sample, [header[i] for i in feature_cols], texts if label_idx is not None else None


def _label_indices(texts: list[str], class_labels: list[str],
                   source: str) -> npt.NDArray[np.int64]:
    """The sample's labels as class indices; numbers match numbers (``1`` and ``1.0``).
    Raises ImportRefused."""
    index = {label: i for i, label in enumerate(class_labels)}
    numeric: dict[float, int] = {}
    for label, i in index.items():
        try:
            numeric.setdefault(float(label), i)
        except ValueError:
            pass
    out = np.empty(len(texts), dtype=np.int64)
    for r, text in enumerate(texts):
        found = index.get(text)
        if found is None:
            try:
                found = numeric.get(float(text))
            except ValueError:
                found = None
        if found is None:
            shown = ", ".join(class_labels[:10]) + (", ..." if len(class_labels) > 10 else "")
            raise ImportRefused(f"--sample {source}: row {r + 2}'s label {text!r} is not one of "
                                f"the model's classes ({shown}); give the classes in output "
                                "order with --labels")
        out[r] = found
    return out


# ------------------------------------------------------------------------------ the import


def _library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("onnx", "onnxruntime", "numpy"):
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return found


def _names(text: str | Sequence[str] | None) -> list[str] | None:
    if text is None:
        return None
    if isinstance(text, str):
        names = next(csv.reader([text]), [])
    else:
        names = list(text)
    return [n.strip() for n in names]


def _check_names(names: list[str], count: int, option: str, what: str, unit: str) -> None:
    if len(names) != count:
        raise ImportRefused(f"{option} names {len(names)} {what}, the model has {count} {unit}; "
                            f"give exactly {count}, in the model's order")
    if not all(names):
        raise ImportRefused(f"{option}: an empty name; give {count} non-empty names")
    if len(set(names)) != len(names):
        repeated = next(n for n in names if names.count(n) > 1)
        raise ImportRefused(f"{option}: {repeated!r} repeats; names must be unique")


def _confusion(truth: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64],
               k: int) -> list[list[int]]:
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return [[int(v) for v in row] for row in matrix]


def import_model(path: Path, *, labels: str | Sequence[str] | None = None,
                 features: str | Sequence[str] | None = None, sample: Path | None = None,
                 label_column: str | None = None, scores: str | None = None,
                 probabilities_output: str | None = None,
                 max_bytes: int = modelrepo.MAX_MODEL_BYTES,
                 say: Say = lambda _line: None) -> Imported:
    """Read, check and rewrite an ONNX classifier to the served signature (publishes nothing).

    ``scores`` is "logits", "probabilities" or None (detect). Raises ImportRefused with what was
    found and what is expected.
    """
    if scores is not None and scores not in SCORES:
        raise ImportRefused(f"--scores {scores!r}: give logits or probabilities")
    say(f"Reading {path.name} ...")
    model, raw, external = load_onnx(path, max_bytes)
    _check_domains(model)
    source_input = _the_input(model)
    found = _find_scores(model, probabilities_output)
    n_features = source_input.n_features
    feature_names = _names(features)
    if feature_names is not None:
        _check_names(feature_names, n_features, "--features", "features", "features")
    # With external data, the parsed model holds the weights the file's bytes lack.
    original = _session(model.SerializeToString() if external else raw, "the model")

    the_sample: Sample | None = None
    label_texts: list[str] | None = None
    if sample is not None:
        the_sample, sample_features, label_texts = read_sample(sample, n_features,
                                                               feature_names, label_column)
        if feature_names is None:
            feature_names = sample_features
        say(f"Sample: {len(the_sample.rows)} rows of {n_features} features"
            + (f", labels in column {the_sample.label_column!r}" if label_texts is not None
               else ", no labels"))
    rows = the_sample.rows if the_sample is not None else _probe_rows(n_features)
    rows_note = (f"--sample {the_sample.source}, {len(rows)} rows" if the_sample is not None
                 else f"{len(rows)} synthetic rows (zeros, then standard normal; seed 0)")
    reference = _run_original(original, source_input, found, rows)
    n_classes = reference.shape[1]
    if n_classes < 2:
        raise ImportRefused(
            f"the model's output {found.graph_output!r} has {n_classes} column per row; "
            "expected K >= 2 columns, one score per class (export both classes' probabilities "
            "for a binary classifier, e.g. skl2onnx's probabilities output)")
    if n_classes > modelrepo.MAX_CLASSES:
        raise ImportRefused(f"the model has {n_classes} classes; softserve serves at most "
                            f"{modelrepo.MAX_CLASSES}")

    # Logits or probabilities: the option, else the sample's values, else the graph.
    graph_says = "probabilities" if found.zipmap else _graph_says(model.graph, found.tensor)
    values_say = "probabilities" if _are_probabilities(reference) else "logits"
    notes: list[str] = []
    if scores is not None:
        kind, how = scores, "--scores"
        if scores == "probabilities" and values_say != "probabilities":
            raise ImportRefused(
                f"--scores probabilities, but the output {found.graph_output!r} is not: on "
                f"{rows_note} its rows are not all in [0, 1] summing to 1 (min "
                f"{reference.min():.4g}, max {reference.max():.4g}); give --scores logits")
        if scores == "logits" and values_say == "probabilities":
            notes.append("warning: --scores logits, but the scores look like probabilities on "
                         f"{rows_note}: a Softmax is added over them as asked")
    elif the_sample is not None:
        kind, how = values_say, f"values on {rows_note}"
    elif graph_says is not None and graph_says == values_say:
        kind, how = graph_says, "the graph (" + (
            "ZipMap" if found.zipmap else
            getattr(_scores_maker(model.graph, found.tensor), "op_type", "?")) + \
            f" makes the scores), confirmed on {rows_note}"
    else:
        raise ImportRefused(
            f"cannot tell whether output {found.graph_output!r} holds logits or probabilities "
            f"(the graph says {graph_says or 'nothing'}; on {rows_note} they look like "
            f"{values_say}); give --scores logits or --scores probabilities, or a --sample")
    logits = kind == "logits"
    say(f"Scores: output {found.graph_output!r}"
        + (" (ZipMap unwrapped)" if found.zipmap else "")
        + f", {n_classes} classes, {kind} (from {how})")

    class_labels = _names(labels) or found.zipmap_labels or _graph_labels(model.graph)
    labels_from = "--labels" if labels is not None else (
        "the graph" if class_labels is not None else "class indices")
    if class_labels is None or (labels is None and len(class_labels) != n_classes):
        class_labels, labels_from = [str(i) for i in range(n_classes)], "class indices"
    _check_names(class_labels, n_classes, "--labels", "labels", "classes")
    if feature_names is None:
        feature_names = [f"x{i + 1}" for i in range(n_features)]
    if the_sample is not None and label_texts is not None:
        the_sample.labels = _label_indices(label_texts, class_labels, the_sample.source)

    say("Rewriting the graph to the served signature ...")
    wrapped = wrap(model, source_input, found, logits, n_classes)
    try:
        onnx.checker.check_model(wrapped, full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, shape inference errors
        raise ImportRefused("the rewritten graph fails onnx.checker (full check): "
                            f"{str(exc).strip()[:400]}; check the original with "
                            "onnx.checker.check_model(model, full_check=True)") from None
    model_bytes = wrapped.SerializeToString()
    if len(model_bytes) > max_bytes:
        raise ImportRefused(f"the self-contained model is {len(model_bytes)} bytes, over the "
                            f"limit of {max_bytes} bytes (--max-bytes)")
    served = _session(model_bytes, "the rewritten model")
    probabilities, classes = served.run([modelrepo.PROBABILITIES, modelrepo.CLASS],
                                        {modelrepo.INPUT_NAME: rows})
    expected = _softmax(reference) if logits else reference
    diff = float(np.max(np.abs(probabilities.astype(np.float64) - expected)))
    agree = float(np.mean(classes == np.argmax(expected, axis=1)))
    parity = {"rows": rows_note, "reference": "the original graph through onnxruntime"
              + (", softmax in float64" if logits else ""),
              "max_abs_diff": diff, "argmax_agreement": agree,
              "tolerance": PARITY_TOLERANCE, "passed": diff <= PARITY_TOLERANCE}
    say(f"Parity with the original graph on {rows_note}: max |difference| {diff:.3g}, "
        f"argmax agreement {agree:.4f}")
    if diff > PARITY_TOLERANCE:
        raise ImportRefused(f"the rewritten graph's probabilities differ from the original's by "
                            f"{diff:.3g} on {rows_note} (more than {PARITY_TOLERANCE:g})")

    metrics: dict[str, Any] = {}
    if the_sample is not None and the_sample.labels is not None:
        truth = the_sample.labels
        metrics["sample"] = {
            "rows": int(len(truth)), "source": the_sample.source,
            "accuracy": float(np.mean(classes == truth)),
            "confusion_matrix": _confusion(truth, np.asarray(classes, dtype=np.int64),
                                           n_classes)}
        say(f"Sample accuracy {metrics['sample']['accuracy']:.4f} on {len(truth)} rows")

    inputs, outputs = modelrepo.signature(n_features, n_classes)
    opsets = _opsets(model)
    added = (["Identity" if source_input.elem_type == TensorProto.FLOAT else
              f"Cast to {TensorProto.DataType.Name(source_input.elem_type)}", "Cast to FLOAT"]
             + (["Softmax"] if logits else []) + ["ArgMax"])
    metadata: dict[str, Any] = {
        "name": None,
        "version": None,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "feature_names": feature_names,
        "class_labels": class_labels,
        "inputs": inputs,
        "outputs": outputs,
        "missing_values": "refuse",
        "model": {"opset": _opsets(wrapped).get("ai.onnx", 0),
                  "exporter": f"imported: {model.producer_name or 'unknown producer'} "
                              f"{model.producer_version}".strip()},
        "libraries": _library_versions(),
        # The sample's per-feature statistics are what serving measures drift against.
        "data": ({"source": the_sample.source, "rows": int(len(the_sample.rows)),
                  "sha256": the_sample.sha256,
                  "statistics": feature_statistics(the_sample.rows, feature_names)}
                 if the_sample is not None
                 else {"source": "none (imported without --sample)", "rows": 0}),
        "training": {"method": "imported", "note": "trained outside softserve"},
        "loss_curve": [],
        "metrics": metrics,
        "parity": parity,
        "source": {
            "kind": "import",
            "file": path.name,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "bytes": len(raw),
            "external_data_inlined": external,
            "producer_name": model.producer_name,
            "producer_version": model.producer_version,
            "ir_version": int(model.ir_version),
            "opsets": opsets,
            "domains": sorted(opsets),
            "input": {"name": source_input.name,
                      "datatype": TensorProto.DataType.Name(source_input.elem_type)},
            "scores": {"output": found.graph_output, "tensor": found.tensor, "kind": kind,
                       "decided_by": how, "graph_says": graph_says,
                       "zipmap_unwrapped": found.zipmap},
            "label_output": found.label_output,
            "class_labels_from": labels_from,
            "added_nodes": added,
        },
    }
    return Imported(model_bytes, metadata, the_sample, notes)


def publish_import(imported: Imported, repository: Path, name: str, *, max_regression: float,
                   force: bool, dry_run: bool = False, say: Say = lambda _line: None,
                   promote: bool = True) -> modelrepo.Published | None:
    """Run the promotion gate against the served version and publish the next version of
    ``name`` (None on a dry run); ``promote`` as ``modelrepo.policy.publish`` takes it.
    Raises gate.GateFailed, modelrepo.RepositoryError, modelrepo.BrokenVersion."""
    modelrepo.check_model_name(name)
    sample = imported.sample
    labelled = sample is not None and sample.labels is not None
    promotion = gate.check_promotion(
        imported.model_bytes, imported.metadata["feature_names"],
        imported.metadata["class_labels"], Path(repository) / name,
        sample.rows if sample is not None and labelled else None,
        sample.labels if sample is not None else None,
        f"--sample {sample.source}, {len(sample.rows)} rows" if sample is not None and labelled
        else "no labelled --sample: names and labels compared only",
        max_regression, force, force_option="--force", rename_hint="--name")
    metadata = dict(imported.metadata)
    if promotion is not None:
        metadata["promotion"] = promotion
        current = promotion["current_accuracy"]
        say(f"Promotion gate vs version {promotion['against_version']}: "
            + (f"candidate {promotion['candidate_accuracy']:.4f}, current "
               + (f"{current:.4f}" if current is not None else "n/a")
               if promotion["candidate_accuracy"] is not None else "accuracy not compared "
               "(no labelled --sample)")
            + (" — FORCED past: " + "; ".join(promotion["problems"]) if promotion["forced"]
               else " — passed"))
    if dry_run:
        return None
    return policy.publish(repository, name, imported.model_bytes, metadata, promote=promote)
