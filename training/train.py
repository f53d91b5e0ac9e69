"""Fitting: SGD on cross-entropy, full batch exactly as the tutorial does it, or mini-batches
for large data. Pure and seeded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import optim

from training.data import (DEFAULT_BATCH_SIZE, FULL_BATCH_ROWS, MIN_ROWS_PER_CLASS, DataError,
                           Dataset)
from training.model import ExportedClassifier, SoftmaxClassifier


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1000
    lr: float = 0.1
    seed: int = 1
    val_fraction: float = 0.2
    standardize: bool = False
    log_every: int = 100
    hidden: tuple[int, ...] = ()
    batch_size: int | None = None  # None: full batch up to FULL_BATCH_ROWS training rows
    class_weight: str = "none"
    impute: str | None = None  # "mean" or "median": fill missing values

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hidden": list(self.hidden), "optimizer": "SGD (full batch)",
                "loss": "cross_entropy", "model": "nn.Linear(4, 3)"}

    def batch_for(self, train_rows: int) -> int:
        """The rows of one SGD step: every training row (full batch) or a mini-batch."""
        if self.batch_size is None:
            return train_rows if train_rows <= FULL_BATCH_ROWS else DEFAULT_BATCH_SIZE
        return max(1, min(self.batch_size, train_rows))


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
    # One entry per epoch: epoch, loss[, validation_loss, validation_accuracy].
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    batch_size: int  # rows per SGD step actually used
    class_weights: list[float] | None  # the loss's per-class weights, when balanced

    def training_record(self, config: TrainConfig) -> dict[str, Any]:
        """The config as metadata.json's ``training`` records it, with what the run chose."""
        full = self.batch_size >= len(self.split.train)
        record = {**config.as_dict(), "batch_size": self.batch_size,
                  "optimizer": "SGD (full batch)" if full else
                  f"SGD (mini-batches of {self.batch_size} rows, shuffled every epoch)",
                  "model": self.model.classifier.describe()}
        if self.class_weights is not None:
            record["class_weights"] = self.class_weights
        return record


def fill_values(x_train: torch.Tensor, strategy: str,
                feature_names: list[str]) -> torch.Tensor:
    """Per feature, the training split's mean or median of the values present.

    Raises DataError for a feature with no value at all in the training split."""
    present = ~torch.isnan(x_train)
    empty = (~present.any(dim=0)).nonzero().flatten().tolist()
    if empty:
        raise DataError(f"column {feature_names[empty[0]]!r} has no value in the training "
                        "split: nothing to impute from; leave it out with --ignore")
    if strategy == "mean":
        return torch.nansum(x_train.double(), dim=0).div(present.sum(dim=0)).float()
    # numpy's median (the mean of the middle two of an even count), not torch's lower one.
    return torch.from_numpy(np.nanmedian(x_train.numpy(), axis=0).astype(np.float32))


def balanced_weights(y_train: torch.Tensor, n_classes: int) -> torch.Tensor:
    """scikit-learn's "balanced": rows / (classes * rows of the class), 0 for a class the
    training split lacks."""
    counts = torch.bincount(y_train, minlength=n_classes).double()
    weights = len(y_train) / (n_classes * counts)
    return torch.where(counts > 0, weights, torch.zeros_like(weights)).float()


def fit(config: TrainConfig, dataset: Dataset,
        progress: Callable[[str], None] | None = None) -> FitResult:
    """Train the model on ``dataset``. Deterministic for a given config.

    Logs ``Epoch  100/1000 Cost: 0.658891`` every ``log_every`` epochs through ``progress``.
    Raises DataError when a feature to impute has no value in the training split.
    """
    split = stratified_split(dataset.labels, config.val_fraction, config.seed)
    n_features, n_classes = dataset.features.shape[1], len(dataset.class_labels)
    x_all = torch.from_numpy(dataset.features)
    y_all = torch.from_numpy(dataset.labels)
    x_train, y_train = x_all[split.train], y_all[split.train]
    x_val, y_val = x_all[split.validation], y_all[split.validation]
    fill = None
    if config.impute:
        fill = fill_values(x_train, config.impute, dataset.feature_names)
        x_train = torch.where(torch.isnan(x_train), fill, x_train)
        x_val = torch.where(torch.isnan(x_val), fill, x_val)
    if config.standardize:
        mean = x_train.mean(dim=0)
        std = x_train.std(dim=0, unbiased=False)
        # A constant column: divide by 1, not by ~0 (which would blow up any other value).
        std = torch.where(std < 1e-12, torch.ones_like(std), std)
    else:
        mean, std = torch.zeros(n_features), torch.ones(n_features)
    xs_train, xs_val = (x_train - mean) / std, (x_val - mean) / std
    del x_train, x_val  # large data: only the standardized copies are needed from here
    weight = balanced_weights(y_train, n_classes) if config.class_weight == "balanced" else None

    torch.manual_seed(config.seed)  # right before the model: the tutorial's initial weights
    classifier = SoftmaxClassifier(n_features, n_classes, config.hidden)
    optimizer = optim.SGD(classifier.parameters(), lr=config.lr)
    history: list[dict[str, float]] = []
    has_val = len(split.validation) > 0
    rows = len(xs_train)
    batch = config.batch_for(rows)
    shuffle = torch.Generator().manual_seed(config.seed)  # never torch's global state
    for epoch in range(config.epochs + 1):
        if batch >= rows:
            cost = F.cross_entropy(classifier(xs_train), y_train, weight=weight)
            optimizer.zero_grad()
            cost.backward()
            optimizer.step()
            loss = cost.item()
        else:
            total = torch.zeros((), dtype=torch.float64)
            order = torch.randperm(rows, generator=shuffle)
            for start in range(0, rows, batch):
                take = order[start:start + batch]
                cost = F.cross_entropy(classifier(xs_train[take]), y_train[take], weight=weight)
                optimizer.zero_grad()
                cost.backward()
                optimizer.step()
                total += cost.detach() * len(take)
            loss = total.item() / rows
        entry = {"epoch": epoch, "loss": loss}
        if has_val:
            with torch.no_grad():
                logits = classifier(xs_val)
                entry["validation_loss"] = F.cross_entropy(logits, y_val, weight=weight).item()
                entry["validation_accuracy"] = (
                    (logits.argmax(dim=1) == y_val).float().mean().item()
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
    exported = ExportedClassifier(classifier, mean, std, fill).eval()
    metrics = evaluate(exported, dataset, split)
    return FitResult(exported, split, history, metrics, batch,
                     weight.tolist() if weight is not None else None)


def per_class(matrix: list[list[int]], labels: list[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support of every class from a confusion matrix (rows true,
    columns predicted); 0 where a denominator is 0, as scikit-learn's zero_division=0."""
    cm = np.asarray(matrix, dtype=np.float64)
    hits = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    return [{"label": label, "precision": float(p), "recall": float(r), "f1": float(f),
             "support": int(n)}
            for label, p, r, f, n in zip(labels, precision, recall, f1, actual)]


def evaluate(model: ExportedClassifier, dataset: Dataset, split: Split) -> dict[str, Any]:
    """Accuracy and loss on both splits; the confusion matrix and per-class precision, recall
    and F1 of the held-out one (the training split without one)."""
    n = len(dataset.class_labels)
    out: dict[str, Any] = {}
    with torch.no_grad():
        for name, rows in (("train", split.train), ("validation", split.validation)):
            if len(rows) == 0:
                out[name] = None
                continue
            x = torch.from_numpy(dataset.features[rows])
            y = torch.from_numpy(dataset.labels[rows])
            logits = model.classifier(model.prepare(x))
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
    classes = per_class(out["confusion_matrix"]["matrix"], dataset.class_labels)
    out["per_class"] = {"split": held_out, "classes": classes}
    out["macro_f1"] = float(np.mean([c["f1"] for c in classes]))
    return out
