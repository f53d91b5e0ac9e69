"""Shared fixtures: a real model trained once per session into a temporary repository, a real
gunicorn serving it, and the app in-process (``app -> client``).

The harness they are built from (servers, requests, processes, training) is ``tests/support``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from serving import create_app
from tests.support.models import publish_shapes, train
from tests.support.s3 import S3Server, start_s3
from tests.support.server import Server, start_server

# Every process the tests start inherits this: no onnxruntime telemetry from test runs.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


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


@pytest.fixture(scope="session")
def server(iris_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real 2-worker gunicorn serving the session's iris repository (read-only)."""
    srv = start_server(iris_repository, tmp_path_factory.mktemp("logs"),
                       ready_path="/v2/health/ready")
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="session")
def shapes_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository of linear models of many shapes (tests/support/models.py SHAPES), built
    without torch. Treat as read-only."""
    repository = tmp_path_factory.mktemp("shapes")
    publish_shapes(repository)
    return repository


@pytest.fixture(scope="session")
def shapes_server(shapes_repository: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real gunicorn serving every shape side by side; POST /predict serves "wine"."""
    srv = start_server(shapes_repository, tmp_path_factory.mktemp("shape-logs"), workers=1,
                       ready_path="/v2/health/ready", env={"SOFTSERVE_DEFAULT_MODEL": "wine"})
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def app(iris_repository: Path) -> Flask:
    """The app in-process over the session's iris repository, not watching it."""
    return create_app({"model_repository": iris_repository, "poll_seconds": 0})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS, tests/support/s3.py) on 127.0.0.1 for the session."""
    server = start_s3(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()
