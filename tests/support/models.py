"""A tiny real model: iris trained through the training CLI into a repository folder."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import modelrepo
from tests.support import ROOT

MODEL = "iris"


def training_args(repository: Path, *args: str) -> list[str]:
    """The training CLI's arguments that publish into ``repository``, quietly."""
    return ["--artifacts", str(repository), "--log-every", "0", *args]


def train(repository: Path, *args: str) -> int:
    """Run the real training CLI in-process (quiet); returns its exit status."""
    from training.__main__ import main  # torch: imported only by whoever trains here

    return main(training_args(repository, *args))


def train_in_subprocess(repository: Path, *args: str, python: str = sys.executable) -> None:
    """Run the real training CLI as ``python -m training``, keeping torch out of this process.

    Raises RuntimeError, with the CLI's output, if it fails.
    """
    command = [python, "-m", "training", *training_args(repository, *args)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"training failed ({done.returncode}): {shlex.join(command)}\n"
                           f"{done.stdout}\n{done.stderr}")


def served_version(repository: Path, model: str = MODEL) -> Path:
    """The version directory a server serves for ``model``: the highest one that passes
    ``modelrepo.read_version`` (the repository contract: names, metadata, sha256).

    Raises RuntimeError if there is none.
    """
    for _, path in sorted(modelrepo.version_dirs(repository / model).items(), reverse=True):
        try:
            modelrepo.read_version(path)
        except modelrepo.BrokenVersion:
            continue
        return path
    raise RuntimeError(f"no valid version of {model!r} in the repository")
