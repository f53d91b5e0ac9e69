"""The promotion gate: a candidate against the version served now, torch-free.

Shared by the training job (``training.publish.check_promotion``) and the import command
(``python -m modelrepo import``): both models run through onnxruntime on the same labelled rows.
Needs numpy and onnxruntime (the base dependencies), never torch or onnx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from modelrepo import CLASS, INPUT_NAME, PROBABILITIES, BrokenVersion, policy, read_version, \
    version_dirs


class GateFailed(Exception):
    """A candidate that must not be published; the message says which gate and by how much."""


def latest_valid_version(model_dir: Path) -> tuple[int, dict[str, Any], bytes] | None:
    """The version a server would serve now, or None: the production alias's when the model's
    traffic policy has a valid one (a malformed policy is ignored, as servers ignore it), else
    the highest valid version."""
    try:
        production = policy.read_policy(model_dir).production
    except policy.PolicyError:
        production = None
    dirs = version_dirs(model_dir)
    order = sorted(dirs, reverse=True)
    if production is not None and production in dirs:
        order.insert(0, order.pop(order.index(production)))
    for number in order:
        try:
            metadata, model_bytes = read_version(dirs[number])
        except BrokenVersion:
            continue
        return number, metadata, model_bytes
    return None


def accuracy(model_bytes: bytes, rows: npt.NDArray[np.float32],
             labels: npt.NDArray[np.int64]) -> float:
    """The share of ``rows`` whose served ``class`` equals ``labels`` (class indices).

    Raises onnxruntime's errors for a model that does not load or run.
    """
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    _, classes = session.run([PROBABILITIES, CLASS], {INPUT_NAME: rows})
    return float(np.mean(np.asarray(classes) == labels))


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


def check_promotion(model_bytes: bytes, feature_names: list[str], class_labels: list[str],
                    model_dir: Path, rows: npt.NDArray[np.float32] | None,
                    truth: npt.NDArray[np.int64] | None, rows_note: str,
                    max_regression: float, force: bool,
                    force_option: str = "--force",
                    rename_hint: str = "--model-name") -> dict[str, Any] | None:
    """The promotion gate of a candidate (its ONNX bytes, names and labels) against the version
    served now in ``model_dir``; None when there is none.

    Feature names and class labels must equal the served version's; with labelled ``rows``
    (float32 [N, F]) and ``truth`` (class indices), the candidate's accuracy may be worse than
    the served version's by at most ``max_regression``. Without rows only the names are
    compared (``candidate_accuracy`` is then None). Returns the figures for metadata.json.
    Raises GateFailed when a check fails — unless ``force``, in which case the override is
    recorded.
    """
    current = latest_valid_version(model_dir)
    if current is None:
        return None
    number, metadata, current_bytes = current
    problems = [*shape_changes(metadata["feature_names"], feature_names, "feature names",
                               "features", number),
                *shape_changes(metadata["class_labels"], class_labels, "class labels",
                               "classes", number)]
    candidate_acc = current_acc = None
    if rows is not None and truth is not None:
        candidate_acc = accuracy(model_bytes, rows, truth)
        # Labels are compared by name: the current model's class index i means its label i.
        if not problems:
            current_acc = accuracy(current_bytes, rows, truth)
            if candidate_acc < current_acc - max_regression:
                problems.append(f"candidate accuracy {candidate_acc:.4f} is worse than version "
                                f"{number}'s {current_acc:.4f} by more than --max-regression "
                                f"{max_regression:g}")
    record = {"against_version": number, "rows": rows_note,
              "candidate_accuracy": candidate_acc, "current_accuracy": current_acc,
              "max_regression": max_regression, "passed": not problems,
              "problems": problems, "forced": bool(force and problems)}
    if problems and not force:
        changed = any(p.startswith(("feature names", "class labels")) for p in problems)
        raise GateFailed("promotion gate: " + "; ".join(problems) + "; nothing was published ("
                         + ("clients of this model send and read those: publish it under a new "
                            f"{rename_hint}, or " if changed else "")
                         + f"{force_option} overrides)")
    return record
