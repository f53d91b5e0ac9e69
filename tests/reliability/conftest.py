"""Shared pieces of the reliability tests: real gunicorn servers, raw HTTP, process figures.

Every test here talks to a real ``gunicorn -c serving/gunicorn.conf.py`` on 127.0.0.1 (through
``tests.support.server.start_server``) and stops by itself: loops are bounded in count, waits have
generous deadlines and no assertion depends on how fast the machine is.

Budgets: the fuzzers run ``budget(default)`` examples each, a small fixed-seed default under
``make test``; ``SOFTSERVE_FUZZ_EXAMPLES=N`` (``make fuzz``) raises every budget to N.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT
from tests.support.net import wait_until
from tests.support.processes import process_state
from tests.support.server import Server, start_server

HOOKS = Path(__file__).resolve().parent / "hooks"
FUZZ_ENV = "SOFTSERVE_FUZZ_EXAMPLES"
ROW = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
V2_ROW = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                 "data": [5.1, 3.5, 1.4, 0.2]}]}).encode()

# The worker classes every load and fault test runs under: softserve's own (the default in
# serving/gunicorn.conf.py: one event loop, keep-alive, whole requests only), and gunicorn's sync
# worker, which a user can still pick with --worker-class.
WORKER_CLASSES: dict[str, dict[str, str]] = {
    "softserve": {},
    "sync": {"GUNICORN_CMD_ARGS": "--worker-class sync"},
}


def budget(default: int) -> int:
    """How many examples a fuzzer runs: ``default``, or SOFTSERVE_FUZZ_EXAMPLES when set."""
    raw = os.environ.get(FUZZ_ENV, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise pytest.UsageError(f"{FUZZ_ENV} must be a positive integer, not {raw!r}")
    return int(raw)


# --- counting fuzz cases for the summary ------------------------------------------------------

FUZZ_COUNTS: dict[str, int] = {}


def count_case(name: str, n: int = 1) -> None:
    FUZZ_COUNTS[name] = FUZZ_COUNTS.get(name, 0) + n


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FUZZ_COUNTS:
        terminalreporter.section("fuzz cases run")
        for name, n in sorted(FUZZ_COUNTS.items()):
            terminalreporter.write_line(f"{name}: {n}")
        total = sum(n for name, n in FUZZ_COUNTS.items() if "of which" not in name)
        terminalreporter.write_line(f"total: {total} "
                                    f"({FUZZ_ENV}={os.environ.get(FUZZ_ENV) or 'unset'})")


# --- HTTP ---------------------------------------------------------------------------------------


def call(url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
         method: str | None = None, timeout: float = 30) -> tuple[int, bytes, dict[str, str]]:
    """One request with urllib: (status, body, headers), HTTP errors included."""
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


@dataclass
class RawResponse:
    status: int | None  # None: no status line came back
    headers: dict[str, str]
    body: bytes
    error: str | None  # what went wrong on the socket, if anything

    def json(self) -> Any:
        return json.loads(self.body)


def parse_response(data: bytes, error: str | None = None) -> RawResponse:
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", lines[0]) if sep else None
    if match is None:
        return RawResponse(None, {}, data, error or "no HTTP response")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    length = headers.get("content-length")
    if length is not None and length.isdigit() and len(body) > int(length):
        body = body[: int(length)]
    return RawResponse(int(match.group(1)), headers, body, error)


def raw_exchange(port: int, data: bytes, *, timeout: float = 30,
                 half_close: bool = True) -> RawResponse:
    """Send ``data`` as is on a new connection and read until the server closes it.

    ``half_close`` shuts our sending side after ``data``, so a server waiting for more body
    bytes sees the end of the stream.
    """
    chunks: list[bytes] = []
    error = None
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError as exc:  # the server may answer (413) and close before reading it all
            error = f"{type(exc).__name__}: {exc}"
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError as exc:
            error = error or f"{type(exc).__name__}: {exc}"
    return parse_response(b"".join(chunks), error)


def http_request(method: str, path: str, body: bytes = b"",
                 headers: Mapping[str, str] | None = None) -> bytes:
    """An HTTP/1.1 request as bytes, with Content-Length, closing the connection after it."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}",
             "Connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def assert_json_error(status: int, body: bytes, headers: Mapping[str, str]) -> None:
    """A 4xx/5xx answer of the app: JSON ``{"error": "<non-empty text>"}``."""
    content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    assert content_type.startswith("application/json"), (status, content_type, body[:200])
    doc = json.loads(body)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], doc


# --- processes ----------------------------------------------------------------------------------


def worker_pids(server: Server) -> list[int]:
    return server.worker_pids()


def kill_worker(server: Server, pid: int, timeout: float = 60) -> None:
    """SIGKILL one worker and wait until the master has reaped it."""
    os.kill(pid, signal.SIGKILL)

    def gone() -> None:
        assert pid not in worker_pids(server) and process_state(pid) in (None, "Z")
    wait_until(gone, timeout)


def wait_for_workers(server: Server, n: int, timeout: float = 60) -> list[int]:
    """The worker pids once there are ``n`` of them and each has built its app (logged its
    "serving ..." line: its first scan of the repository is done)."""
    def check() -> list[int]:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.process.returncode}:\n"
                               + server.log()[-4000:])
        pids = worker_pids(server)
        assert len(pids) == n, pids
        log = server.log()
        for pid in pids:
            assert f'"pid":{pid},"message":"serving ' in log, f"worker {pid} still booting"
        return pids
    return wait_until(check, timeout)


def log_size(server: Server) -> int:
    """Where the server's log ends now: pass it to ``log_problems(since=...)``."""
    return server.log_path.stat().st_size


def log_problems(server: Server, since: int = 0) -> list[str]:
    """Lines of a server log that mean a crash, a hang or a bug: tracebacks, 500s, timeouts;
    only from byte offset ``since`` on (see ``log_size``)."""
    bad = re.compile(r"Traceback|WORKER TIMEOUT|Worker failed to boot|unhandled error|"
                     r"Worker \(pid:\d+\) was sent|\"status\":500")
    with open(server.log_path, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    return [line for line in text.splitlines() if bad.search(line)]


def start(repository: Path, log_dir: Path, *, worker_class: str = "softserve", workers: int = 2,
          env: Mapping[str, str] | None = None, hooks: bool = False,
          drop_dac: bool = False, ready_path: str = "/v2/health/ready",
          timeout: float = 60) -> Server:
    """``start_server`` with a worker class, optional instrumentation and, as root, optionally
    without the capabilities that let root read what file permissions forbid (so that a
    ``chmod 000`` repository is really unreadable to the server)."""
    full_env = {**WORKER_CLASSES[worker_class], **(env or {})}
    args = [WORKER_CLASSES[worker_class].get("GUNICORN_CMD_ARGS"),
            (env or {}).get("GUNICORN_CMD_ARGS")]
    if all(args):
        full_env["GUNICORN_CMD_ARGS"] = " ".join(args)  # type: ignore[arg-type]
    if hooks:
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(HOOKS), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    python = sys.executable
    if drop_dac and os.geteuid() == 0:
        wrapper = log_dir / "python-without-dac"
        wrapper.write_text(
            "#!/bin/sh\n"
            "exec setpriv --inh-caps=-all --bounding-set=-dac_override,-dac_read_search "
            f"-- {sys.executable} \"$@\"\n")
        wrapper.chmod(0o755)
        python = str(wrapper)
    return start_server(repository, log_dir, workers=workers, env=full_env, python=python,
                        ready_path=ready_path, timeout=timeout)


@pytest.fixture
def private_repository(iris_repository: Path) -> Iterator[Path]:
    """A writable copy of the trained repository in a world-readable place (unlike tmp_path,
    whose parents are 0700), for servers that must not read it as root."""
    parent = Path(tempfile.mkdtemp(prefix="softserve-reliability-"))
    parent.chmod(0o755)
    target = parent / "repository"
    shutil.copytree(iris_repository, target)
    yield target
    for path in [parent, *parent.rglob("*")]:  # undo any chmod 000 a test left behind
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(parent, ignore_errors=True)


def stop_checked(server: Server) -> None:
    """Stop a server and require a clean exit (0) and a log free of crashes."""
    code = server.stop(timeout=60)
    problems = log_problems(server)
    assert code == 0 and not problems, (code, problems[:10])


# --- the instrumented server the fuzzers and the security tests share --------------------------


AUDIT_MARKER = "zz-traversal-marker"


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` with its mode, size and mtime: any write changes it."""
    out = {}
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@dataclass
class Audited:
    """A 2-worker server whose processes log every repository access, unpickling and spawn,
    and any file access whose path holds AUDIT_MARKER."""

    server: Server
    repository: Path
    audit_log: Path
    snapshot: dict[str, tuple[int, int, int]]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]


@pytest.fixture(scope="session")
def audited(iris_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audited]:
    work = tmp_path_factory.mktemp("audited")
    repository = work / "repository"
    shutil.copytree(iris_repository, repository)
    audit_log = work / "audit.jsonl"
    snapshot = tree_snapshot(repository)
    server = start(repository, work, hooks=True,
                   env={"SOFTSERVE_TEST_AUDIT_ROOT": str(repository),
                        "SOFTSERVE_TEST_AUDIT_LOG": str(audit_log),
                        "SOFTSERVE_TEST_AUDIT_MARKER": AUDIT_MARKER})
    wait_for_workers(server, 2)
    yield Audited(server, repository, audit_log, snapshot)
    stop_checked(server)


@pytest.fixture(scope="module")
def same_workers_and_clean_log(audited: Audited) -> Iterator[None]:
    """For a module's tests: no worker of the audited server crashed or was restarted, and its
    log holds no traceback or 5xx. Use with ``pytest.mark.usefixtures``."""
    before = worker_pids(audited.server)
    yield
    assert worker_pids(audited.server) == before, "a worker crashed or was restarted"
    assert not log_problems(audited.server), log_problems(audited.server)[:5]


# --- Prometheus text ----------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')


def metrics(server: Server) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """/metrics parsed: metric name -> {sorted label pairs: value}."""
    status, body, _ = call(server.url + "/metrics")
    assert status == 200, body[:200]
    parsed: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, line
        name, labels, value = match.groups()
        key = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels or "")))
        parsed.setdefault(name, {})[key] = float(value)
    return parsed


def metric_total(parsed: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str,
                 **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for k, v in parsed.get(name, {}).items()
               if all(dict(k).get(a) == b for a, b in labels.items()))


# --- load ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    client: int
    started: float  # time.monotonic() when the request began (before connecting)
    ended: float
    status: int | None  # None: no HTTP answer
    error: str | None  # the exception's type and text, for no answer


class Load:
    """``clients`` threads sending ``body`` to ``path`` one request per connection, until
    ``stop()``, ``max_requests`` in all, or ``deadline`` seconds — whichever comes first."""

    def __init__(self, port: int, clients: int, *, path: str = "/predict", body: bytes = ROW,
                 max_requests: int = 100_000, deadline: float = 300) -> None:
        self.port, self.path, self.body = port, path, body
        self.max_requests = max_requests
        self.deadline = time.monotonic() + deadline
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join(120)
        return self.outcomes

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def _run(self, client: int) -> None:
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            with self._lock:
                if len(self.outcomes) >= self.max_requests:
                    return
            started = time.monotonic()
            status, error = None, None
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                conn.request("POST", self.path, self.body, {"Connection": "close"})
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
            finally:
                conn.close()
            with self._lock:
                self.outcomes.append(Outcome(client, started, time.monotonic(), status, error))
