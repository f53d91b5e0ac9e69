"""The training command end to end: publish, versions, gates, --dry-run, --if-empty, --help."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

import modelrepo
from tests.support.models import train

OPTIONS = ["--data", "--label-column", "--model-name", "--epochs", "--lr", "--seed",
           "--val-fraction", "--standardize", "--log-every", "--min-accuracy", "--artifacts",
           "--if-empty", "--dry-run"]


def test_help_documents_every_option() -> None:
    out = subprocess.run([sys.executable, "-m", "training", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for option in OPTIONS:
        assert option in out
    assert "SOFTSERVE_MODEL_REPOSITORY" in out


def test_published_version_follows_the_contract(iris_repository: Path) -> None:
    model_dir = iris_repository / "iris"
    version = model_dir / "1"
    assert sorted(p.name for p in version.iterdir()) == ["loss_curve.png", "metadata.json",
                                                        "model.onnx"]
    assert not list(model_dir.glob(".tmp-*"))
    assert stat.S_IMODE(version.stat().st_mode) == 0o755
    for f in version.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    assert (version / "loss_curve.png").read_bytes().startswith(b"\x89PNG")
    assert 'platform: "onnxruntime_onnx"' in (model_dir / "config.pbtxt").read_text()

    meta, model_bytes = modelrepo.read_version(version)
    assert meta["name"] == "iris" and meta["version"] == 1
    assert meta["data"]["source"] == "iris" and meta["data"]["rows"] == 150
    assert meta["data"]["validation_rows"] == 30 and len(meta["data"]["sha256"]) == 64
    assert meta["training"]["epochs"] == 1000 and meta["training"]["lr"] == 0.1
    assert len(meta["loss_curve"]) == 1001
    assert meta["metrics"]["validation"]["accuracy"] >= 0.9
    assert len(meta["metrics"]["confusion_matrix"]["matrix"]) == 3
    assert meta["parity"]["passed"] and meta["parity"]["batch_sizes"] == [1, 3, 7, 1000, 100000]
    assert meta["parity"]["rows"]["data"]["max_abs_diff"] < 1e-5
    assert set(meta["libraries"]) >= {"torch", "onnx", "onnxruntime", "numpy", "python"}
    assert meta["model"]["opset"] >= 17

    # One self-contained file, valid under the full checker, with the contract's signature.
    assert not list(version.glob("*.data"))
    proto = onnx.load_from_string(model_bytes)
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in session.get_inputs()] == [("input", "tensor(float)")]
    assert [(o.name, o.type) for o in session.get_outputs()] == [
        ("probabilities", "tensor(float)"), ("class", "tensor(int64)")]
    assert session.get_inputs()[0].shape[1] == 4


def test_next_version_counts_retired_numbers(repository: Path) -> None:
    model_dir = repository / "iris"
    (model_dir / "retired-5").mkdir()
    assert train(repository, "--epochs", "300") == 0
    assert sorted(modelrepo.version_dirs(model_dir)) == [1, 6]
    assert json.loads((model_dir / "6" / "metadata.json").read_text())["version"] == 6


def test_if_empty_does_nothing_when_a_version_exists(repository: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert train(repository, "--if-empty") == 0
    assert "nothing to do" in capsys.readouterr().out
    assert sorted(modelrepo.version_dirs(repository / "iris")) == [1]


def test_dry_run_publishes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(tmp_path, "--data", "toy", "--epochs", "100", "--dry-run") == 0
    assert "Dry run" in capsys.readouterr().out
    assert not (tmp_path / "toy").exists()


def test_accuracy_gate_refuses_and_publishes_nothing(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert train(tmp_path, "--epochs", "1", "--min-accuracy", "0.95") == 1
    assert "below --min-accuracy 0.95" in capsys.readouterr().err
    assert not (tmp_path / "iris").exists() or not modelrepo.version_dirs(tmp_path / "iris")


def test_csv_model_is_named_after_the_file_and_ends_with_figures(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "flowers.csv"
    csv.write_text((Path(__file__).parents[2] / "training" / "data" / "iris.csv").read_text())
    assert train(tmp_path / "repo", "--data", str(csv), "--epochs", "300", "--seed", "3") == 0
    out = capsys.readouterr().out
    assert "Published" in out and "flowers" in out and "version 1" in out
    assert "Validation accuracy" in out and "Parity" in out and "near ties" in out
    meta = json.loads((tmp_path / "repo" / "flowers" / "1" / "metadata.json").read_text())
    assert meta["data"]["source"] == str(csv)


def test_repository_defaults_to_the_environment_variable(tmp_path: Path) -> None:
    env = {**os.environ, "SOFTSERVE_MODEL_REPOSITORY": str(tmp_path / "from-env")}
    run = subprocess.run([sys.executable, "-m", "training", "--data", "toy", "--epochs", "10",
                          "--log-every", "5"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Epoch    5/10 Cost:" in run.stdout
    assert (tmp_path / "from-env" / "toy" / "1" / "model.onnx").is_file()


def test_bad_model_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        train(tmp_path, "--data", "toy", "--model-name", "../escape")
    assert exc.value.code == 2
