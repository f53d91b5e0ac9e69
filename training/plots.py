"""The picture a person looks at: the loss curves per epoch (training, and validation with its
accuracy when there is a split), and below them the confusion matrix with its labels."""

from __future__ import annotations

import io
import textwrap
from pathlib import PurePath
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

TITLE_WIDTH = 72  # characters a line of the title may have: fits the 7-inch figure at 11 pt
LABELLED_CLASSES = 20  # up to this many classes the matrix has tick labels and counts


def loss_curve_title(model_name: str, source: str, train_rows: int, validation_rows: int,
                     epochs: int, lr: float, standardized: bool) -> str:
    """What the curve shows: model, data file (its name, not its path), the rows trained on
    and validated on, and the settings."""
    rows = (f"{train_rows} training + {validation_rows} validation rows" if validation_rows
            else f"{train_rows} training rows (no validation split)")
    return (f"{model_name}: {PurePath(source).name}, {rows}, {epochs} epochs, lr {lr:g}"
            + (", standardized" if standardized else ""))


def loss_curve_figure(history: list[dict[str, float]], title: str,
                      confusion: dict[str, Any] | None = None) -> Figure:
    """The figure, its title wrapped to TITLE_WIDTH characters so it is never cut off; the
    loss curves on top (the first axes), the confusion matrix (metrics' ``confusion_matrix``:
    split, labels, matrix) below when given.

    The caller closes it (``plt.close(fig)``).
    """
    epochs = [h["epoch"] for h in history]
    if confusion is None:
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    else:
        n = len(confusion["labels"])
        fig, (ax, cm_ax) = plt.subplots(2, 1, figsize=(7, 4 + min(7.0, 2.5 + 0.25 * n)),
                                        dpi=100, height_ratios=[4, min(7.0, 2.5 + 0.25 * n)])
    ax.plot(epochs, [h["loss"] for h in history], color="tab:blue", label="training loss")
    if history and "validation_loss" in history[0]:
        ax.plot(epochs, [h["validation_loss"] for h in history], color="tab:blue",
                linestyle="--", label="validation loss")
        ax.legend(loc="upper center", fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss", color="tab:blue")
    ax.set_title("\n".join(textwrap.wrap(title, TITLE_WIDTH)), fontsize=11)
    ax.grid(alpha=0.3)
    if history and "validation_accuracy" in history[0]:
        acc = ax.twinx()
        acc.plot(epochs, [h["validation_accuracy"] for h in history], color="tab:orange",
                 label="validation accuracy")
        acc.set_ylabel("validation accuracy", color="tab:orange")
        acc.set_ylim(0, 1.02)
    if confusion is not None:
        confusion_axes(cm_ax, confusion)
    fig.tight_layout()
    return fig


def confusion_axes(ax: Any, confusion: dict[str, Any]) -> None:
    """The confusion matrix as a heat map: rows true classes, columns predicted; labels and
    counts written out up to LABELLED_CLASSES classes."""
    matrix, labels = confusion["matrix"], confusion["labels"]
    n = len(labels)
    ax.imshow(matrix, cmap="Blues", interpolation="nearest", aspect="equal")
    ax.set_title(f"confusion matrix ({confusion['split']} split)", fontsize=10)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= LABELLED_CLASSES:
        short = [label if len(label) <= 14 else label[:13] + "…" for label in labels]
        ax.set_xticks(range(n), short, rotation=45 if n > 4 else 0, ha="right" if n > 4
                      else "center", fontsize=8)
        ax.set_yticks(range(n), short, fontsize=8)
        top = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="white" if count > top / 2 else "black")


def loss_curve_png(history: list[dict[str, float]], title: str,
                   confusion: dict[str, Any] | None = None) -> bytes:
    """The figure as PNG bytes; the whole title also goes in the PNG's Title text chunk."""
    fig = loss_curve_figure(history, title, confusion)
    out = io.BytesIO()
    try:
        fig.savefig(out, format="png", metadata={"Title": title})
    finally:
        plt.close(fig)
    return out.getvalue()
