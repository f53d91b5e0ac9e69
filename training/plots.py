"""The loss curve a person looks at: loss per epoch, and validation accuracy when there is one."""

from __future__ import annotations

import io
import textwrap
from pathlib import PurePath

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

TITLE_WIDTH = 72  # characters a line of the title may have: fits the 7-inch figure at 11 pt


def loss_curve_title(model_name: str, source: str, train_rows: int, validation_rows: int,
                     epochs: int, lr: float, standardized: bool) -> str:
    """What the curve shows: model, data file (its name, not its path), the rows trained on
    and validated on, and the settings."""
    rows = (f"{train_rows} training + {validation_rows} validation rows" if validation_rows
            else f"{train_rows} training rows (no validation split)")
    return (f"{model_name}: {PurePath(source).name}, {rows}, {epochs} epochs, lr {lr:g}"
            + (", standardized" if standardized else ""))


def loss_curve_figure(history: list[dict[str, float]], title: str) -> Figure:
    """The figure, its title wrapped to TITLE_WIDTH characters so it is never cut off.

    The caller closes it (``plt.close(fig)``).
    """
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(epochs, [h["loss"] for h in history], color="tab:blue", label="training loss")
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
    fig.tight_layout()
    return fig


def loss_curve_png(history: list[dict[str, float]], title: str) -> bytes:
    """The figure as PNG bytes; the whole title also goes in the PNG's Title text chunk."""
    fig = loss_curve_figure(history, title)
    out = io.BytesIO()
    try:
        fig.savefig(out, format="png", metadata={"Title": title})
    finally:
        plt.close(fig)
    return out.getvalue()
