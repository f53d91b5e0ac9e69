"""The repository contract on both backends: a directory and an S3 bucket (a real SeaweedFS,
tests/support/s3.py). The same cases, the same commands, the same results: numbering that never
reuses a number (retire, restore), rollback, aliases and promotion, publish without promotion,
and metadata refused before anything becomes visible."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import modelrepo
from modelrepo import policy, storage
from tests.support import ROOT
from tests.support.models import linear_metadata, linear_model_bytes, publish_linear_model
from tests.support.s3 import S3Server


@pytest.fixture(params=["directory", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty repository: a directory, or a bucket's prefix."""
    if request.param == "directory":
        return str(tmp_path / "repository")
    s3: S3Server = request.getfixturevalue("s3_server")
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return f"s3://{s3.make_bucket(f'c-{uuid.uuid4().hex[:12]}')}/repo"


@contextmanager
def opened(location: str) -> Iterator[Path]:
    with storage.open_repository(location) as repo:
        yield repo


def cli(location: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m modelrepo --artifacts LOCATION ...``: what a user runs."""
    return subprocess.run([sys.executable, "-m", "modelrepo", "--artifacts", location, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def publish(location: str, seed: int, promote: bool = True) -> int:
    with opened(location) as repo:
        return policy.publish(repo, "lin", linear_model_bytes(3, 2, seed=seed),
                              linear_metadata(3, 2), promote=promote).version


def state(location: str) -> tuple[list[int], list[int], policy.Policy, bool]:
    """(live versions, retired versions, the policy, whether config.pbtxt exists)."""
    with opened(location) as repo:
        model_dir = repo / "lin"
        for path in modelrepo.version_dirs(model_dir).values():
            modelrepo.read_version(path)  # every live version complete and verified
        return (sorted(modelrepo.version_dirs(model_dir)), modelrepo.retired_versions(model_dir),
                policy.read_policy(model_dir), (model_dir / modelrepo.CONFIG_FILE).is_file())


def test_numbers_are_never_reused_through_rollback_and_restore(location: str) -> None:
    assert [publish(location, seed) for seed in range(3)] == [1, 2, 3]
    done = cli(location, "rollback", "lin")
    assert done.returncode == 0, done.stderr
    assert state(location)[:2] == ([1, 2], [3])
    assert publish(location, 3) == 4  # never 3 again
    done = cli(location, "restore", "lin", "3")
    assert done.returncode == 0, done.stderr
    live, retired, _, config = state(location)
    assert (live, retired, config) == ([1, 2, 4, 5], [3], True)
    with opened(location) as repo:
        metadata, _ = modelrepo.read_version(repo / "lin" / "5")
    assert metadata["restored_from"]["version"] == 3 and metadata["version"] == 5
    listed = cli(location, "list", "lin")
    assert listed.returncode == 0 and "retired" in listed.stdout, listed.stderr


def test_aliases_promotion_and_rollback_of_production(location: str) -> None:
    publish(location, 0)
    publish(location, 1)
    for args in (("promote", "lin", "1"), ("alias", "lin", "stable", "2"),
                 ("canary", "lin", "2", "--percent", "25"), ("promote", "lin", "2")):
        done = cli(location, *args)
        assert done.returncode == 0, (args, done.stderr)
    current = state(location)[2]
    assert (current.production, dict(current.aliases), current.history) == \
        (2, {"production": 2, "stable": 2}, (1,))
    assert current.canary is None  # promoted: the canary's version now takes everything
    done = cli(location, "rollback", "lin")
    assert done.returncode == 0, done.stderr
    live, retired, current, _ = state(location)
    assert (live, retired, current.production) == ([1, 2], [], 1)  # aliases: nothing retired


def test_publish_without_promotion_pins_production_and_names_a_candidate(location: str) -> None:
    publish(location, 0)
    assert publish(location, 1, promote=False) == 2
    current = state(location)[2]
    assert dict(current.aliases) == {"production": 1, "candidate": 2}


def test_metadata_refused_by_the_contract_leaves_nothing(location: str) -> None:
    with opened(location) as repo, pytest.raises(modelrepo.BrokenVersion):
        modelrepo.publish_version(repo, "lin", linear_model_bytes(3, 2),
                                  {**linear_metadata(3, 2), "class_labels": ["only-one"]})
    with opened(location) as repo:
        assert modelrepo.highest_version_used(repo / "lin") == 0
        assert publish_linear_model(repo, "lin", 3, 2).version == 1


def test_import_publishes_like_training(location: str, tmp_path: Path) -> None:
    onnx_file = tmp_path / "mine.onnx"
    onnx_file.write_bytes(linear_model_bytes(3, 2, seed=7))
    for expected in (1, 2):
        done = cli(location, "import", str(onnx_file), "--name", "lin")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"lin version {expected}" in done.stdout
    assert state(location)[0] == [1, 2]


def test_an_aborted_rollout_records_its_verdict(location: str) -> None:
    publish(location, 0)
    publish(location, 1)
    assert cli(location, "promote", "lin", "1").returncode == 0
    done = cli(location, "rollout", "lin", "2", "--interval", "1ms",
               "--url", "http://127.0.0.1:9")  # no server there: aborted at once
    assert done.returncode == 1, done.stdout + done.stderr
    current = state(location)[2]
    assert current.production == 1 and current.canary is None
    assert current.rollout is not None and current.rollout["outcome"] == "aborted"
