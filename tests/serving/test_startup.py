"""What a user sees when the server starts: where it listens, and one line saying it is ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support import ROOT
from tests.support.net import free_port, send
from tests.support.server import GUNICORN_CONF, start_server


def test_listens_on_loopback_only_by_default_and_says_when_ready(iris_repository: Path,
                                                                  tmp_path: Path) -> None:
    """No SOFTSERVE_BIND: 127.0.0.1 and SOFTSERVE_PORT (the server has no authentication);
    once the workers serve, one line with the URL, the docs and a curl to try."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SOFTSERVE_BIND"}
    env.update(SOFTSERVE_MODEL_REPOSITORY=str(iris_repository), SOFTSERVE_PORT=str(port),
               SOFTSERVE_WORKERS="2")
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "serving:create_app()"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "softserve ready" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
        ready = text[text.index("softserve ready"):].splitlines()
        assert ready[0].startswith(f"softserve ready on http://127.0.0.1:{port} (2 workers; "
                                   "models: iris; POST /predict serves iris)"), ready
        assert f"http://127.0.0.1:{port}/docs" in ready[1]
        assert f"curl -s http://127.0.0.1:{port}/predict -d" in ready[2]
        assert text.count("softserve ready") == 1, text
        assert send(port, "GET", "/v2/health/ready").status == 200
        # Another loopback address reaches a server bound to 0.0.0.0, not one on 127.0.0.1.
        with socket.socket() as other:
            other.settimeout(5)
            assert other.connect_ex(("127.0.0.2", port)) != 0
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()


def test_another_wsgi_app_runs_under_the_same_configuration(tmp_path: Path) -> None:
    """The configuration's hooks expect nothing of the app: make bench serves its no-op app
    with exactly this gunicorn.conf.py (the ready line is softserve's own, so none here)."""
    server = start_server(None, tmp_path, app="bench.baselines.noop_wsgi:app")
    try:
        assert send(server.port, "GET", "/").status == 200
        assert "softserve ready" not in server.log()
    finally:
        assert server.stop() == 0, server.log()
