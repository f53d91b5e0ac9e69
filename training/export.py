"""Export to one self-contained ONNX file, and the torch/ONNX parity check.

The parity check follows PyTorch's own ONNX tests: output names first, then shapes and dtypes,
then values with explicit tolerances, over several batch sizes; differences are reported as
numbers. Argmax is compared only where the top two probabilities are clearly apart: on a near
tie onnxruntime and torch may legitimately round to different winners.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from modelrepo import CLASS, INPUT_NAME, PROBABILITIES
from training.model import ExportedClassifier

BATCH_SIZES = (1, 3, 7, 1000, 100_000)
# The largest batch holds at most this many numbers (100,000 rows up to 40 features): wide
# models are checked on fewer rows, not on gigabytes.
PARITY_ELEMENTS = 4_000_000
DATA_ATOL = 1e-5  # measured on iris: ~5e-7
WIDE_ATOL = 1e-4  # random rows spanning +-1e3 saturate the softmax
WIDE_RANGE = 1e3
# The +-1e3 rows were sized for Iris's 4 features (0.1 to 8): there they saturate the softmax
# and agree within WIDE_ATOL. On other data (breast cancer's 30 features, digits' 64) they
# lie thousands of standard deviations out, the logits reach 1e5 and the two runtimes'
# rounding of them differs by more than any fixed tolerance on a near tie; rows over the data's
# own range (and half its span beyond) are the check every shape gets.
PM1E3_FEATURES = 4
MISSING_FRACTION = 0.2  # of the cells of the "random_missing" rows (--impute models only)
BATCH_DIM = "batch"


class ExportError(Exception):
    """The exported graph is not a valid, self-contained model of the contract."""


class ParityError(Exception):
    """onnxruntime disagrees with torch beyond the tolerances; the message gives the figures."""


def export_onnx(model: ExportedClassifier) -> bytes:
    """Export with torch's supported (dynamo) exporter; return the serialized model.

    The weights are embedded (``external_data=False``): the artifact is one file. Raises
    ExportError if the result fails ``onnx.checker`` (full check) or still references
    external data.
    """
    example = torch.zeros(2, model.classifier.n_features)
    # The exporter logs one line per torchvision op it cannot find; we have no torchvision.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # torch 2.13's exporter trips its own pytree deprecation; nothing a caller can act on.
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)",
                                category=FutureWarning)
        program = torch.onnx.export(
            model, (example,), dynamo=True, external_data=False,
            input_names=[INPUT_NAME], output_names=[PROBABILITIES, CLASS],
            dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), verbose=False,
        )
    proto = program.model_proto
    # Name the dynamic batch dimension for people reading the graph (the exporter says "s77").
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_param = BATCH_DIM
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ExportError(f"initializer {tensor.name} refers to external data")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the exported model: {exc}") from None
    return proto.SerializeToString()


def onnx_opset(model_bytes: bytes) -> int:
    proto = onnx.load_from_string(model_bytes)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def tolerance(atol: float, n_features: int) -> float:
    """``atol`` (set on Iris's 4 features) for a model of ``n_features``: torch and onnxruntime
    sum a dot product of F terms in different orders, so their rounding differs ~sqrt(F/4)
    times more (measured at F = 784 on +-1e3 rows: 5e-5 against Iris's 5e-7 on data rows)."""
    return atol * max(1.0, math.sqrt(n_features / 4))


def batch_sizes(width: int) -> list[int]:
    """BATCH_SIZES, the largest capped at PARITY_ELEMENTS numbers in and out (``width``:
    features + classes), never below 1000 rows."""
    largest = max(1000, min(BATCH_SIZES[-1], PARITY_ELEMENTS // max(1, width)))
    return sorted({min(size, largest) for size in BATCH_SIZES})


def range_rows(data_rows: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Random rows spread over the data's range, and half its span beyond on either side
    (a constant column: +-1 around its value); missing values ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: handled below
        lo = np.nanmin(data_rows, axis=0).astype(np.float64)
        hi = np.nanmax(data_rows, axis=0).astype(np.float64)
    lo, hi = np.nan_to_num(lo), np.nan_to_num(hi)
    span = np.where(hi > lo, hi - lo, 2.0)
    centre = (lo + hi) / 2
    return rng.uniform(centre - span, centre + span, (count, data_rows.shape[1]))


def _batch(rows: np.ndarray, size: int) -> np.ndarray:
    return np.ascontiguousarray(np.resize(rows, (size, rows.shape[1])), dtype=np.float32)


@dataclass
class _Case:
    name: str
    atol: float
    rows: np.ndarray


def check_parity(model: ExportedClassifier, model_bytes: bytes, data_rows: np.ndarray,
                 seed: int = 0) -> dict[str, Any]:
    """Run torch and onnxruntime side by side; return the figures for metadata.json.

    Rows: the data's, random ones over the data's range, random ones over +-1e3 (4-feature
    models, as for Iris) and, for a model that imputes, random ones with missing (NaN)
    values; each at several batch sizes.
    Raises ParityError when names, shapes, dtypes, probabilities (beyond the atol of the row
    set) or a clear-margin argmax disagree.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or outputs != [PROBABILITIES, CLASS]:
        raise ParityError(f"graph names {inputs} -> {outputs}; expected "
                          f"[{INPUT_NAME!r}] -> [{PROBABILITIES!r}, {CLASS!r}]")
    rng = np.random.default_rng(seed)
    n_features = data_rows.shape[1]
    sizes = batch_sizes(n_features + int(model.classifier.n_classes))
    count = max(sizes)
    data_atol, wide_atol = tolerance(DATA_ATOL, n_features), tolerance(WIDE_ATOL, n_features)
    cases = [_Case("data", data_atol, data_rows.astype(np.float32))]
    if n_features == PM1E3_FEATURES:
        cases.append(_Case("random_pm1e3", wide_atol,
                           rng.uniform(-WIDE_RANGE, WIDE_RANGE, (count, n_features))))
    cases.append(_Case("random_data_range", wide_atol, range_rows(data_rows, count, rng)))
    if model.imputes:
        holes = range_rows(data_rows, count, rng)
        holes[rng.random(holes.shape) < MISSING_FRACTION] = np.nan
        cases.append(_Case("random_missing", wide_atol, holes))
    report: dict[str, Any] = {"batch_sizes": sizes, "rows": {}}
    for case in cases:
        worst, ties, compared = 0.0, 0, 0
        for size in sizes:
            x = _batch(case.rows, size)
            with torch.no_grad():
                t_prob, t_cls = (t.numpy() for t in model(torch.from_numpy(x)))
            o_prob, o_cls = session.run(None, {INPUT_NAME: x})
            for label, t, o in ((PROBABILITIES, t_prob, o_prob), (CLASS, t_cls, o_cls)):
                if t.shape != o.shape or t.dtype != o.dtype:
                    raise ParityError(f"{case.name}, batch {size}: {label} is {o.dtype}{o.shape} "
                                      f"in onnxruntime, {t.dtype}{t.shape} in torch")
            diff = float(np.max(np.abs(t_prob.astype(np.float64) - o_prob)))
            if not np.isfinite(diff):  # NaN compares False: it would pass every check
                raise ParityError(f"{case.name}, batch {size}: probabilities are not finite")
            worst = max(worst, diff)
            if diff > case.atol:
                raise ParityError(f"{case.name}, batch {size}: probabilities differ by {diff:.3g} "
                                  f"> atol {case.atol:g}")
            top2 = np.sort(t_prob, axis=1)[:, -2:]
            near_tie = (top2[:, 1] - top2[:, 0]) <= 2 * case.atol
            mismatched = (t_cls != o_cls) & ~near_tie
            if mismatched.any():
                row = int(np.flatnonzero(mismatched)[0])
                raise ParityError(f"{case.name}, batch {size}: argmax differs on row {row} "
                                  f"(torch {t_cls[row]}, onnxruntime {o_cls[row]}) "
                                  "with a clear margin")
            ties += int(near_tie.sum())
            compared += size
        report["rows"][case.name] = {"atol": case.atol, "max_abs_diff": worst,
                                     "near_ties": ties, "rows_compared": compared}
    report["max_abs_diff"] = max(r["max_abs_diff"] for r in report["rows"].values())
    report["near_ties"] = sum(r["near_ties"] for r in report["rows"].values())
    report["passed"] = True
    return report
