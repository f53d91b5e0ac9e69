"""Candidate checks and the publish of the next version into the model repository."""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from modelrepo import INPUTS, OUTPUTS, Published, publish_version
from training.data import Dataset
from training.train import FitResult, TrainConfig

LOSS_CURVE_FILE = "loss_curve.png"


class GateFailed(Exception):
    """A candidate that must not be published; the message says which gate and by how much."""


@dataclass
class Candidate:
    """Everything a publish needs: the model, how it was made, how it was checked."""

    model_bytes: bytes
    dataset: Dataset
    config: TrainConfig
    fit: FitResult
    parity: dict[str, Any]
    opset: int


def library_versions() -> dict[str, str]:
    names = ("torch", "onnx", "onnxscript", "onnxruntime", "numpy")
    return {"python": platform.python_version(),
            **{n: importlib_metadata.version(n) for n in names}}


def check_accuracy(candidate: Candidate, min_accuracy: float | None) -> float | None:
    """The accuracy gate: validation accuracy (training accuracy without a split).

    ``min_accuracy`` None means the default: 0.9 when there is a validation split, no gate
    otherwise. Returns the accuracy checked. Raises GateFailed.
    """
    metrics = candidate.fit.metrics
    split = "validation" if metrics["validation"] else "train"
    if min_accuracy is None:
        min_accuracy = 0.9 if split == "validation" else None
    accuracy = metrics[split]["accuracy"]
    if min_accuracy is not None and accuracy < min_accuracy:
        raise GateFailed(f"{split} accuracy {accuracy:.4f} is below --min-accuracy "
                         f"{min_accuracy:g}; nothing was published")
    return accuracy


def build_metadata(candidate: Candidate, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """metadata.json for a candidate (name, version and model sha256 are filled at publish)."""
    ds, fit = candidate.dataset, candidate.fit
    training = candidate.config.as_dict()
    if candidate.config.standardize:
        training["standardization"] = {"mean": fit.model.mean.tolist(),
                                       "std": fit.model.std.tolist()}
    return {
        "name": None,
        "version": None,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "feature_names": ds.feature_names,
        "class_labels": ds.class_labels,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
        "model": {"opset": candidate.opset, "exporter": "torch.onnx.export(dynamo=True)"},
        "libraries": library_versions(),
        "data": {"source": ds.source, "rows": ds.rows, "sha256": ds.sha256,
                 "train_rows": int(len(fit.split.train)),
                 "validation_rows": int(len(fit.split.validation))},
        "training": training,
        "loss_curve": fit.history,
        "metrics": fit.metrics,
        "parity": candidate.parity,
        **(extra or {}),
    }


def publish(candidate: Candidate, repository: Path, model_name: str,
            loss_curve_png: bytes, extra: dict[str, Any] | None = None) -> Published:
    """Write the candidate as the next version of ``model_name``. Raises RepositoryError."""
    return publish_version(repository, model_name, candidate.model_bytes,
                           build_metadata(candidate, extra),
                           extra_files={LOSS_CURVE_FILE: loss_curve_png})
