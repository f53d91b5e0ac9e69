"""The training command end to end: publish, versions, gates, --dry-run, --if-empty, --help,
reserved names, the default Iris settings, the loss-curve picture and what /predict serves."""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

import modelrepo
from tests.support.models import train

OPTIONS = ["--data", "--label-column", "--delimiter", "--model-name", "--epochs", "--lr",
           "--seed", "--val-fraction", "--no-validation", "--standardize", "--no-standardize",
           "--log-every", "--min-accuracy", "--artifacts", "--if-empty", "--dry-run",
           "--features", "--ignore", "--impute", "--hidden", "--batch-size", "--class-weight",
           "--force", "--max-regression"]


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
    assert meta["training"]["standardize"] is True  # the Iris default
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
    assert train(repository, "--epochs", "300", "--max-regression", "1") == 0
    assert sorted(modelrepo.version_dirs(model_dir)) == [1, 6]
    assert json.loads((model_dir / "6" / "metadata.json").read_text())["version"] == 6


def png_text(png: bytes) -> dict[str, str]:
    """The tEXt chunks of a PNG (keyword -> text)."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    chunks, at = {}, 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at:at + 4])
        kind, data = png[at + 4:at + 8], png[at + 8:at + 8 + length]
        if kind == b"tEXt":
            key, _, value = data.partition(b"\0")
            chunks[key.decode("latin-1")] = value.decode("latin-1")
        at += 12 + length
    return chunks


def test_default_iris_model_trains_smoothly(iris_repository: Path) -> None:
    # Raw Iris features under SGD lr 0.1 made the loss rise every other epoch for ~200 epochs
    # and validation accuracy alternate 0.73/0.9; standardized (the Iris default) it does not.
    meta = json.loads((iris_repository / "iris" / "1" / "metadata.json").read_text())
    curve = meta["loss_curve"]
    rises = [h["epoch"] for h, before in zip(curve[1:], curve) if h["loss"] > before["loss"]]
    assert rises == [], f"the loss rose at epochs {rises[:10]}"
    accuracy = [h["validation_accuracy"] for h in curve]
    back_and_forth = [e for e in range(2, len(accuracy))
                      if accuracy[e] == accuracy[e - 2] != accuracy[e - 1]]
    assert len(back_and_forth) <= 3, back_and_forth  # one or two early steps, no alternation
    assert meta["training"]["standardization"]["std"] != [1.0] * 4


def test_loss_curve_title_says_train_and_validation_rows(iris_repository: Path) -> None:
    png = (iris_repository / "iris" / "1" / "loss_curve.png").read_bytes()
    assert png_text(png)["Title"] == ("iris: iris, 120 training + 30 validation rows, "
                                      "1000 epochs, lr 0.1, standardized")


def test_if_empty_does_nothing_when_a_version_exists(repository: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert train(repository, "--if-empty") == 0
    out = capsys.readouterr().out
    assert "already has 1 model: iris (version 1); nothing to do" in out
    assert "POST /predict serves model iris" in out
    assert sorted(modelrepo.version_dirs(repository / "iris")) == [1]


def test_if_empty_looks_at_every_model_not_only_this_one(
        iris_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The user's own model is there: `make run` (--if-empty) must not add the iris model.
    shutil.copytree(iris_repository / "iris", tmp_path / "flowers")
    shutil.copytree(tmp_path / "flowers" / "1", tmp_path / "flowers" / "4")
    (tmp_path / "empty").mkdir()  # a model directory without versions is nothing
    assert train(tmp_path, "--if-empty") == 0
    out = capsys.readouterr().out
    assert "already has 1 model: flowers (versions 1, 4); nothing to do" in out
    assert "POST /predict serves model flowers (the first model published" in out
    assert not (tmp_path / "iris").exists()


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
    assert out.endswith("POST /predict serves model flowers (the first model published; set "
                        "SOFTSERVE_DEFAULT_MODEL to choose)\n")
    version = tmp_path / "repo" / "flowers" / "1"
    meta = json.loads((version / "metadata.json").read_text())
    assert meta["data"]["source"] == str(csv)
    assert meta["training"]["standardize"] is True  # every dataset but toy, by default
    assert png_text((version / "loss_curve.png").read_bytes())["Title"].startswith(
        "flowers: flowers.csv, 120 training + 30 validation rows, 300 epochs")


def test_output_names_the_model_behind_predict(repository: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SOFTSERVE_DEFAULT_MODEL", raising=False)
    assert train(repository, "--data", "toy", "--epochs", "10") == 0
    assert capsys.readouterr().out.endswith(
        "POST /predict serves model iris (the first model published; set "
        "SOFTSERVE_DEFAULT_MODEL to choose); this one answers at POST /v1/models/toy:predict\n")
    monkeypatch.setenv("SOFTSERVE_DEFAULT_MODEL", "toy")
    assert train(repository, "--if-empty") == 0
    assert capsys.readouterr().out.endswith(
        "POST /predict serves model toy (SOFTSERVE_DEFAULT_MODEL as set for this command)\n")


def test_repository_defaults_to_the_environment_variable(tmp_path: Path) -> None:
    env = {**os.environ, "SOFTSERVE_MODEL_REPOSITORY": str(tmp_path / "from-env")}
    run = subprocess.run([sys.executable, "-m", "training", "--data", "toy", "--epochs", "10",
                          "--log-every", "5"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Epoch    5/10 Cost:" in run.stdout
    assert (tmp_path / "from-env" / "toy" / "1" / "model.onnx").is_file()
    # The tutorial's settings stay toy's defaults: no split, no standardization.
    meta = json.loads((tmp_path / "from-env" / "toy" / "1" / "metadata.json").read_text())
    assert {k: meta["training"][k] for k in ("lr", "seed", "val_fraction", "standardize")} == {
        "lr": 0.1, "seed": 1, "val_fraction": 0.0, "standardize": False}


def test_bad_model_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        train(tmp_path, "--data", "toy", "--model-name", "../escape")
    assert exc.value.code == 2


def test_reserved_model_names_are_refused_with_the_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        train(tmp_path, "--data", "toy", "--model-name", "stats")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "model name 'stats' is reserved: GET /v2/models/stats is the server's statistics " \
           "route" in err and "--model-name" in err
    csv = tmp_path / "stats.csv"  # the model would be named after the file
    csv.write_text("a,b,c,d,label\n1,2,3,4,x\n2,3,4,5,y\n3,4,5,6,z\n")
    with pytest.raises(SystemExit) as exc:
        train(tmp_path, "--data", str(csv))
    assert exc.value.code == 2
    assert "'stats' is reserved" in capsys.readouterr().err
    assert not (tmp_path / "stats").exists()
