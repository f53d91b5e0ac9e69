"""The repository contract: atomic, race-free publishing; list and rollback without torch."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import modelrepo
from modelrepo.__main__ import main as repo_main
from tests.support import ROOT


def _publish_many(repository: str, source: str, count: int, queue) -> None:
    metadata, model_bytes = modelrepo.read_version(Path(source))
    for _ in range(count):
        queue.put(modelrepo.publish_version(Path(repository), "race", model_bytes,
                                            dict(metadata)).version)


def test_racing_publishers_never_share_a_version(iris_repository: Path, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_publish_many,
                           args=(str(tmp_path), str(iris_repository / "iris" / "1"), 10, queue))
               for _ in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    published = sorted(queue.get(timeout=5) for _ in range(60))
    assert published == list(range(1, 61))
    model_dir = tmp_path / "race"
    assert sorted(modelrepo.version_dirs(model_dir)) == list(range(1, 61))
    assert not list(model_dir.glob(".tmp-*"))
    for number, path in modelrepo.version_dirs(model_dir).items():
        meta, _ = modelrepo.read_version(path)  # every one complete and consistent
        assert meta["version"] == number


def test_racing_trainings_publish_distinct_complete_versions(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "training", "--data", "toy", "--epochs", "200",
               "--log-every", "0", "--artifacts", str(tmp_path), "--max-regression", "1"]
    runs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for _ in range(2)]
    outputs = [r.communicate(timeout=120)[0] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    assert sorted(modelrepo.version_dirs(tmp_path / "toy")) == [1, 2]
    for path in modelrepo.version_dirs(tmp_path / "toy").values():
        modelrepo.read_version(path)
    assert not list((tmp_path / "toy").glob(".tmp-*"))


def test_stale_temporaries_of_dead_writers_are_cleaned(iris_repository: Path,
                                                        tmp_path: Path) -> None:
    repository = tmp_path / "r"
    shutil.copytree(iris_repository, repository)
    model_dir = repository / "iris"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (model_dir / f".tmp-{dead}-abc").mkdir()
    (model_dir / f".tmp-{dead}-abc" / "model.onnx").write_bytes(b"half")
    live = model_dir / f".tmp-{os.getpid()}-xyz"
    live.mkdir()
    meta, model_bytes = modelrepo.read_version(model_dir / "1")
    assert modelrepo.publish_version(repository, "iris", model_bytes, meta).version == 2
    assert not (model_dir / f".tmp-{dead}-abc").exists()
    assert live.exists(), "a temporary of a live writer is left alone"


def test_metadata_that_breaks_the_contract_is_never_published(iris_repository: Path,
                                                              tmp_path: Path) -> None:
    meta, model_bytes = modelrepo.read_version(iris_repository / "iris" / "1")
    with pytest.raises(modelrepo.BrokenVersion, match="tensor signature"):
        modelrepo.publish_version(tmp_path, "iris", model_bytes, {**meta, "inputs": []})
    assert not modelrepo.version_dirs(tmp_path / "iris")
    assert not list((tmp_path / "iris").glob(".tmp-*"))


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", "", "x" * 65, "sp ace"])
def test_model_names_cannot_reach_outside_the_repository(name: str, tmp_path: Path) -> None:
    with pytest.raises(modelrepo.RepositoryError):
        modelrepo.publish_version(tmp_path, name, b"", {})


@pytest.fixture
def three_versions(iris_repository: Path, tmp_path: Path) -> Path:
    repository = tmp_path / "r"
    shutil.copytree(iris_repository, repository)
    meta, model_bytes = modelrepo.read_version(repository / "iris" / "1")
    for _ in range(2):
        modelrepo.publish_version(repository, "iris", model_bytes, meta)
    return repository


def test_rollback_retires_the_live_version(three_versions: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert repo_main(["--artifacts", str(three_versions), "rollback", "iris"]) == 0
    model_dir = three_versions / "iris"
    assert sorted(modelrepo.version_dirs(model_dir)) == [1, 2]
    assert modelrepo.retired_versions(model_dir) == [3]
    assert "version 2 is live" in capsys.readouterr().out
    # Numbers are never reused: the next publish is 4, not 3.
    meta, model_bytes = modelrepo.read_version(model_dir / "1")
    assert modelrepo.publish_version(three_versions, "iris", model_bytes, meta).version == 4


def test_rollback_to_a_named_version_and_list(three_versions: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert repo_main(["rollback", "iris", "--to", "1", "--artifacts", str(three_versions)]) == 0
    assert sorted(modelrepo.version_dirs(three_versions / "iris")) == [1]
    assert repo_main(["--artifacts", str(three_versions), "list"]) == 0
    out = capsys.readouterr().out
    assert "   1  live" in out and "   3  retired" in out and "   2  retired" in out
    assert "val acc" in out


def test_rollback_refuses_what_it_cannot_do(three_versions: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    repo = ["--artifacts", str(three_versions)]
    assert repo_main([*repo, "rollback", "iris", "--to", "9"]) == 1
    assert "version 9 is missing" in capsys.readouterr().err
    assert repo_main([*repo, "rollback", "nope"]) == 2
    assert repo_main([*repo, "rollback", "iris", "--to", "1"]) == 0
    assert repo_main([*repo, "rollback", "iris"]) == 1
    assert "only valid version" in capsys.readouterr().err
    assert repo_main([*repo, "rollback", "../etc"]) == 2


def test_rollback_skips_a_broken_version(three_versions: Path) -> None:
    (three_versions / "iris" / "2" / "model.onnx").write_bytes(b"corrupt")
    assert repo_main(["--artifacts", str(three_versions), "rollback", "iris"]) == 0
    assert sorted(modelrepo.version_dirs(three_versions / "iris")) == [1]


def test_repository_commands_run_without_torch(three_versions: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no torch in serving')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent),
           "SOFTSERVE_MODEL_REPOSITORY": str(three_versions)}
    for args in (["--help"], ["list", "iris"], ["rollback", "iris"]):
        run = subprocess.run([sys.executable, "-m", "modelrepo", *args], cwd=ROOT, env=env,
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    assert json.loads((three_versions / "iris" / "2" / "metadata.json").read_text())["version"] == 2
    assert sorted(modelrepo.version_dirs(three_versions / "iris")) == [1, 2]
