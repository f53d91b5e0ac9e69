"""A real server process on a free localhost port: softserve's gunicorn command, or any other.

``start_server`` runs ``python -m gunicorn -c serving/gunicorn.conf.py serving:create_app()``
(or another app on the same command) and returns once it answers and every worker has booted;
``Server`` is the process, its log, its workers, and how to stop it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from tests.support import ROOT
from tests.support.net import free_port
from tests.support.processes import children, cmdline, cpu_seconds, kill_quietly, priority

GUNICORN_CONF = ROOT / "serving" / "gunicorn.conf.py"
SOFTSERVE_APP = "serving:create_app()"
# The line create_app logs (at INFO) in each worker once its first repository scan is done.
SERVING_LINE = '"message":"serving '
# The line gunicorn logs for each worker it starts, whatever the app.
BOOTING_LINE = "Booting worker with pid"


class Server:
    """A server process (a master and its worker processes) on 127.0.0.1:``port``, logging to
    ``log_path``. Started here; ``wait_ready`` waits for it, ``stop`` (or ``with``) ends it."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], port: int,
                 log_path: Path, *, workers: int = 1, name: str = "server",
                 boot_line: str | None = None, nice: int = 0) -> None:
        self.name = name
        self.command = list(command)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workers = workers
        self.log_path = log_path
        # Every worker logs this line once it has started; None: no such line to wait for.
        self.boot_line = boot_line
        self.ready_after: float | None = None  # seconds from process start to the first answer
        self._seen_workers: dict[int, bytes] = {}  # pid: command line
        self.started_at = time.monotonic()
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=dict(env), stdout=log,
                                            stderr=subprocess.STDOUT, preexec_fn=priority(nice))

    def __enter__(self) -> Server:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The master's children: its workers."""
        pids = children(self.process.pid)
        self._remember(pids)
        return pids

    def _remember(self, pids: Sequence[int]) -> None:
        for pid in pids:
            if pid not in self._seen_workers:
                self._seen_workers[pid] = cmdline(pid)

    def booted(self) -> bool:
        """Every worker has logged its boot line (True when there is none to wait for)."""
        return self.boot_line is None or self.log().count(self.boot_line) >= self.workers

    def worker_class(self) -> str:
        """The worker class gunicorn's master says it uses ("Using worker: ..."), else "?"."""
        found = [line.partition("Using worker: ")[2].split()
                 for line in self.log().splitlines() if "Using worker: " in line]
        return found[-1][0] if found and found[-1] else "?"

    def wait_ready(self, ready_path: str, timeout: float = 30, settle: bool = False) -> None:
        """Until ``ready_path`` answers 2xx, the master has all its workers and every one has
        booted; with ``settle``, also until the workers stop using CPU (the last one has
        finished importing and loading). Notes ``ready_after``, the cold start.

        Raises RuntimeError, with the log, if the process exits or is not ready in time
        (it is stopped then).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n"
                                   f"{self.log()}")
            try:
                with urllib.request.urlopen(self.url + ready_path, timeout=2):
                    pass
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.01)  # fine enough to time the cold start
                continue
            if self.ready_after is None:
                self.ready_after = time.monotonic() - self.started_at
            # One worker answering is not all of them: the others may still be loading.
            if len(self.worker_pids()) >= self.workers and self.booted():
                if settle:
                    self._wait_idle(deadline)
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not answering {ready_path} with {self.workers} workers "
                           f"booted within {timeout} s:\n{self.log()}")

    def _wait_idle(self, deadline: float) -> None:
        time.sleep(0.3)
        while time.monotonic() < deadline:
            before = cpu_seconds(self.worker_pids())
            time.sleep(0.3)
            if cpu_seconds(self.worker_pids()) - before < 0.02:
                return

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` s (and to any worker the master left
        behind); returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                for pid, line in self._seen_workers.items():
                    if line and cmdline(pid) == line:  # the same process, not a reused pid
                        kill_quietly(pid)
        return self.process.returncode


def gunicorn_command(app: str = SOFTSERVE_APP, extra_args: Sequence[str] = (),
                     python: str = sys.executable) -> list[str]:
    """softserve's gunicorn command line serving ``app``: ``-c serving/gunicorn.conf.py``."""
    return [python, "-m", "gunicorn", "-c", str(GUNICORN_CONF), *extra_args, app]


def gunicorn_env(repository: Path | None, port: int, workers: int,
                 env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the settings of a server on 127.0.0.1:``port``;
    ``env`` last, so it wins."""
    out = {**os.environ, "SOFTSERVE_BIND": f"127.0.0.1:{port}",
           "SOFTSERVE_WORKERS": str(workers)}
    if repository is not None:
        out["SOFTSERVE_MODEL_REPOSITORY"] = str(repository)
    return {**out, **(env or {})}


def start_server(repository: Path | None, log_dir: Path, *, workers: int = 2,
                 env: Mapping[str, str] | None = None, python: str = sys.executable,
                 ready_path: str = "/v2/health/live", timeout: float = 30,
                 poll_seconds: float | None = 0.5, app: str = SOFTSERVE_APP,
                 extra_args: Sequence[str] = (), name: str = "gunicorn", nice: int = 0,
                 settle: bool = False) -> Server:
    """Start ``gunicorn -c serving/gunicorn.conf.py serving:create_app()`` (or ``app``) and
    wait for it: ``ready_path`` answering and every worker booted (see ``Server.wait_ready``).

    ``poll_seconds`` sets SOFTSERVE_POLL_SECONDS (None: the server's default); ``env`` goes last
    and overrides anything. The log is ``log_dir/<name>-<port>.log``.
    Raises RuntimeError, with the log, if the server exits or is not ready within ``timeout``.
    """
    port = free_port()
    settings = {} if poll_seconds is None else {"SOFTSERVE_POLL_SECONDS": f"{poll_seconds:g}"}
    full_env = gunicorn_env(repository, port, workers, {**settings, **(env or {})})
    boot_line = BOOTING_LINE
    if app == SOFTSERVE_APP:
        # create_app's own line means the app is built, not just the process started; it is
        # logged at INFO, so with a quieter log there is only the worker count to go by.
        quiet = full_env.get("SOFTSERVE_LOG_LEVEL", "INFO").upper() not in ("INFO", "DEBUG")
        boot_line = None if quiet else SERVING_LINE
    server = Server(gunicorn_command(app, extra_args, python), full_env, port,
                    log_dir / f"{name}-{port}.log", workers=int(full_env["SOFTSERVE_WORKERS"]),
                    name=name, boot_line=boot_line, nice=nice)
    server.wait_ready(ready_path, timeout, settle=settle)
    return server
