"""The classifier (the tutorial's ``nn.Linear``, or a small ReLU MLP) and the wrapper that is
exported to ONNX."""

from __future__ import annotations

import torch
from torch import nn


class SoftmaxClassifier(nn.Module):
    """Logits for ``n_classes`` classes from ``n_features`` numbers.

    Without hidden layers it is the tutorial's softmax classifier, one ``nn.Linear(F, K)``
    (``Linear(4, 3)`` by default: created first, so ``torch.manual_seed`` right before gives
    the tutorial's initial weights). ``hidden`` (e.g. ``(64, 32)``) puts ReLU layers of those
    widths in between: a multilayer perceptron for data no hyperplane separates.
    """

    def __init__(self, n_features: int = 4, n_classes: int = 3,
                 hidden: tuple[int, ...] = ()) -> None:
        super().__init__()
        widths = [n_features, *hidden, n_classes]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(a, b))
        self.layers = nn.Sequential(*layers)
        self.n_features, self.n_classes, self.hidden = n_features, n_classes, tuple(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def describe(self) -> str:
        """``nn.Linear(4, 3)``, or the MLP's layers, for metadata and messages."""
        if not self.hidden:
            return f"nn.Linear({self.n_features}, {self.n_classes})"
        widths = [self.n_features, *self.hidden, self.n_classes]
        return "MLP " + " -> ".join(map(str, widths)) + " (ReLU)"


class ExportedClassifier(nn.Module):
    """What ``model.onnx`` computes: impute, standardize, logits, then softmax and argmax in
    the graph.

    ``mean``/``std`` are the training split's statistics (zeros/ones without standardization),
    so a client always sends raw features. ``fill`` (only with --impute) holds the value that
    replaces a missing (NaN) feature; without it the graph has no such step and a NaN input
    stays NaN, as the server expects of a model that refuses missing values.
    """

    def __init__(self, classifier: SoftmaxClassifier, mean: torch.Tensor,
                 std: torch.Tensor, fill: torch.Tensor | None = None) -> None:
        super().__init__()
        self.classifier = classifier
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())
        self.imputes = fill is not None
        if fill is not None:
            self.register_buffer("fill", fill.detach().clone().float())

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Raw features to the classifier's input: missing values filled, standardized."""
        if self.imputes:
            x = torch.where(torch.isnan(x), self.fill, x)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(self.prepare(x))
        return torch.softmax(logits, dim=1), torch.argmax(logits, dim=1)
