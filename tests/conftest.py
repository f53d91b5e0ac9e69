"""Shared fixtures: a real model trained once per session into a temporary repository."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from pathlib import Path

import pytest

# Every process the tests start inherits this: no onnxruntime telemetry from test runs.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from training.__main__ import main as train_main  # noqa: E402


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


# --- a real gunicorn on a free localhost port ------------------------------------------------


T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
GUNICORN_CONF = ROOT / "serving" / "gunicorn.conf.py"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def json(self) -> Any:
        return json.loads(self.body)


def send(port: int, method: str, path: str, body: bytes | None = None,
         headers: Mapping[str, str] | None = None) -> Reply:
    """One request to 127.0.0.1 on a fresh connection; http.client adds no Content-Type."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                     response.read())
    finally:
        conn.close()


def wait_until(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.1) -> T:
    """``check()``'s value once it stops raising AssertionError; its last error after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(repository: Path, log_dir: Path, *, workers: int = 2,
                 env: Mapping[str, str] | None = None, python: str = sys.executable,
                 ready_path: str = "/v2/health/live", timeout: float = 30) -> Server:
    """Start ``gunicorn -c serving/gunicorn.conf.py serving:create_app()`` and wait for it."""
    port = free_port()
    log_path = log_dir / f"gunicorn-{port}.log"
    full_env = {**os.environ, "SOFTSERVE_MODEL_REPOSITORY": str(repository),
                "SOFTSERVE_BIND": f"127.0.0.1:{port}", "SOFTSERVE_WORKERS": str(workers),
                "SOFTSERVE_POLL_SECONDS": "0.5", **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [python, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "serving:create_app()"],
            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", port, process, log_path)
    # One worker answering is not all of them: wait for every worker's start-up line too
    # (create_app logs it at INFO once its first repository scan is done).
    booted = int(full_env["SOFTSERVE_WORKERS"]) if full_env.get(
        "SOFTSERVE_LOG_LEVEL", "INFO").upper() in ("INFO", "DEBUG") else 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + ready_path, timeout=1):
                if server.log().count('"message":"serving ') >= booted:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"gunicorn not answering {ready_path} with {booted} workers booted "
                       f"within {timeout} s:\n{server.log()}")


@pytest.fixture(scope="session")
def server(iris_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real 2-worker gunicorn serving the session's iris repository (read-only)."""
    srv = start_server(iris_repository, tmp_path_factory.mktemp("logs"),
                       ready_path="/v2/health/ready")
    yield srv
    assert srv.stop() == 0, srv.log()
