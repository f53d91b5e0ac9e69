"""Candidate checks and the publish of the next version into the model repository."""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from modelrepo import Published, gate, signature
from modelrepo import policy as traffic
# The promotion gate lives in modelrepo (torch-free: the import command runs it too); these
# names stay importable from here.
from modelrepo.gate import GateFailed, latest_valid_version, shape_changes  # noqa: F401
from modelrepo.drift import feature_statistics
from training.data import Dataset
from training.train import FitResult, TrainConfig

LOSS_CURVE_FILE = "loss_curve.png"


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
    training = fit.training_record(candidate.config)
    if candidate.config.standardize:
        training["standardization"] = {"mean": fit.model.mean.tolist(),
                                       "std": fit.model.std.tolist()}
    if fit.model.imputes:
        training["imputation"] = {"strategy": candidate.config.impute,
                                  "values": fit.model.fill.tolist(),
                                  "missing_cells": ds.missing}
    inputs, outputs = signature(len(ds.feature_names), len(ds.class_labels))
    return {
        "name": None,
        "version": None,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "feature_names": ds.feature_names,
        "class_labels": ds.class_labels,
        "inputs": inputs,
        "outputs": outputs,
        # What the server does with a missing feature (null, NaN): the graph imputes it, or
        # the request is refused (every model before --impute).
        "missing_values": "impute" if fit.model.imputes else "refuse",
        "model": {"opset": candidate.opset, "exporter": "torch.onnx.export(dynamo=True)"},
        "libraries": library_versions(),
        "data": {"source": ds.source, "rows": ds.rows, "sha256": ds.sha256,
                 "train_rows": int(len(fit.split.train)),
                 "validation_rows": int(len(fit.split.validation)),
                 # Where the rows came from (--from-log: the served log and the original data).
                 **({"provenance": ds.provenance} if ds.provenance else {}),
                 # What serving compares its traffic with (drift): the training split's figures.
                 "statistics": feature_statistics(ds.features[fit.split.train],
                                                  ds.feature_names)},
        "training": training,
        "loss_curve": fit.history,
        "metrics": fit.metrics,
        "parity": candidate.parity,
        **(extra or {}),
    }


def publish(candidate: Candidate, repository: Path, model_name: str,
            loss_curve_png: bytes, extra: dict[str, Any] | None = None,
            promote: bool = True) -> Published:
    """Write the candidate as the next version of ``model_name``; ``promote`` as
    ``modelrepo.policy.publish`` takes it. Raises RepositoryError, BrokenVersion."""
    return traffic.publish(repository, model_name, candidate.model_bytes,
                           build_metadata(candidate, extra),
                           extra_files={LOSS_CURVE_FILE: loss_curve_png}, promote=promote)


def check_promotion(candidate: Candidate, model_dir: Path, max_regression: float,
                    force: bool) -> dict[str, Any] | None:
    """The promotion gate against the version served now; None when there is none.

    Both models run through onnxruntime on the candidate's validation split (all of its
    rows when it has none): :func:`modelrepo.gate.check_promotion`, which the import command
    shares. Returns the figures for metadata.json. Raises GateFailed when the candidate is worse
    by more than ``max_regression`` or its feature names or class labels differ — unless
    ``force``, in which case the override is recorded.
    """
    ds, split = candidate.dataset, candidate.fit.split
    rows_idx = split.validation if len(split.validation) else split.train
    which = "validation split" if len(split.validation) else "all training rows (no split)"
    return gate.check_promotion(candidate.model_bytes, ds.feature_names, ds.class_labels,
                                model_dir, ds.features[rows_idx], ds.labels[rows_idx],
                                f"{which} of {ds.source}, {len(rows_idx)} rows",
                                max_regression, force)
