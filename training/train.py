"""Fitting: full-batch SGD on cross-entropy, exactly as the tutorial does it. Pure and seeded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import optim

from training.data import MIN_ROWS_PER_CLASS, Dataset
from training.model import ExportedClassifier, SoftmaxClassifier


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1000
    lr: float = 0.1
    seed: int = 1
    val_fraction: float = 0.2
    standardize: bool = False
    log_every: int = 100

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "optimizer": "SGD (full batch)", "loss": "cross_entropy",
                "model": "nn.Linear(4, 3)"}


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # row indices into the dataset, sorted
    validation: np.ndarray


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> Split:
    """Hold out ``fraction`` of each class (rounded, at least one row stays in training).

    Uses its own numpy generator so splitting never consumes torch's random state.
    """
    everything = np.arange(len(labels))
    if fraction <= 0:
        return Split(everything, everything[:0])
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        take = min(int(round(len(rows) * fraction)), len(rows) - 1)
        held.append(rows[:take])
    validation = np.sort(np.concatenate(held))
    return Split(np.setdiff1d(everything, validation), validation)


def validation_problem(labels: np.ndarray, class_labels: list[str], fraction: float,
                       seed: int) -> str | None:
    """Why ``labels`` cannot have a meaningful validation split of ``fraction``, or None.

    Every class needs MIN_ROWS_PER_CLASS rows, and the split must hold out at least one row
    of every class (a tiny fraction may round to none).
    """
    counts = np.bincount(labels, minlength=len(class_labels))
    smallest = int(np.argmin(counts))
    if counts[smallest] < MIN_ROWS_PER_CLASS:
        return (f"{len(labels)} rows (class {class_labels[smallest]!r} has {counts[smallest]}) is "
                f"below the minimum of {MIN_ROWS_PER_CLASS} rows per class for a validation "
                "split")
    held = np.bincount(labels[stratified_split(labels, fraction, seed).validation],
                       minlength=len(class_labels))
    if held.min() == 0:
        empty = class_labels[int(np.argmin(held))]
        return (f"--val-fraction {fraction:g} holds out no row of class {empty!r} "
                f"({counts[int(np.argmin(held))]} rows) for a validation split; raise it")
    return None


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n: int) -> list[list[int]]:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix.tolist()


@dataclass
class FitResult:
    model: ExportedClassifier
    split: Split
    history: list[dict[str, float]]  # one entry per epoch: epoch, loss[, validation_accuracy]
    metrics: dict[str, Any]


def fit(config: TrainConfig, dataset: Dataset,
        progress: Callable[[str], None] | None = None) -> FitResult:
    """Train the tutorial model on ``dataset``. Deterministic for a given config.

    Logs ``Epoch  100/1000 Cost: 0.658891`` every ``log_every`` epochs through ``progress``.
    """
    split = stratified_split(dataset.labels, config.val_fraction, config.seed)
    x_all = torch.from_numpy(dataset.features)
    y_all = torch.from_numpy(dataset.labels)
    x_train, y_train = x_all[split.train], y_all[split.train]
    x_val, y_val = x_all[split.validation], y_all[split.validation]
    if config.standardize:
        mean = x_train.mean(dim=0)
        std = x_train.std(dim=0, unbiased=False).clamp_min(1e-12)
    else:
        mean, std = torch.zeros(x_all.shape[1]), torch.ones(x_all.shape[1])
    xs_train, xs_val = (x_train - mean) / std, (x_val - mean) / std

    torch.manual_seed(config.seed)  # right before the model: the tutorial's initial weights
    classifier = SoftmaxClassifier()
    optimizer = optim.SGD(classifier.parameters(), lr=config.lr)
    history: list[dict[str, float]] = []
    has_val = len(split.validation) > 0
    for epoch in range(config.epochs + 1):
        cost = F.cross_entropy(classifier(xs_train), y_train)
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
        entry = {"epoch": epoch, "loss": cost.item()}
        if has_val:
            with torch.no_grad():
                entry["validation_accuracy"] = (
                    (classifier(xs_val).argmax(dim=1) == y_val).float().mean().item()
                )
        history.append(entry)
        if progress and config.log_every > 0 and (
            epoch % config.log_every == 0 or epoch == config.epochs
        ):
            line = f"Epoch {epoch:4d}/{config.epochs} Cost: {entry['loss']:.6f}"
            if has_val:
                line += f" Validation accuracy: {entry['validation_accuracy']:.4f}"
            progress(line)

    classifier.eval()
    exported = ExportedClassifier(classifier, mean, std).eval()
    metrics = evaluate(exported, dataset, split)
    return FitResult(exported, split, history, metrics)


def evaluate(model: ExportedClassifier, dataset: Dataset, split: Split) -> dict[str, Any]:
    """Accuracy and loss on both splits, and the confusion matrix of the held-out one."""
    n = len(dataset.class_labels)
    out: dict[str, Any] = {}
    with torch.no_grad():
        for name, rows in (("train", split.train), ("validation", split.validation)):
            if len(rows) == 0:
                out[name] = None
                continue
            x = torch.from_numpy(dataset.features[rows])
            y = torch.from_numpy(dataset.labels[rows])
            logits = model.classifier((x - model.mean) / model.std)
            predicted = logits.argmax(dim=1)
            out[name] = {
                "rows": int(len(rows)),
                "accuracy": (predicted == y).float().mean().item(),
                "loss": F.cross_entropy(logits, y).item(),
            }
            out[f"{name}_confusion_matrix"] = confusion_matrix(y.numpy(), predicted.numpy(), n)
    held_out = "validation" if out["validation"] else "train"
    out["confusion_matrix"] = {"split": held_out, "labels": dataset.class_labels,
                               "matrix": out.pop(f"{held_out}_confusion_matrix")}
    out.pop("train_confusion_matrix", None)
    return out
