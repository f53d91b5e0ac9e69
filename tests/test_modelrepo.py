"""The repository contract: atomic, race-free publishing; list, rollback and restore without
torch; reserved names; the model behind /predict."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import modelrepo
from modelrepo.__main__ import main as repo_main
from tests.support import ROOT
from tests.support.models import linear_metadata, linear_model_bytes, publish_linear_model


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


def test_the_signature_is_per_shape_within_the_limits() -> None:
    assert modelrepo.signature(13, 2) == (
        [{"name": "input", "datatype": "FP32", "shape": [-1, 13]}],
        [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
         {"name": "class", "datatype": "INT64", "shape": [-1]}])
    assert modelrepo.MAX_FEATURES >= 4096 and modelrepo.MAX_CLASSES >= 1000
    modelrepo.signature(modelrepo.MAX_FEATURES, modelrepo.MAX_CLASSES)
    for features, classes in [(0, 3), (4, 1), (modelrepo.MAX_FEATURES + 1, 3),
                              (4, modelrepo.MAX_CLASSES + 1), (True, 3), (4.0, 3), (4, "3")]:
        with pytest.raises(ValueError, match="a model has"):
            modelrepo.signature(features, classes)  # type: ignore[arg-type]


def _broken(**changes: object) -> dict[str, object]:
    return {**linear_metadata(13, 2), **changes}


@pytest.mark.parametrize(("metadata", "reason"), [
    (_broken(inputs=modelrepo.signature(4, 2)[0]), "tensor signature differs from the contract "
                                                    "for 13 features and 2 classes"),
    (_broken(outputs=modelrepo.signature(13, 3)[1]), "tensor signature"),
    (_broken(feature_names=[f"f{i}" for i in range(12)]), "tensor signature"),
    (_broken(feature_names=[]), "feature_names must be 1 to 65536 strings, got 0"),
    (_broken(feature_names=[*range(13)]), "feature_names must be 1 to 65536 strings"),
    (_broken(feature_names=["a"] * 13), "feature_names must be unique, 'a' repeats"),
    (_broken(class_labels=["only"]), "class_labels must be 2 to 10000 strings, got 1"),
    (_broken(class_labels=["yes", "yes"]), "class_labels must be unique, 'yes' repeats"),
    (_broken(class_labels=[0, 1]), "class_labels must be 2 to 10000 strings"),
    (_broken(missing_values="drop"), "'missing_values' must be 'refuse' or 'impute'"),
    (_broken(missing_values=None), "'missing_values' must be"),
])
def test_metadata_of_a_shape_is_checked(metadata: dict[str, object], reason: str,
                                        tmp_path: Path) -> None:
    with pytest.raises(modelrepo.BrokenVersion) as info:
        modelrepo.publish_version(tmp_path, "m", linear_model_bytes(13, 2), metadata)
    assert reason in info.value.reason
    assert not modelrepo.version_dirs(tmp_path / "m")


def test_versions_of_any_shape_are_published_and_read(tmp_path: Path) -> None:
    for features, classes in [(1, 2), (13, 3), (784, 10), (64, 100)]:
        published = publish_linear_model(tmp_path, f"m{features}x{classes}", features, classes)
        metadata, _ = modelrepo.read_version(published.path)
        assert (metadata["inputs"], metadata["outputs"]) == modelrepo.signature(features, classes)
        assert not modelrepo.imputes(metadata)
    metadata = linear_metadata(4, 3)
    del metadata["missing_values"]  # versions published before the key: they refuse
    published = modelrepo.publish_version(tmp_path, "old", linear_model_bytes(4, 3), metadata)
    assert not modelrepo.imputes(modelrepo.read_version(published.path)[0])
    published = publish_linear_model(tmp_path, "imputes", 5, 2, impute=True)
    assert modelrepo.imputes(modelrepo.read_version(published.path)[0])


def _dims(model_dir: Path) -> list[str]:
    return re.findall(r"dims: \[ ([^\]]*) \]", (model_dir / "config.pbtxt").read_text())


def test_config_pbtxt_follows_the_shape_of_what_is_published(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    publish_linear_model(tmp_path, "m", 13, 2)
    assert _dims(model_dir) == ["-1, 13", "-1, 2", "-1"]
    inode = (model_dir / "config.pbtxt").stat().st_ino
    publish_linear_model(tmp_path, "m", 13, 2, seed=1)  # the same shape: left as it is
    assert (model_dir / "config.pbtxt").stat().st_ino == inode
    publish_linear_model(tmp_path, "m", 20, 5)  # another shape: rewritten whole, renamed
    assert _dims(model_dir) == ["-1, 20", "-1, 5", "-1"]
    assert (model_dir / "config.pbtxt").stat().st_ino != inode
    assert not list(model_dir.glob(".tmp-*"))
    # A rollback retires version 3: config.pbtxt describes version 2 again; a restore, 3's.
    assert repo_main(["--artifacts", str(tmp_path), "rollback", "m"]) == 0
    assert _dims(model_dir) == ["-1, 13", "-1, 2", "-1"]
    assert modelrepo.restore_version(tmp_path, "m", 3).version == 4
    assert _dims(model_dir) == ["-1, 20", "-1, 5", "-1"]


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", "", "x" * 65, "sp ace"])
def test_model_names_cannot_reach_outside_the_repository(name: str, tmp_path: Path) -> None:
    with pytest.raises(modelrepo.RepositoryError):
        modelrepo.publish_version(tmp_path, name, b"", {})


def test_reserved_names_are_refused_at_publish_with_the_reason(iris_repository: Path,
                                                                tmp_path: Path) -> None:
    assert modelrepo.RESERVED_MODEL_NAMES == {"stats"}
    meta, model_bytes = modelrepo.read_version(iris_repository / "iris" / "1")
    with pytest.raises(modelrepo.RepositoryError,
                       match=r"'stats' is reserved: GET /v2/models/stats is the server's "
                             r"statistics route.*choose another name"):
        modelrepo.publish_version(tmp_path, "stats", model_bytes, meta)
    assert not (tmp_path / "stats").exists()
    # Case matters in URLs: "Stats" has its own route; readers still accept a reserved name.
    assert modelrepo.publish_version(tmp_path, "Stats", model_bytes, meta).version == 1
    assert modelrepo.check_model_name("stats", publishing=False) == "stats"


def test_a_hand_made_reserved_model_dir_is_still_listed(iris_repository: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(iris_repository / "iris", tmp_path / "stats")
    assert modelrepo.is_model_name("stats")
    assert modelrepo.model_names(tmp_path) == ["stats"]  # what the server's scanner lists
    assert repo_main(["--artifacts", str(tmp_path), "list"]) == 0
    assert "stats:\n     1  live" in capsys.readouterr().out


def test_deeply_nested_metadata_is_a_broken_version(iris_repository: Path,
                                                    tmp_path: Path) -> None:
    version = tmp_path / "iris" / "1"
    shutil.copytree(iris_repository / "iris" / "1", version)
    (version / "metadata.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(modelrepo.BrokenVersion, match="not valid JSON"):
        modelrepo.read_version(version)


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


def test_restore_brings_a_retired_version_back_under_the_next_number(
        three_versions: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = ["--artifacts", str(three_versions)]
    model_dir = three_versions / "iris"
    shutil.copy(model_dir / "1" / "loss_curve.png", model_dir / "3")  # files beyond the two
    assert repo_main([*repo, "rollback", "iris", "--to", "1"]) == 0
    retired_files = sorted(p.name for p in (model_dir / "retired-3").iterdir())
    capsys.readouterr()

    assert repo_main([*repo, "restore", "iris", "3"]) == 0
    out = capsys.readouterr().out
    assert "restored iris version 3 (retired-3) as version 4" in out
    assert "iris version 4 is live" in out
    assert sorted(modelrepo.version_dirs(model_dir)) == [1, 4]
    assert modelrepo.retired_versions(model_dir) == [2, 3]  # the retired copy stays
    assert sorted(p.name for p in (model_dir / "4").iterdir()) == retired_files
    meta, model_bytes = modelrepo.read_version(model_dir / "4")  # sha256 verified
    old, old_bytes = modelrepo.read_version(model_dir / "retired-3")
    assert meta["version"] == 4 and old["version"] == 3
    assert meta["restored_from"]["version"] == 3 and meta["restored_from"]["restored_at"]
    assert model_bytes == old_bytes and meta["created_at"] == old["created_at"]
    assert (model_dir / "4" / "loss_curve.png").read_bytes() == \
        (model_dir / "retired-3" / "loss_curve.png").read_bytes()
    assert not list(model_dir.glob(".tmp-*"))
    # Numbers are still never reused, and list says where a version came from.
    assert modelrepo.publish_version(three_versions, "iris", model_bytes, old).version == 5
    assert repo_main([*repo, "list", "iris"]) == 0
    assert "(restored from 3)" in capsys.readouterr().out


def test_restore_refuses_what_it_cannot_do(three_versions: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    repo = ["--artifacts", str(three_versions)]
    model_dir = three_versions / "iris"
    assert repo_main([*repo, "restore", "iris", "2"]) == 1
    assert "version 2 is in service, not retired" in capsys.readouterr().err
    assert repo_main([*repo, "restore", "iris", "9"]) == 1
    assert "version 9 is missing" in capsys.readouterr().err
    assert repo_main([*repo, "restore", "nope", "1"]) == 2
    assert repo_main([*repo, "restore", "../etc", "1"]) == 2
    assert repo_main([*repo, "rollback", "iris"]) == 0
    (model_dir / "retired-3" / "model.onnx").write_bytes(b"corrupt")
    capsys.readouterr()
    assert repo_main([*repo, "restore", "iris", "3"]) == 1
    assert "does not match metadata" in capsys.readouterr().err
    assert sorted(modelrepo.version_dirs(model_dir)) == [1, 2]
    assert not list(model_dir.glob(".tmp-*"))
    with pytest.raises(modelrepo.RepositoryError, match="not a retired version"):
        modelrepo.restore_version(three_versions, "iris", 7)


def _version(repository: Path, model: str, directory: str, created_at: object) -> None:
    path = repository / model / directory
    path.mkdir(parents=True)
    (path / "metadata.json").write_text(json.dumps({"created_at": created_at}))


def test_predict_model_is_the_configured_one_else_the_first_published(tmp_path: Path) -> None:
    assert modelrepo.predict_model(tmp_path / "missing", None) is None
    assert modelrepo.predict_model(tmp_path, None) is None
    assert modelrepo.predict_model(tmp_path, "chosen") == "chosen"
    _version(tmp_path, "zebra", "1", "2024-01-01T10:00:00+00:00")
    _version(tmp_path, "zebra", "2", "2024-03-01T10:00:00+00:00")
    assert modelrepo.predict_model(tmp_path, None) == "zebra"
    # An older model whose first versions were retired still counts as published first.
    _version(tmp_path, "apple", "retired-1", "2023-12-31T23:00:00+00:00")
    _version(tmp_path, "apple", "3", "2024-06-01T00:00:00+00:00")
    assert modelrepo.predict_model(tmp_path, None) == "apple"
    assert modelrepo.predict_model(tmp_path, "") == "apple"  # an empty setting is no setting
    assert modelrepo.predict_model(tmp_path, "zebra") == "zebra"
    # Offsets are compared as times, not as text: 00:30+01:00 is 23:30 UTC the day before.
    _version(tmp_path, "mango", "1", "2024-01-01T00:30:00+01:00")
    assert modelrepo.predict_model(tmp_path, None) == "apple"
    _version(tmp_path, "kiwi", "1", "2023-12-31T23:30:00+01:00")  # 22:30 UTC
    assert modelrepo.predict_model(tmp_path, None) == "kiwi"
    _version(tmp_path, "fig", "1", "2023-12-31T22:30:00+00:00")  # the same instant: by name
    assert modelrepo.predict_model(tmp_path, None) == "fig"


@pytest.mark.parametrize("broken", ["not json", "[1, 2]", '{"created_at": 5}', "{}",
                                    '{"created_at": "yesterday"}', None])
def test_predict_model_skips_versions_it_cannot_read(broken: str | None, tmp_path: Path) -> None:
    _version(tmp_path, "later", "1", "2024-02-01T00:00:00+00:00")
    _version(tmp_path, "early", "2", "2024-01-15T00:00:00+00:00")
    first = tmp_path / "early" / "1"
    first.mkdir()
    if broken is None:
        os.mkfifo(first / "metadata.json")  # a reader must not block on it
    else:
        (first / "metadata.json").write_text(broken)
    assert modelrepo.predict_model(tmp_path, None) == "early"  # by its version 2
    shutil.rmtree(tmp_path / "early" / "2")
    assert modelrepo.predict_model(tmp_path, None) == "later"  # nothing of early is readable
    (tmp_path / "not a model").mkdir()
    (tmp_path / "file").write_text("x")
    assert modelrepo.predict_model(tmp_path, None) == "later"


def test_repository_commands_run_without_torch(three_versions: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no torch in serving')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent),
           "SOFTSERVE_MODEL_REPOSITORY": str(three_versions)}
    for args in (["--help"], ["list", "iris"], ["rollback", "iris"], ["restore", "--help"],
                 ["restore", "iris", "3"]):
        run = subprocess.run([sys.executable, "-m", "modelrepo", *args], cwd=ROOT, env=env,
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    assert json.loads((three_versions / "iris" / "2" / "metadata.json").read_text())["version"] == 2
    assert sorted(modelrepo.version_dirs(three_versions / "iris")) == [1, 2, 4]


def test_the_contract_document_is_complete_and_links_only_inside_the_project() -> None:
    # The one committed file of artifacts/ (its versions are git-ignored): the contract's text.
    readme = ROOT / "artifacts" / "README.md"
    text = readme.read_text()
    links = re.findall(r"\]\(([^)#]+)", text)
    assert not [t for t in links if "://" in t], "the contract links to no outside page"
    for target in {*links, *re.findall(r"\.\./[\w./-]+", text)}:  # links and mentioned paths
        resolved = (readme.parent / target).resolve()
        assert resolved.is_relative_to(ROOT) and resolved.exists(), f"{target}: not in the project"
    for key in modelrepo.REQUIRED_METADATA:
        assert f"`{key}`" in text, key
    for name in modelrepo.RESERVED_MODEL_NAMES:
        assert f"`{name}`" in text, name
    for spec in [*modelrepo.signature(4, 3)[0], *modelrepo.signature(4, 3)[1]]:  # iris's
        assert json.dumps(spec) in text, spec
    for words in ("[-1, F]", "[-1, K]", f"{modelrepo.MAX_FEATURES}", f"{modelrepo.MAX_CLASSES}",
                  "`missing_values`", '"refuse"', '"impute"', "config.pbtxt"):
        assert words in text, words
    for command in ("rollback MODEL", "restore MODEL N", "SOFTSERVE_DEFAULT_MODEL"):
        assert command in text
