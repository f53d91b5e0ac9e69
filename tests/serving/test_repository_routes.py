"""What the server says about its repository: the model behind /predict, the index, and
answers that name settings, never filesystem paths."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from flask import Flask

import modelrepo
from serving import create_app

ROW = [5.1, 3.5, 1.4, 0.2]


def copy_as_new_model(repository: Path, source: str, name: str) -> None:
    """Publish ``source``'s version 1 as a new model, created now (after ``source``)."""
    metadata, model_bytes = modelrepo.read_version(repository / source / "1")
    created = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
    metadata["created_at"] = created.isoformat(timespec="seconds")
    modelrepo.publish_version(repository, name, model_bytes, metadata)


def predict(app: Flask, path: str = "/predict") -> tuple[int, dict]:
    response = app.test_client().post(path, data=json.dumps({"instances": [ROW]}))
    return response.status_code, response.get_json()


def test_a_new_model_never_takes_predict_from_the_served_one(repository: Path) -> None:
    app = create_app({"model_repository": repository, "poll_seconds": 0})
    assert predict(app)[1]["model_name"] == "iris"
    # "aaa" sorts before "iris", and it is published later: /predict must stay on iris.
    copy_as_new_model(repository, "iris", "aaa")
    app.extensions["softserve"].scan()
    assert sorted(app.extensions["softserve"].models) == ["aaa", "iris"]
    status, body = predict(app)
    assert status == 200, body
    assert body["model_name"] == "iris"
    assert app.test_client().get("/").get_json()["predict_model"] == "iris"
    # The new model is reachable by name.
    assert predict(app, "/v1/models/aaa:predict")[1]["model_name"] == "aaa"


def test_the_configured_default_model_wins(repository: Path) -> None:
    copy_as_new_model(repository, "iris", "aaa")
    app = create_app({"model_repository": repository, "poll_seconds": 0,
                      "default_model": "aaa"})
    assert predict(app)[1]["model_name"] == "aaa"


def test_the_first_published_model_serves_predict_after_a_restart(repository: Path) -> None:
    copy_as_new_model(repository, "iris", "aaa")
    app = create_app({"model_repository": repository, "poll_seconds": 0})
    assert predict(app)[1]["model_name"] == "iris"


def test_retiring_every_version_of_the_first_model_keeps_it_behind_predict(
        repository: Path) -> None:
    """Clients of /predict get a 503 for their model, never another model's answers."""
    copy_as_new_model(repository, "iris", "aaa")
    with modelrepo.model_lock(repository / "iris"):
        modelrepo.retire_version(repository / "iris", 1)
    app = create_app({"model_repository": repository, "poll_seconds": 0})
    status, body = predict(app)
    assert status == 503 and "iris" in body["error"], body


@pytest.fixture
def secret_repository(tmp_path: Path, iris_repository: Path) -> Path:
    """A repository whose path a client must never learn."""
    repository = tmp_path / "secret-location-8d3f"
    repository.mkdir()
    return repository


def test_no_answer_discloses_the_repository_path(secret_repository: Path,
                                                 iris_repository: Path) -> None:
    app = create_app({"model_repository": secret_repository, "poll_seconds": 0})
    client = app.test_client()
    shutil.copytree(iris_repository / "iris", secret_repository / "iris")
    (secret_repository / "iris" / "1" / "model.onnx").write_bytes(b"broken")
    (secret_repository / "wine").mkdir()
    (secret_repository / "wine" / "1").mkdir()  # a version directory with nothing in it
    answers = []
    for scanned in (False, True):  # empty, then broken models
        if scanned:
            app.extensions["softserve"].scan()
        answers += [
            client.post("/predict", data=json.dumps({"instances": [ROW]})),
            client.post("/v1/models/iris:predict", data=json.dumps({"instances": [ROW]})),
            client.post("/v2/models/wine/infer", data=b"{}"),
            client.get("/v2/health/ready"),
            client.get("/v1/models/iris"),
            client.get("/v2/models/iris/ready"),
            client.get("/v2/models/wine/versions/1/ready"),
            client.get("/v2/models/iris/config"),
            client.get("/v2/models/iris/versions/1/stats"),
            client.post("/v2/repository/index"),
            client.get("/"),
        ]
    for response in answers:
        text = response.get_data(as_text=True)
        assert "secret-location" not in text and str(secret_repository) not in text, text
    assert "SOFTSERVE_MODEL_REPOSITORY" in answers[0].get_json()["error"]


def test_repository_index_states(repository: Path) -> None:
    copy_as_new_model(repository, "iris", "aaa")
    copy_as_new_model(repository, "iris", "iris")  # iris version 2
    (repository / "aaa" / "1" / "model.onnx").write_bytes(b"broken")
    (repository / "empty").mkdir()
    app = create_app({"model_repository": repository, "poll_seconds": 0, "keep_versions": 1})
    index = app.test_client().post("/v2/repository/index").get_json()
    assert index[0]["name"] == "aaa" and index[0]["state"] == "UNAVAILABLE"
    assert index[0]["reason"].startswith("broken: model.onnx sha256")
    assert index[1] == {"name": "empty", "state": "UNAVAILABLE",
                        "reason": "no version directories"}
    assert index[2]["version"] == "1" and index[2]["state"] == "UNAVAILABLE"
    assert "SOFTSERVE_KEEP_VERSIONS" in index[2]["reason"]
    assert index[3] == {"name": "iris", "version": "2", "state": "READY", "reason": ""}
    ready = app.test_client().post("/v2/repository/index", data=b'{"ready": true}').get_json()
    assert ready == [index[3]]
