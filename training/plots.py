"""The loss curve a person looks at: loss per epoch, and validation accuracy when there is one."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402


def loss_curve_png(history: list[dict[str, float]], title: str) -> bytes:
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(epochs, [h["loss"] for h in history], color="tab:blue", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss", color="tab:blue")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if "validation_accuracy" in history[0]:
        acc = ax.twinx()
        acc.plot(epochs, [h["validation_accuracy"] for h in history], color="tab:orange",
                 label="validation accuracy")
        acc.set_ylabel("validation accuracy", color="tab:orange")
        acc.set_ylim(0, 1.02)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()
