"""The promotion gate: a retrained candidate against the version served now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import modelrepo
from tests.support.models import train


def versions(repository: Path) -> list[int]:
    return sorted(modelrepo.version_dirs(repository / "iris"))


def test_gate_passes_a_candidate_as_good_and_records_figures(
        repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(repository, "--seed", "1") == 0
    assert "Promotion gate vs version 1 on validation split of iris, 30 rows" in \
        capsys.readouterr().out
    meta = json.loads((repository / "iris" / "2" / "metadata.json").read_text())
    gate = meta["promotion"]
    assert gate["against_version"] == 1 and gate["passed"] and not gate["forced"]
    assert gate["candidate_accuracy"] >= gate["current_accuracy"] - 0.02
    assert gate["rows"].endswith("30 rows") and gate["max_regression"] == 0.02


def test_gate_refuses_a_worse_candidate(repository: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert train(repository, "--epochs", "3", "--min-accuracy", "0") == 1
    err = capsys.readouterr().err
    assert "promotion gate" in err and "worse than version 1" in err and "--force" in err
    assert versions(repository) == [1]


def test_force_publishes_and_records_the_override(repository: Path) -> None:
    assert train(repository, "--epochs", "3", "--min-accuracy", "0", "--force") == 0
    gate = json.loads((repository / "iris" / "2" / "metadata.json").read_text())["promotion"]
    assert gate["forced"] and not gate["passed"] and "worse than version 1" in gate["problems"][0]


def test_max_regression_widens_the_gate(repository: Path) -> None:
    assert train(repository, "--epochs", "3", "--min-accuracy", "0",
                 "--max-regression", "1") == 0
    assert versions(repository) == [1, 2]


def test_different_labels_or_features_are_refused_unless_forced(
        repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = (Path(__file__).parents[2] / "training" / "data" / "iris.csv").read_text()
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(source.replace("setosa", "bristly").replace("sepal_width", "sw"))
    args = ("--data", str(renamed), "--model-name", "iris")
    assert train(repository, *args) == 1
    err = capsys.readouterr().err
    assert "feature names" in err and "class labels" in err
    assert versions(repository) == [1]
    assert train(repository, *args, "--force") == 0
    assert json.loads((repository / "iris" / "2" / "metadata.json").read_text())[
        "promotion"]["forced"]
