"""The tutorial's model and the wrapper that is exported to ONNX."""

from __future__ import annotations

import torch
from torch import nn

from modelrepo import N_CLASSES, N_FEATURES


class SoftmaxClassifier(nn.Module):
    """The tutorial's softmax classifier: one ``nn.Linear(4, 3)`` producing logits."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(N_FEATURES, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class ExportedClassifier(nn.Module):
    """What ``model.onnx`` computes: standardize, logits, then softmax and argmax in the graph.

    ``mean``/``std`` are the training split's statistics (zeros/ones without --standardize),
    so a client always sends raw features.
    """

    def __init__(self, classifier: SoftmaxClassifier, mean: torch.Tensor,
                 std: torch.Tensor) -> None:
        super().__init__()
        self.classifier = classifier
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier((x - self.mean) / self.std)
        return torch.softmax(logits, dim=1), torch.argmax(logits, dim=1)
