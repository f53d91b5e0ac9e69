"""Reading the prediction log back: predictions joined with their feedback, per version.

``python -m modelrepo report <model> --log DIR`` prints it; ``python -m training --from-log``
trains on the labelled rows. The log's format is ``serving/telemetry/prediction_log.py``'s
(CloudEvents 1.0, structured mode, one JSON object a line); lines that are not events of a
known type and schema are counted and skipped, never fatal (a worker killed mid-write leaves a
half line at most).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelrepo.drift import BinCounter, psi, reading, statistics_of

PREDICTION_TYPE = "io.softserve.inference.response"
FEEDBACK_TYPE = "io.softserve.feedback"
SCHEMAS = {PREDICTION_TYPE: "urn:softserve:prediction:1", FEEDBACK_TYPE: "urn:softserve:feedback:1"}


class LogError(Exception):
    """A log directory that cannot be read; the message says why."""


@dataclass
class Prediction:
    """One logged inference (a request: one or more rows)."""

    id: str
    version: str
    feature_names: list[str]
    inputs: list[list[float | None]]
    labels: list[str]  # the label answered for each row


@dataclass
class LogData:
    """What the log holds for one model."""

    model: str
    predictions: dict[str, Prediction] = field(default_factory=dict)  # by request id
    feedback: dict[tuple[str, int], str] = field(default_factory=dict)  # (id, row): label
    feedback_items: int = 0
    skipped_lines: int = 0
    files: int = 0

    def labelled(self) -> list[tuple[Prediction, int, str]]:
        """(prediction, row, true label) for every logged row that has feedback."""
        out = []
        for (request_id, row), label in self.feedback.items():
            prediction = self.predictions.get(request_id)
            if prediction is not None and row < len(prediction.inputs):
                out.append((prediction, row, label))
        return out

    def unmatched(self) -> int:
        """Feedback items whose request id (and row) match no logged prediction."""
        return sum(1 for (request_id, row) in self.feedback
                   if request_id not in self.predictions
                   or row >= len(self.predictions[request_id].inputs))


def log_files(directory: Path) -> list[Path]:
    """The log's files (``*.jsonl``), oldest first. Raises LogError if it is no directory."""
    try:
        entries = [e for e in os.scandir(directory) if e.name.endswith(".jsonl") and e.is_file()]
    except OSError as exc:
        raise LogError(f"cannot read the prediction log {directory}: {exc.strerror}") from None
    return [Path(e.path) for e in sorted(entries, key=lambda e: (e.stat().st_mtime_ns, e.name))]


def read_log(directory: Path, model: str) -> LogData:
    """The predictions and feedback ``directory`` holds for ``model``. Raises LogError."""
    data = LogData(model)
    for path in log_files(directory):
        data.files += 1
        with open(path, "rb") as f:
            for line in f:
                try:
                    event = json.loads(line)
                    kind = event["type"]
                    body = event["data"]
                    if SCHEMAS.get(kind) != event.get("dataschema"):
                        raise ValueError(kind)
                    if body["model"] != model:
                        continue
                    if kind == PREDICTION_TYPE:
                        data.predictions[event["id"]] = Prediction(
                            event["id"], str(body["version"]), list(body["feature_names"]),
                            body["inputs"], list(body["label"]))
                    else:
                        data.feedback[(body["request_id"], int(body.get("row", 0)))] = \
                            body["label"]
                        data.feedback_items += 1
                except (ValueError, KeyError, TypeError):
                    data.skipped_lines += 1
    return data


def rows_array(inputs: list[list[float | None]], width: int | None = None) -> np.ndarray:
    """Logged input rows as float32 (N, width), null (a missing value) as NaN."""
    values = np.asarray([[math.nan if v is None else v for v in row] for row in inputs],
                        dtype=np.float32)
    return values.reshape(len(inputs), width if width is not None else -1)


def version_metadata(model_dir: Path | None, version: str) -> dict[str, Any] | None:
    """A version's metadata.json (live or retired) if the repository has it readable."""
    if model_dir is None:
        return None
    for name in (version, f"retired-{version}"):
        try:
            metadata = json.loads((model_dir / name / "metadata.json").read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(metadata, dict):
            return metadata
    return None


def version_report(data: LogData, model_dir: Path | None) -> list[dict[str, Any]]:
    """Per version found in the log, newest first: rows logged, labelled rows, accuracy,
    confusion matrix (rows: true label, columns: predicted) and per-feature PSI against the
    version's training statistics (when the repository has them)."""
    versions = sorted({p.version for p in data.predictions.values()},
                      key=lambda v: int(v) if v.isdigit() else -1, reverse=True)
    labelled = data.labelled()
    out = []
    for version in versions:
        predictions = [p for p in data.predictions.values() if p.version == version]
        metadata = version_metadata(model_dir, version)
        pairs = [(label, p.labels[row]) for p, row, label in labelled if p.version == version]
        labels = list(metadata["class_labels"]) if metadata else \
            sorted({x for pair in pairs for x in pair})
        index = {label: i for i, label in enumerate(labels)}
        matrix = [[0] * len(labels) for _ in labels]
        for truth, predicted in pairs:
            if truth in index and predicted in index:
                matrix[index[truth]][index[predicted]] += 1
        correct = sum(1 for truth, predicted in pairs if truth == predicted)
        entry: dict[str, Any] = {
            "version": version, "requests": len(predictions),
            "rows": sum(len(p.inputs) for p in predictions), "labelled": len(pairs),
            "accuracy": correct / len(pairs) if pairs else None,
            "confusion_matrix": {"labels": labels, "matrix": matrix},
            "training_accuracy": _held_out_accuracy(metadata), "drift": None}
        statistics = statistics_of(metadata) if metadata else None
        names = [f["name"] for f in statistics["features"]] if statistics else []
        same = [p for p in predictions if p.feature_names == names]
        if statistics and same:
            counter = BinCounter(statistics)
            for p in same:
                counter.add(rows_array(p.inputs))
            counter.merge()
            entry["drift"] = {
                "rows": counter.rows,
                "features": [{"feature": name, "psi": value, "reading": reading(value),
                              "out_of_range": int(counter.out_of_range[j])}
                             for j, (name, value) in enumerate(zip(names, counter.psi()))]}
        out.append(entry)
    return out


def _held_out_accuracy(metadata: dict[str, Any] | None) -> float | None:
    metrics = (metadata or {}).get("metrics") or {}
    split = metrics.get("validation") or metrics.get("train") or {}
    value = split.get("accuracy") if isinstance(split, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def format_report(data: LogData, versions: list[dict[str, Any]]) -> list[str]:
    """The report as printed lines."""
    lines = [f"model {data.model}: {len(data.predictions)} logged requests in {data.files} "
             f"files; {data.feedback_items} feedback items, {data.unmatched()} unmatched (no "
             f"logged prediction with that request id and row)"
             + (f"; {data.skipped_lines} unreadable lines skipped" if data.skipped_lines else "")]
    for v in versions:
        accuracy = "n/a" if v["accuracy"] is None else f"{v['accuracy']:.4f}"
        trained = "" if v["training_accuracy"] is None else \
            f" (at training, held out: {v['training_accuracy']:.4f})"
        lines.append(f"version {v['version']}: {v['rows']} rows in {v['requests']} requests, "
                     f"{v['labelled']} labelled, live accuracy {accuracy}{trained}")
        cm = v["confusion_matrix"]
        if v["labelled"] and len(cm["labels"]) <= 20:
            labels = [label[:12] for label in cm["labels"]]
            width = max(5, *(len(label) for label in labels))
            lines.append("  confusion matrix (rows: true label, columns: predicted):")
            lines.append(f"  {'':<{width}}  " + " ".join(f"{x:>{width}}" for x in labels))
            lines += [f"  {label:<{width}}  " + " ".join(f"{n:>{width}}" for n in row)
                      for label, row in zip(labels, cm["matrix"])]
        drift = v["drift"]
        if drift is None:
            lines.append("  drift: n/a (no training statistics for this version in the "
                         "repository, or its feature names differ from the log's)")
            continue
        lines.append(f"  drift over {drift['rows']} logged rows (PSI: < 0.1 stable, 0.1-0.25 "
                     "moderate, > 0.25 significant):")
        for f in drift["features"]:
            lines.append(f"    {f['feature'][:30]:<30}  PSI {f['psi']:8.4f}  {f['reading']:<11}"
                         f"  out of range {f['out_of_range']}")
    return lines


def training_rows(data: LogData, feature_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """The labelled logged rows whose request had exactly ``feature_names``: (rows (N, F)
    float32, NaN where missing; their true labels)."""
    rows, labels = [], []
    for prediction, row, label in data.labelled():
        if prediction.feature_names == feature_names:
            rows.append(prediction.inputs[row])
            labels.append(label)
    return rows_array(rows, len(feature_names)), labels


__all__ = ["LogData", "LogError", "Prediction", "format_report", "psi", "read_log",
           "training_rows", "version_report"]
