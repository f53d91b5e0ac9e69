"""Candidate checks and the publish of the next version into the model repository."""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from modelrepo import (CLASS, INPUT_NAME, PROBABILITIES, BrokenVersion, Published,
                       publish_version, read_version, signature, version_dirs)
from modelrepo.drift import feature_statistics
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
            loss_curve_png: bytes, extra: dict[str, Any] | None = None) -> Published:
    """Write the candidate as the next version of ``model_name``. Raises RepositoryError."""
    return publish_version(repository, model_name, candidate.model_bytes,
                           build_metadata(candidate, extra),
                           extra_files={LOSS_CURVE_FILE: loss_curve_png})


def latest_valid_version(model_dir: Path) -> tuple[int, dict[str, Any], bytes] | None:
    """The version a server would serve now (highest valid), or None."""
    for number, path in sorted(version_dirs(model_dir).items(), reverse=True):
        try:
            metadata, model_bytes = read_version(path)
        except BrokenVersion:
            continue
        return number, metadata, model_bytes
    return None


def _accuracy(model_bytes: bytes, rows: np.ndarray, labels: np.ndarray) -> float:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    _, classes = session.run([PROBABILITIES, CLASS], {INPUT_NAME: rows})
    return float(np.mean(classes == labels))


def _listed(names: list[str], most: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def shape_changes(before: list[str], after: list[str], what: str, unit: str,
                  number: int) -> list[str]:
    """How a candidate's feature names or class labels differ from version ``number``'s, in
    one line (the count, then which names came and went, or moved); [] when equal."""
    if before == after:
        return []
    added = [n for n in after if n not in set(before)]
    removed = [n for n in before if n not in set(after)]
    line = f"{what} differ from version {number}'s: "
    if len(before) != len(after):
        line += f"{len(after)} {unit} instead of {len(before)}"
    else:
        line += f"the same {len(after)} {unit}"
    if added or removed:
        line += "".join([f", new {_listed(added)}" if added else "",
                         f", gone {_listed(removed)}" if removed else ""])
    else:
        line += ", in another order"
    return [line]


def check_promotion(candidate: Candidate, model_dir: Path, max_regression: float,
                    force: bool) -> dict[str, Any] | None:
    """The promotion gate against the version served now; None when there is none.

    Both models run through onnxruntime on the candidate's validation split (all of its
    rows when it has none). Returns the figures for metadata.json. Raises GateFailed when the
    candidate is worse by more than ``max_regression`` or its feature names or class labels
    differ — unless ``force``, in which case the override is recorded.
    """
    current = latest_valid_version(model_dir)
    if current is None:
        return None
    number, metadata, model_bytes = current
    ds, split = candidate.dataset, candidate.fit.split
    rows_idx = split.validation if len(split.validation) else split.train
    which = "validation split" if len(split.validation) else "all training rows (no split)"
    rows, truth = ds.features[rows_idx], ds.labels[rows_idx]
    problems = [*shape_changes(metadata["feature_names"], ds.feature_names, "feature names",
                               "features", number),
                *shape_changes(metadata["class_labels"], ds.class_labels, "class labels",
                               "classes", number)]
    candidate_acc = _accuracy(candidate.model_bytes, rows, truth)
    # Labels are compared by name: the current model's class index i means its label i.
    current_acc = None
    if not problems:
        current_acc = _accuracy(model_bytes, rows, truth)
        if candidate_acc < current_acc - max_regression:
            problems.append(f"candidate accuracy {candidate_acc:.4f} is worse than version "
                            f"{number}'s {current_acc:.4f} by more than --max-regression "
                            f"{max_regression:g}")
    record = {"against_version": number, "rows": f"{which} of {ds.source}, {len(rows)} rows",
              "candidate_accuracy": candidate_acc, "current_accuracy": current_acc,
              "max_regression": max_regression, "passed": not problems,
              "problems": problems, "forced": bool(force and problems)}
    if problems and not force:
        changed = any(p.startswith(("feature names", "class labels")) for p in problems)
        raise GateFailed("promotion gate: " + "; ".join(problems) + "; nothing was published ("
                         + ("clients of this model send and read those: publish it under a new "
                            "--model-name, or " if changed else "")
                         + "--force overrides)")
    return record
