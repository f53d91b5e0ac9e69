"""Shared fixtures: a real model trained once per session into a temporary repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from training.__main__ import main as train_main


def train(repository: Path, *args: str) -> int:
    """Run the real training CLI in-process (quiet); returns its exit status."""
    return train_main(["--artifacts", str(repository), "--log-every", "0", *args])


@pytest.fixture(scope="session")
def iris_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding iris version 1, trained for real. Treat as read-only."""
    repository = tmp_path_factory.mktemp("repository")
    assert train(repository) == 0
    return repository


@pytest.fixture
def repository(iris_repository: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the trained repository."""
    target = tmp_path / "repository"
    shutil.copytree(iris_repository, target)
    return target
