"""Issue 20, many models: a poll of an unchanged repository keeps each model's state without
listing its directory or stating its versions, yet sees every change a publish, a retire, a
policy edit or a version written in place makes, in-process and on a real gunicorn."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import modelrepo
from modelrepo.policy import POLICY_FILE
from serving import repository as served
from serving.repository import ModelRepository
from tests.support.models import publish_linear_model
from tests.support.server import start_server

MODELS = [f"m{i:02d}" for i in range(12)]


def build(root: Path, models: list[str] = MODELS, versions: int = 4) -> None:
    for name in models:
        for seed in range(versions):
            publish_linear_model(root, name, 4, 3, seed=seed)


def settle() -> None:
    """Past the time a just-changed directory is not trusted to show its next change."""
    time.sleep(served.RACY_SECONDS + 0.2)


def stage_version(model_dir: Path, number: int, source: int = 1) -> Path:
    """A copy of version ``source`` named ``number``, made outside the integer namespace."""
    metadata, model_bytes = modelrepo.read_version(model_dir / str(source))
    metadata["version"] = number
    staging = model_dir / f".tmp-staged-{number}"
    staging.mkdir()
    (staging / modelrepo.MODEL_FILE).write_bytes(model_bytes)
    (staging / modelrepo.METADATA_FILE).write_text(json.dumps(metadata))
    return staging


def test_an_unchanged_model_keeps_its_state_and_every_change_is_seen(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    build(root)
    repo = ModelRepository(root)
    # Just built: a directory this fresh may still change with the same times, so it is
    # looked at in full again (a new state) until it is older than racy_seconds. However
    # long the build took, every directory counts as fresh here:
    repo.racy_seconds = float("inf")
    repo.scan()
    assert all(repo.models[m].versions == ["2", "3", "4"] for m in MODELS)
    before = dict(repo.models)
    repo.scan()
    assert all(repo.models[m] is not before[m] for m in MODELS)
    repo.racy_seconds = served.RACY_SECONDS
    settle()
    repo.scan()
    before = dict(repo.models)
    repo.scan()
    assert all(repo.models[m] is before[m] for m in MODELS), "unchanged, looked at in full"

    # A publish, right after a scan: seen at the next one.
    assert publish_linear_model(root, "m03", 4, 3, seed=9).version == 5
    repo.scan()
    assert repo.models["m03"].versions == ["3", "4", "5"]
    assert repo.get("m03").version == "5"
    assert all(repo.models[m] is before[m] for m in MODELS if m != "m03")
    # Retired: seen.
    modelrepo.retire_version(root / "m03", 5)
    repo.scan()
    assert repo.models["m03"].versions == ["2", "3", "4"]
    # traffic.json written in place (not renamed: the directory does not change) is seen.
    settle()
    repo.scan()
    (root / "m05" / POLICY_FILE).write_text(json.dumps(
        {"schema": 1, "aliases": {"production": 2}}))
    repo.scan()
    assert repo.get("m05").version == "2"
    settle()
    repo.scan()
    (root / "m05" / POLICY_FILE).write_text(json.dumps(
        {"schema": 1, "aliases": {"production": 3}}))
    repo.scan()
    assert repo.get("m05").version == "3"


def test_a_version_written_in_place_is_loaded_once_complete(tmp_path: Path) -> None:
    """Copied straight into its number (no staging, no rename): refused while incomplete, then
    loaded once its files are there, though the model's directory no longer changes."""
    root = tmp_path / "repository"
    build(root, ["m00"], versions=1)
    repo = ModelRepository(root)
    repo.scan()
    version = root / "m00" / "2"
    version.mkdir()
    settle()
    repo.scan()
    assert 2 in repo.models["m00"].broken and repo.get("m00").version == "1"
    metadata, model_bytes = modelrepo.read_version(root / "m00" / "1")
    metadata["version"] = 2
    (version / modelrepo.MODEL_FILE).write_bytes(model_bytes)
    (version / modelrepo.METADATA_FILE).write_text(json.dumps(metadata))
    repo.scan()
    assert repo.get("m00").version == "2" and not repo.models["m00"].broken


def test_a_loaded_version_edited_in_place_is_seen_by_a_full_scan(tmp_path: Path) -> None:
    """Versions are immutable; one edited in place anyway is noticed within FULL_SCAN_EVERY
    scans (30 s at the default poll), and refused."""
    root = tmp_path / "repository"
    build(root, ["m00"], versions=2)
    repo = ModelRepository(root)
    repo.scan()
    settle()
    (root / "m00" / "2" / modelrepo.MODEL_FILE).write_bytes(b"not an onnx graph")
    for _ in range(served.FULL_SCAN_EVERY):
        repo.scan()
    assert repo.get("m00").version == "1"
    assert "sha256" in repo.models["m00"].broken[2]


def _ready(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_ready(url: str, workers: int, timeout: float = 20) -> None:
    """Until ``url`` answers 200 ten times in a row (new connections: both workers)."""
    deadline, streak = time.monotonic() + timeout, 0
    while streak < 5 * workers:
        assert time.monotonic() < deadline, f"{url} not ready within {timeout} s"
        streak = streak + 1 if _ready(url) == 200 else 0
        time.sleep(0.01 if streak else 0.05)


def test_a_server_with_many_models_sees_publishes_and_in_place_copies(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    build(root, versions=3)
    server = start_server(root, tmp_path, workers=2, poll_seconds=0.2)
    try:
        settle()  # the models' directories are trusted now: polls keep their states
        assert publish_linear_model(root, "m07", 4, 3, seed=7).version == 4
        _wait_ready(f"{server.url}/v2/models/m07/versions/4/ready", 2)
        # A version copied in place, slowly: its directory first, its files seconds later.
        version = root / "m02" / "4"
        version.mkdir()
        time.sleep(served.RACY_SECONDS + 0.5)
        staged = stage_version(root / "m02", 4)
        for name in (modelrepo.MODEL_FILE, modelrepo.METADATA_FILE):
            shutil.copyfile(staged / name, version / name)
        _wait_ready(f"{server.url}/v2/models/m02/versions/4/ready", 2)
        assert _ready(f"{server.url}/v2/models/m02/versions/1/ready") == 404, "not kept"
    finally:
        assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log()

