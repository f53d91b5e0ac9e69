"""The tutorial's published run, reproduced exactly; and the seeding rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.data import iris, toy
from training.train import TrainConfig, fit, stratified_split

# The tutorial's printed costs (epoch: cost), nn.Linear(4, 3), SGD lr 0.1, torch.manual_seed(1).
TUTORIAL = {0: 1.6167852878570557, 100: 0.6588907837867737, 200: 0.5734434127807617,
            300: 0.5181514024734497, 400: 0.4732654690742493, 500: 0.4335160553455353,
            600: 0.3965630829334259, 700: 0.36091411113739014, 800: 0.32539209723472595,
            900: 0.2891784608364105, 1000: 0.25414788722991943}


def test_toy_run_reproduces_the_tutorial_loss_curve() -> None:
    lines: list[str] = []
    result = fit(TrainConfig(epochs=1000, lr=0.1, seed=1, val_fraction=0.0), toy(), lines.append)
    losses = {h["epoch"]: h["loss"] for h in result.history}
    for epoch, expected in TUTORIAL.items():
        assert losses[epoch] == pytest.approx(expected, abs=1e-6), epoch
    assert result.metrics["train"]["accuracy"] == 1.0
    assert result.metrics["validation"] is None
    assert lines[1] == "Epoch  100/1000 Cost: 0.658891"
    assert len(lines) == 11


def test_split_does_not_touch_torchs_random_state() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    stratified_split(iris().labels, 0.2, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_split_is_stratified_seeded_and_disjoint() -> None:
    labels = iris().labels
    a = stratified_split(labels, 0.2, seed=1)
    b = stratified_split(labels, 0.2, seed=1)
    c = stratified_split(labels, 0.2, seed=2)
    assert np.array_equal(a.validation, b.validation)
    assert not np.array_equal(a.validation, c.validation)
    assert np.bincount(labels[a.validation]).tolist() == [10, 10, 10]
    assert len(np.intersect1d(a.train, a.validation)) == 0
    assert len(a.train) + len(a.validation) == 150


def test_standardize_bakes_training_statistics_into_the_model() -> None:
    result = fit(TrainConfig(epochs=1000, val_fraction=0.2, standardize=True), iris())
    train_rows = iris().features[result.split.train]
    np.testing.assert_allclose(result.model.mean.numpy(), train_rows.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(result.model.std.numpy(), train_rows.std(axis=0), rtol=1e-4)
    assert result.metrics["validation"]["accuracy"] >= 0.9


def test_confusion_matrix_counts_the_validation_rows() -> None:
    result = fit(TrainConfig(epochs=200, val_fraction=0.2), iris())
    cm = result.metrics["confusion_matrix"]
    assert cm["split"] == "validation"
    assert np.array(cm["matrix"]).sum() == 30
    assert np.array(cm["matrix"]).sum(axis=1).tolist() == [10, 10, 10]
