"""Load benchmark of the real server: softserve under gunicorn, a no-op app, a FastAPI baseline.

Trains an iris model into a temporary repository (never ./artifacts) and starts three servers on
free 127.0.0.1 ports, each with its own log:

- softserve: ``gunicorn -c serving/gunicorn.conf.py "serving:create_app()"``, the defaults a user
  gets (SOFTSERVE_WORKERS=2, metrics and access log on);
- the no-op ceiling: ``bench/baselines/noop_wsgi.py``, a bare WSGI app, under exactly the same
  gunicorn command (the same ``-c``, SOFTSERVE_WORKERS and ``--gunicorn-args``, so the same worker
  class);
- the baseline: ``bench/baselines/fastapi_onnx.py``, the same model behind FastAPI + uvicorn +
  onnxruntime with 2 workers (``pip install -e '.[bench]'``).

Then wrk runs once per scenario, with the same threads, connections, duration and request bodies
for every server: the no-op app with the single-row /predict request, softserve's own
``/v2/health/live``, single-row and 1000-row ``/predict``, V2 JSON and V2 binary ``/infer``,
the baseline right after softserve on each scenario it supports (/predict, V2 JSON). A
concurrency sweep follows: single-row /predict and V2 JSON at 1, 4, 16 and 64 connections on
softserve and the baseline. Writes docs/benchmarks.md (the issue 7 targets, met or not, and the
tables) and docs/benchmarks.png (req/s and p99 against connections). A benchmark, not a test:
``make bench`` runs it, ``make test`` does not.

    .venv/bin/python bench/run.py --help
    make bench                                 # everything, 10 s per scenario, 5 s per sweep point
    BENCH_SECONDS=3 make bench                 # quicker, noisier
    .venv/bin/python bench/run.py --no-docs --scenarios single --no-sweep \\
        --gunicorn-args="--worker-class gthread --threads 4"

Each scenario's exact request is sent once to each server first and the answer checked (status
200, the expected number of rows; softserve and the baseline must agree on the classes), so a
wrong payload cannot be benchmarked as a fast error. Exits 1 if a wrk run saw a response with
status >= 400 or a socket error (after writing the report, which lists them), 2 for a bad option
or a missing tool or package.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LUA_SCRIPT = ROOT / "bench" / "wrk.lua"
GUNICORN_CONF = ROOT / "serving" / "gunicorn.conf.py"
IRIS_CSV = ROOT / "training" / "data" / "iris.csv"
DOCS = ROOT / "docs"
MODEL = "iris"
BATCH_ROWS = 1000
SOFTSERVE_APP = "serving:create_app()"
NOOP_APP = "bench.baselines.noop_wsgi:app"
BASELINE_APP = "bench.baselines.fastapi_onnx:app"
NOISY = 0.15  # cores used by other programs during a run above which its req/s is suspect
HEADER_LENGTH = "Inference-Header-Content-Length"

# The targets of issue 7, all measured within one run.
TARGET_OF_NOOP = 0.85  # single-row /predict and V2 JSON req/s ÷ the no-op app's
TARGET_OF_BASELINE = 1.3  # single-row /predict and V2 JSON req/s ÷ the FastAPI baseline's
TARGET_P99_MS = 5.0  # single-row p99 ...
TARGET_P99_CONNECTIONS = 16  # ... at this many connections
TARGET_COLD_START_S = 1.0
TARGET_RSS_BYTES = 80_000_000  # per serving worker with a model loaded: 80 MB (decimal)
TARGET_ROWS_PER_S = {f"v2-json-{BATCH_ROWS}": 1_000_000, f"predict-{BATCH_ROWS}": 500_000,
                     f"v2-binary-{BATCH_ROWS}": 2_000_000}
SINGLE_ROW_TARGETS = ("predict-1", "v2-json-1")
# The scenarios the baseline app answers (it has no binary V2 codec).
BASELINE_SCENARIOS = ("predict-1", "v2-json-1", f"predict-{BATCH_ROWS}", f"v2-json-{BATCH_ROWS}")
SWEEP_CONNECTIONS = (1, 4, 16, 64)
SERVER_TITLES = {"softserve": "softserve", "noop": "no-op WSGI app",
                 "baseline": "FastAPI baseline"}


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------- requests


def iris_rows(n: int) -> list[list[float]]:
    """``n`` feature rows of the bundled iris data, cycled in file order."""
    with open(IRIS_CSV, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        rows = [[float(v) for v in line[:4]] for line in reader if line]
    return [rows[i % len(rows)] for i in range(n)]


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


Check = Callable[[dict[str, str], bytes], None]


@dataclass
class Scenario:
    """One wrk run: a fixed request, and how to tell its answer is the right one."""

    name: str
    title: str
    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    rows: int  # rows per request (0: not an inference)
    check: Check
    server: str = "softserve"  # which server answers it: softserve or noop
    # The predicted classes in an answer, to compare softserve's with the baseline's.
    classes: Callable[[dict[str, str], bytes], list[int]] | None = None


def _check_live(headers: dict[str, str], body: bytes) -> None:
    assert json.loads(body) == {"live": True}, body[:200]


def _check_noop(headers: dict[str, str], body: bytes) -> None:
    assert json.loads(body) == {"ok": True}, body[:200]


def _predict_classes(headers: dict[str, str], body: bytes) -> list[int]:
    return [p["class"] for p in json.loads(body)["predictions"]]


def _v2_json_classes(headers: dict[str, str], body: bytes) -> list[int]:
    return next(o["data"] for o in json.loads(body)["outputs"] if o["name"] == "class")


def _check_predict(rows: int) -> Check:
    def check(headers: dict[str, str], body: bytes) -> None:
        doc = json.loads(body)
        assert len(doc["predictions"]) == rows, f"{len(doc['predictions'])} predictions"
        assert len(doc["predictions"][0]["probabilities"]) == 3
    return check


def _check_v2_json(rows: int) -> Check:
    def check(headers: dict[str, str], body: bytes) -> None:
        outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
        assert outputs["probabilities"]["shape"] == [rows, 3], outputs["probabilities"]["shape"]
        assert len(outputs["probabilities"]["data"]) == 3 * rows
        assert len(outputs["class"]["data"]) == rows
    return check


def _check_v2_binary(rows: int) -> Check:
    def check(headers: dict[str, str], body: bytes) -> None:
        length = int(headers[HEADER_LENGTH.lower()])
        outputs = {o["name"]: o for o in json.loads(body[:length])["outputs"]}
        sizes = {name: o["parameters"]["binary_data_size"] for name, o in outputs.items()}
        assert sizes == {"probabilities": 12 * rows, "class": 8 * rows}, sizes
        assert len(body) - length == 20 * rows, f"{len(body) - length} binary bytes"
    return check


def v2_binary_body(rows: list[list[float]]) -> tuple[bytes, dict[str, str]]:
    """A V2 request with binary input and binary outputs, as tritonclient builds it."""
    n = len(rows)
    raw = struct.pack(f"<{4 * n}f", *(v for row in rows for v in row))
    header = _json({
        "inputs": [{"name": "input", "shape": [n, 4], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                    {"name": "class", "parameters": {"binary_data": True}}],
    })
    return header + raw, {"Content-Type": "application/octet-stream",
                          HEADER_LENGTH: str(len(header))}


SCENARIO_ORDER = ["noop", "live", "predict-1", "v2-json-1", "v2-binary-1",
                  f"predict-{BATCH_ROWS}", f"v2-json-{BATCH_ROWS}", f"v2-binary-{BATCH_ROWS}"]


def scenarios() -> list[Scenario]:
    """Every scenario, in report order; the first two are the ceilings."""
    json_headers = {"Content-Type": "application/json"}
    out = [Scenario("live", "GET /v2/health/live", "GET", "/v2/health/live", b"", {}, 0,
                    _check_live)]
    for n, suffix in ((1, "1"), (BATCH_ROWS, str(BATCH_ROWS))):
        rows = iris_rows(n)
        label = "single row" if n == 1 else f"{n} rows"
        predict_body = _json({"instances": rows})
        if n == 1:
            out.append(Scenario("noop", "POST /predict, single-row body, to a no-op",
                                "POST", "/predict", predict_body, json_headers, 0, _check_noop,
                                server="noop"))
        out.append(Scenario(f"predict-{suffix}", f"POST /predict, {label}", "POST", "/predict",
                            predict_body, json_headers, n, _check_predict(n),
                            classes=_predict_classes))
        out.append(Scenario(
            f"v2-json-{suffix}", f"V2 JSON infer, {label}", "POST", f"/v2/models/{MODEL}/infer",
            _json({"inputs": [{"name": "input", "shape": [n, 4], "datatype": "FP32",
                               "data": [v for row in rows for v in row]}]}),
            json_headers, n, _check_v2_json(n), classes=_v2_json_classes))
        body, headers = v2_binary_body(rows)
        out.append(Scenario(f"v2-binary-{suffix}", f"V2 binary infer, {label}", "POST",
                            f"/v2/models/{MODEL}/infer", body, headers, n, _check_v2_binary(n)))
    return sorted(out, key=lambda s: SCENARIO_ORDER.index(s.name))


SHORT_NAMES = {
    "noop": "no-op app",
    "live": "health/live",
    "predict-1": "/predict, 1 row",
    "v2-json-1": "V2 JSON, 1 row",
    "v2-binary-1": "V2 binary, 1 row",
    f"predict-{BATCH_ROWS}": f"/predict, {BATCH_ROWS} rows",
    f"v2-json-{BATCH_ROWS}": f"V2 JSON, {BATCH_ROWS} rows",
    f"v2-binary-{BATCH_ROWS}": f"V2 binary, {BATCH_ROWS} rows",
}

SCENARIO_GROUPS = {
    "all": None,
    "single": ["noop", "live", "predict-1", "v2-json-1", "v2-binary-1"],
    "batch": ["live", f"predict-{BATCH_ROWS}", f"v2-json-{BATCH_ROWS}", f"v2-binary-{BATCH_ROWS}"],
}


def select_scenarios(spec: str) -> list[Scenario]:
    """Scenarios named by ``spec``: a group (all, single, batch) or a comma-separated list."""
    every = scenarios()
    names = SCENARIO_GROUPS.get(spec, [n.strip() for n in spec.split(",") if n.strip()])
    if names is None:
        return every
    known = {s.name for s in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}: choose from "
                         f"{', '.join(SCENARIO_GROUPS)} or {', '.join(sorted(known))}")
    return [s for s in every if s.name in names]


# ---------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ppid_and_cpu(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+system CPU seconds) of a process, from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks


def children(pid: int) -> list[int]:
    """Pids of the direct children of ``pid`` (gunicorn's workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _ppid_and_cpu(int(entry))
            if info and info[0] == pid:
                found.append(int(entry))
    return sorted(found)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


def workers_cpu(pids: Sequence[int]) -> float:
    return sum((info[1] for info in map(_ppid_and_cpu, pids) if info), 0.0)


def _priority(nice: int) -> Callable[[], None] | None:
    """A preexec_fn giving a child process (and its children) the scheduling priority ``nice``."""
    if nice == 0:
        return None
    return lambda: os.setpriority(os.PRIO_PROCESS, 0, nice)


class Server:
    """A server process (a master and its worker processes) on a free localhost port."""

    ready_path = "/v2/health/live"

    def __init__(self, name: str, command: Sequence[str], env: dict[str, str], port: int,
                 workers: int, log_path: Path, nice: int = 0) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workers = workers
        self.log_path = log_path
        self.command = list(command)
        self._seen_workers: dict[int, bytes] = {}  # pid: command line
        self.ready_after: float | None = None  # seconds from process start to the first ready
        self.started_at = time.monotonic()
        with open(log_path, "wb") as f:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=f,
                                            stderr=subprocess.STDOUT,
                                            preexec_fn=_priority(nice))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        pids = children(self.process.pid)
        self._remember(pids)
        return pids

    def _remember(self, pids: Sequence[int]) -> None:
        for pid in pids:
            if pid not in self._seen_workers:
                self._seen_workers[pid] = _cmdline(pid)

    def _workers_booted(self) -> bool:
        return True

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait for the ready path to answer and every worker to be up and idle.

        Raises RuntimeError if the server exits or is not ready in time.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n"
                                   f"{self.log()[-5000:]}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2):
                    self.ready_after = time.monotonic() - self.started_at
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.01)  # fine enough to time the cold start
                continue
            # One worker answered; the others may still be loading their model.
            while time.monotonic() < deadline:
                if len(self.worker_pids()) >= self.workers and self._workers_booted():
                    self._wait_idle(deadline)
                    return
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout} s:\n{self.log()[-5000:]}")

    def _wait_idle(self, deadline: float) -> None:
        """Until the workers stop using CPU: the last one has finished importing and loading."""
        time.sleep(0.3)
        while time.monotonic() < deadline:
            before = workers_cpu(self.worker_pids())
            time.sleep(0.3)
            if workers_cpu(self.worker_pids()) - before < 0.02:
                return

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                for pid, cmdline in self._seen_workers.items():  # what the master left behind
                    if cmdline and _cmdline(pid) == cmdline:
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGKILL)
        return self.process.returncode


def gunicorn_command(app: str, extra_args: Sequence[str], python: str = sys.executable
                     ) -> list[str]:
    """softserve's gunicorn command line, serving ``app``."""
    gunicorn = Path(python).parent / "gunicorn"
    command = [str(gunicorn)] if gunicorn.exists() else [python, "-m", "gunicorn"]
    return [*command, "-c", str(GUNICORN_CONF.relative_to(ROOT)), *extra_args, app]


def gunicorn_env(repository: Path | None, workers: int, port: int) -> dict[str, str]:
    env = {**os.environ, "SOFTSERVE_BIND": f"127.0.0.1:{port}",
           "SOFTSERVE_WORKERS": str(workers)}
    if repository is not None:
        env["SOFTSERVE_MODEL_REPOSITORY"] = str(repository)
    return env


class GunicornServer(Server):
    """A real gunicorn master with its workers, with softserve's gunicorn configuration."""

    ready_path = "/v2/health/ready"

    def __init__(self, repository: Path, workers: int, extra_args: Sequence[str],
                 log_path: Path, python: str = sys.executable, nice: int = 0,
                 app: str = SOFTSERVE_APP, name: str = "softserve") -> None:
        port = free_port()
        super().__init__(name, gunicorn_command(app, extra_args, python),
                         gunicorn_env(repository, workers, port), port, workers, log_path, nice)

    def _workers_booted(self) -> bool:
        return len(re.findall(r"Booting worker with pid", self.log())) >= self.workers

    def worker_class(self) -> str:
        """The worker class gunicorn's master says it uses ("Using worker: ...")."""
        found = re.findall(r"Using worker: (\S+)", self.log())
        return found[-1] if found else "?"


class UvicornServer(Server):
    """The FastAPI baseline: uvicorn with ``workers`` worker processes."""

    def __init__(self, version_dir: Path, workers: int, log_path: Path, nice: int = 0,
                 python: str = sys.executable) -> None:
        port = free_port()
        command = [python, "-m", "uvicorn", BASELINE_APP, "--host", "127.0.0.1", "--port",
                   str(port), "--workers", str(workers), "--log-level", "warning"]
        # ORT_DISABLE_TELEMETRY as softserve's gunicorn config sets it: no lookups, no slow exit.
        env = {"ORT_DISABLE_TELEMETRY": "1", **os.environ, "BASELINE_MODEL": str(version_dir)}
        super().__init__("baseline", command, env, port, workers, log_path, nice)

    def worker_pids(self) -> list[int]:
        # uvicorn spawns its workers with multiprocessing, which adds a resource tracker.
        pids = [pid for pid in children(self.process.pid)
                if b"resource_tracker" not in _cmdline(pid)]
        self._remember(pids)
        return pids


@contextlib.contextmanager
def running_server(repository: Path, workers: int, extra_args: Sequence[str],
                   log_path: Path, nice: int = 0, app: str = SOFTSERVE_APP,
                   name: str = "softserve") -> Iterator[GunicornServer]:
    """A gunicorn server with softserve's configuration, ready; stopped on the way out."""
    server = GunicornServer(repository, workers, extra_args, log_path, nice=nice, app=app,
                            name=name)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_baseline(version_dir: Path, workers: int, log_path: Path,
                     nice: int = 0) -> Iterator[UvicornServer]:
    server = UvicornServer(version_dir, workers, log_path, nice=nice)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def gunicorn_settings(extra_args: Sequence[str], workers: int, tmp: Path) -> dict[str, str]:
    """gunicorn's fully resolved settings for softserve's command line (``--print-config``).

    Resolved with the no-op app, so nothing heavy is imported. Raises RuntimeError.
    """
    port = free_port()
    # The config makes a metrics directory unless told one; give it a throwaway one here.
    env = {**gunicorn_env(None, workers, port), "SOFTSERVE_METRICS_DIR": str(tmp / "metrics")}
    command = gunicorn_command(NOOP_APP, [*extra_args, "--print-config"])
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"gunicorn --print-config failed ({done.returncode}): "
                           f"{shlex.join(command)}\n{done.stdout}\n{done.stderr}")
    settings = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            settings[key.strip()] = value.strip()
    return settings


def send(url: str, scenario: Scenario) -> tuple[int, dict[str, str], bytes]:
    """Send a scenario's request once: (status, lower-cased headers, body)."""
    request = urllib.request.Request(url + scenario.path, method=scenario.method,
                                     data=scenario.body if scenario.method != "GET" else None,
                                     headers=scenario.headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return (response.status, {k.lower(): v for k, v in response.headers.items()},
                    response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def check_scenario(url: str, scenario: Scenario) -> list[int] | None:
    """Send the scenario's request once; return the predicted classes if it has a reader.

    Raises RuntimeError unless the answer is 200 with the expected shape.
    """
    status, headers, body = send(url, scenario)
    if status != 200:
        raise RuntimeError(f"{scenario.name}: {scenario.method} {url}{scenario.path} answered "
                           f"{status}: {body[:300]!r}")
    try:
        scenario.check(headers, body)
        return scenario.classes(headers, body) if scenario.classes else None
    except (AssertionError, KeyError, ValueError, TypeError, StopIteration) as exc:
        raise RuntimeError(f"{scenario.name}: unexpected answer from {url} ({exc!r}): "
                           f"{body[:300]!r}") from None


# -------------------------------------------------------------------------------------- wrk


@dataclass
class Result:
    scenario: str
    title: str
    rows_per_request: int
    seconds: float
    requests: int
    requests_per_s: float
    rows_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int  # wrk's errors.status: responses with a status >= 400
    socket_errors: dict[str, int]
    server_cpu_us_per_request: float  # the workers' user+system CPU time per request
    wrk_cpu_us_per_request: float
    other_cpu_cores: float  # CPU used meanwhile by everything but the workers and wrk
    runs_requests_per_s: list[int] = field(default_factory=list)  # every run, with --repeat
    server: str = "softserve"  # softserve, noop or baseline
    threads: int = 0  # wrk's
    connections: int = 0

    @property
    def clean(self) -> bool:
        return self.non_2xx == 0 and not any(self.socket_errors.values())

    @property
    def busy(self) -> bool:
        return self.other_cpu_cores >= NOISY


@dataclass
class Load:
    """wrk's settings for one run."""

    seconds: float
    threads: int
    connections: int


def run_wrk(wrk: str, url: str, scenario: Scenario, seconds: float, threads: int,
            connections: int, body_file: Path, nice: int = 0) -> dict[str, Any]:
    """One wrk run; returns the JSON its done() printed. Raises RuntimeError if it failed."""
    body_file.write_bytes(scenario.body)
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
               "--timeout", "10s", "-s", str(LUA_SCRIPT), url + scenario.path, "--",
               scenario.method, str(body_file) if scenario.body else "-",
               *(f"{k}: {v}" for k, v in scenario.headers.items())]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=_priority(nice))
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {shlex.join(command)}\n"
                           f"{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1].removeprefix("BENCH_JSON "))


def machine_busy() -> float:
    """CPU seconds every process on the machine has used since boot (from /proc/stat)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    # user nice system idle iowait irq softirq steal ...: user, nice, system and steal. The
    # (soft)irq time is left out: most of it is the loopback traffic of the benchmark itself.
    user, nice, system, _, _, _, _, steal = values[:8]
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(limit: float, threshold: float = NOISY) -> float:
    """Wait (up to ``limit`` s) until other processes use < ``threshold`` of one core.

    Returns the load, in cores, seen last. The machine may be shared (tests, builds): a run
    started while something else is busy measures that, not the server.
    """
    deadline = time.monotonic() + limit
    while True:
        before, t0 = machine_busy(), time.monotonic()
        time.sleep(0.5)
        load = (machine_busy() - before) / (time.monotonic() - t0)
        if load < threshold or time.monotonic() >= deadline:
            return load


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def measure_once(server: Server, scenario: Scenario, load: Load, args: argparse.Namespace,
                 body_file: Path) -> Result:
    if args.quiet_wait > 0:
        other = wait_for_quiet(args.quiet_wait)
        if other >= NOISY:
            log(f"{server.name} {scenario.name}: other processes still use {other:.2f} cores; "
                "measuring anyway")
    pids = server.worker_pids()
    cpu_before, wrk_before, busy_before = workers_cpu(pids), children_cpu(), machine_busy()
    raw = run_wrk(args.wrk, server.url, scenario, load.seconds, load.threads, load.connections,
                  body_file, args.nice)
    cpu, wrk_cpu = workers_cpu(pids) - cpu_before, children_cpu() - wrk_before
    busy = machine_busy() - busy_before
    seconds = raw["duration_us"] / 1e6
    requests = int(raw["requests"])
    rps = requests / seconds
    lat = raw["latency_us"]
    errors = raw["errors"]
    return Result(
        scenario=scenario.name, title=scenario.title, rows_per_request=scenario.rows,
        seconds=round(seconds, 2), requests=requests, requests_per_s=rps,
        rows_per_s=rps * scenario.rows, p50_ms=lat["p50"] / 1000, p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000, max_ms=lat["max"] / 1000, non_2xx=int(errors["status"]),
        socket_errors={k: int(errors[k]) for k in ("connect", "read", "write", "timeout")},
        server_cpu_us_per_request=cpu / max(requests, 1) * 1e6,
        wrk_cpu_us_per_request=wrk_cpu / max(requests, 1) * 1e6,
        other_cpu_cores=max(0.0, busy - cpu - wrk_cpu) / seconds,
        server=server.name, threads=load.threads, connections=load.connections,
    )


def measure(server: Server, scenario: Scenario, load: Load, args: argparse.Namespace,
            body_file: Path) -> Result:
    """Check the scenario, warm up, then the best (highest req/s) of ``args.repeat`` runs.

    Another program can only slow a run down, so on a shared machine the best run is the
    nearest to the server's own capacity. Errors of every run are added to the one kept.
    """
    check_scenario(server.url, scenario)
    if args.warmup > 0:
        run_wrk(args.wrk, server.url, scenario, args.warmup, load.threads, load.connections,
                body_file, args.nice)
    runs = [measure_once(server, scenario, load, args, body_file) for _ in range(args.repeat)]
    best = max(runs, key=lambda r: r.requests_per_s)
    best.runs_requests_per_s = [round(r.requests_per_s) for r in runs]
    best.non_2xx = sum(r.non_2xx for r in runs)
    best.socket_errors = {k: sum(r.socket_errors[k] for r in runs) for k in best.socket_errors}
    return best


# ----------------------------------------------------------------------------------- report


@dataclass
class Report:
    started: str
    machine: dict[str, str]
    settings: dict[str, Any]
    command: str
    results: list[Result] = field(default_factory=list)
    memory: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # server: workers
    sweep: list[Result] = field(default_factory=list)
    cold_start_s: float | None = None  # softserve: process start to /v2/health/ready answering

    def result(self, name: str, server: str | None = None) -> Result | None:
        server = server or ("noop" if name == "noop" else "softserve")
        return next((r for r in self.results if r.scenario == name and r.server == server),
                    None)

    def sweep_result(self, name: str, server: str, connections: int) -> Result | None:
        return next((r for r in self.sweep if r.scenario == name and r.server == server
                     and r.connections == connections), None)

    def p99_result(self, name: str) -> Result | None:
        """softserve's run at the p99 target's connections: the sweep's, else the main run's."""
        found = self.sweep_result(name, "softserve", TARGET_P99_CONNECTIONS)
        main = self.result(name)
        if found is None and main is not None and main.connections == TARGET_P99_CONNECTIONS:
            found = main
        return found

    def peak_worker_bytes(self, server: str = "softserve") -> int | None:
        workers = self.memory.get(server) or []
        if not workers:
            return None
        return max(max(w["peak_kib"], w["end_kib"]) for w in workers) * 1024


@dataclass
class Ratio:
    """How ``a`` compares with ``b`` in throughput: by req/s, and by server CPU per request."""

    a: Result
    b: Result

    @property
    def rate(self) -> float:
        return self.a.requests_per_s / self.b.requests_per_s if self.b.requests_per_s else 0.0

    @property
    def cpu(self) -> float:
        a, b = self.a.server_cpu_us_per_request, self.b.server_cpu_us_per_request
        return b / a if a else 0.0

    @property
    def quiet(self) -> bool:
        return not self.a.busy and not self.b.busy

    @property
    def value(self) -> float:
        """The ratio the targets are stated in: of request rates."""
        return self.rate

    def text(self) -> str:
        a, b = self.a, self.b
        text = (f"{self.rate:.2f} ({_fmt(a.requests_per_s)} vs {_fmt(b.requests_per_s)} req/s; "
                f"by server CPU per request {self.cpu:.2f})")
        if not self.quiet:
            text += (f", not reliable: other programs used {a.other_cpu_cores:.2f} and "
                     f"{b.other_cpu_cores:.2f} cores during the two runs")
        return text


@dataclass
class Target:
    what: str
    goal: str
    figure: str  # "" if not measured in this run
    met: bool | None

    @property
    def verdict(self) -> str:
        return {True: "met", False: "not met", None: "not measured"}[self.met]


def _busy_note(r: Result) -> str:
    return f" (busy: other programs used {r.other_cpu_cores:.2f} cores)" if r.busy else ""


def targets(report: Report) -> list[Target]:
    """The issue's targets, each with its figure from this run and whether it is met."""
    out: list[Target] = []
    for ceiling, server, goal in (("noop", "noop", TARGET_OF_NOOP),
                                  (None, "baseline", TARGET_OF_BASELINE)):
        for name in SINGLE_ROW_TARGETS:
            what = (f"{SHORT_NAMES[name]} ÷ {SERVER_TITLES[server]} "
                    + ("(same gunicorn command)" if server == "noop" else "(uvicorn)"))
            a, b = report.result(name), report.result(ceiling or name, server)
            if a is None or b is None:
                out.append(Target(what, f">= {goal:g}", "", None))
                continue
            ratio = Ratio(a, b)
            out.append(Target(what, f">= {goal:g}", ratio.text(), ratio.value >= goal))
    for name in SINGLE_ROW_TARGETS:
        what = f"{SHORT_NAMES[name]}, p99 at {TARGET_P99_CONNECTIONS} connections"
        r = report.p99_result(name)
        if r is None:
            out.append(Target(what, f"< {TARGET_P99_MS:g} ms", "", None))
            continue
        out.append(Target(
            what, f"< {TARGET_P99_MS:g} ms",
            f"{r.p99_ms:.2f} ms (p50 {r.p50_ms:.2f} ms, {_fmt(r.requests_per_s)} req/s, wrk "
            f"-t{r.threads} -c{r.connections}){_busy_note(r)}", r.p99_ms < TARGET_P99_MS))
    for name, goal in TARGET_ROWS_PER_S.items():
        what = f"{SHORT_NAMES[name]}, rows/s"
        r = report.result(name)
        if r is None:
            out.append(Target(what, f">= {_fmt(goal)}", "", None))
            continue
        out.append(Target(what, f">= {_fmt(goal)}", f"{_fmt(r.rows_per_s)}{_busy_note(r)}",
                          r.rows_per_s >= goal))
    what = "cold start: process start to /v2/health/ready answering 200, model on disk"
    if report.cold_start_s is None:
        out.append(Target(what, f"< {TARGET_COLD_START_S:g} s", "", None))
    else:
        out.append(Target(what, f"< {TARGET_COLD_START_S:g} s", f"{report.cold_start_s:.2f} s",
                          report.cold_start_s < TARGET_COLD_START_S))
    peak = report.peak_worker_bytes()
    what = "softserve worker RSS, model loaded (highest peak)"
    goal_text = f"< {TARGET_RSS_BYTES / 1e6:g} MB"
    if peak is None:
        out.append(Target(what, goal_text, "", None))
    else:
        out.append(Target(what, goal_text,
                          f"{peak / 1e6:.1f} MB ({peak / 2**20:.1f} MiB), the highest VmHWM of "
                          f"{len(report.memory['softserve'])} workers", peak < TARGET_RSS_BYTES))
    return out


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    model = next((line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("model name")), "unknown")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return model + (", virtual machine" if "hypervisor" in flags else "")


def memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "?"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def code_version() -> str:
    """The commit measured, and whether the served code differs from it."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "serving", "modelrepo", "pyproject.toml"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes to the served code" if dirty else "")


def machine_facts(wrk: str) -> dict[str, str]:
    try:
        wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split()[1]
    except (OSError, IndexError):
        wrk_version = "?"
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": memory_total(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "gunicorn": _version("gunicorn"),
        "flask": _version("flask"),
        "werkzeug": _version("werkzeug"),
        "orjson": _version("orjson"),
        "numpy": _version("numpy"),
        "fastapi": _version("fastapi"),
        "starlette": _version("starlette"),
        "pydantic": _version("pydantic"),
        "uvicorn": _version("uvicorn"),
        # What uvicorn's defaults (--loop auto, --http auto) pick: these when installed.
        "uvicorn_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "uvicorn_http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "wrk": wrk_version,
        "code": code_version(),
    }


def _fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def results_table(results: Sequence[Result]) -> str:
    repeated = any(len(r.runs_requests_per_s) > 1 for r in results)
    lines = ["| server | scenario | req/s | rows/s | p50 ms | p99 ms | non-2xx | socket errors "
             "| server CPU µs/req | other load |" + (" runs, req/s |" if repeated else ""),
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|" + ("--:|" if repeated else "")]
    for r in results:
        socket_errors = sum(r.socket_errors.values())
        lines.append(
            f"| {SERVER_TITLES.get(r.server, r.server)} | {r.title} | {_fmt(r.requests_per_s)} | "
            f"{_fmt(r.rows_per_s) if r.rows_per_request else '–'} | {r.p50_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.non_2xx} | "
            f"{socket_errors if not socket_errors else str(r.socket_errors)} | "
            f"{_fmt(r.server_cpu_us_per_request)} | {r.other_cpu_cores:.2f} |"
            + (f" {', '.join(f'{v:,}' for v in r.runs_requests_per_s)} |" if repeated else ""))
    return "\n".join(lines)


def ceilings_table(report: Report) -> str | None:
    """softserve's single-row routes against the no-op app and its own health check."""
    noop, live = report.result("noop"), report.result("live")
    rows = [r for r in (report.result(n) for n in ("predict-1", "v2-json-1", "v2-binary-1")) if r]
    if not rows or (noop is None and live is None):
        return None
    lines = ["| scenario | req/s | ÷ no-op, by req/s | ÷ no-op, by CPU/req | "
             "÷ health/live, by req/s | ÷ health/live, by CPU/req |", "|---|--:|--:|--:|--:|--:|"]
    for r in rows:
        cells = []
        for ceiling in (noop, live):
            if ceiling is None:
                cells += ["–", "–"]
            else:
                ratio = Ratio(r, ceiling)
                cells += [f"{ratio.rate:.2f}", f"{ratio.cpu:.2f}"]
        lines.append(f"| {r.title} | {_fmt(r.requests_per_s)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def baseline_table(report: Report) -> str | None:
    """softserve against the FastAPI baseline, scenario by scenario."""
    pairs = [(report.result(n), report.result(n, "baseline")) for n in BASELINE_SCENARIOS]
    pairs = [(a, b) for a, b in pairs if a and b]
    if not pairs:
        return None
    lines = ["| scenario | softserve req/s | baseline req/s | softserve ÷ baseline | "
             "rows/s, softserve / baseline | p50 ms, s / b | p99 ms, s / b | "
             "server CPU µs/req, s / b |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for a, b in pairs:
        ratio = Ratio(a, b)
        value = f"**{ratio.value:.2f}**" + ("" if ratio.quiet else " (busy)")
        lines.append(
            f"| {a.title} | {_fmt(a.requests_per_s)} | {_fmt(b.requests_per_s)} | {value} | "
            f"{_fmt(a.rows_per_s)} / {_fmt(b.rows_per_s)} | {a.p50_ms:.2f} / {b.p50_ms:.2f} | "
            f"{a.p99_ms:.2f} / {b.p99_ms:.2f} | {_fmt(a.server_cpu_us_per_request)} / "
            f"{_fmt(b.server_cpu_us_per_request)} |")
    return "\n".join(lines)


def sweep_table(report: Report) -> str | None:
    if not report.sweep:
        return None
    lines = ["| connections | wrk threads | scenario | softserve req/s | p50 ms | p99 ms | "
             "baseline req/s | p50 ms | p99 ms | softserve ÷ baseline, req/s | other load |",
             "|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    names = list(dict.fromkeys(r.scenario for r in report.sweep))
    for c in sorted({r.connections for r in report.sweep}):
        for name in names:
            a = report.sweep_result(name, "softserve", c)
            b = report.sweep_result(name, "baseline", c)
            if a is None:
                continue
            base = (f"{_fmt(b.requests_per_s)} | {b.p50_ms:.2f} | {b.p99_ms:.2f} | "
                    f"{Ratio(a, b).rate:.2f}" if b else "– | – | – | –")
            others = ", ".join(f"{r.other_cpu_cores:.2f}" for r in (a, b) if r)
            lines.append(f"| {c} | {a.threads} | {SHORT_NAMES.get(name, name)} | "
                         f"{_fmt(a.requests_per_s)} | {a.p50_ms:.2f} | {a.p99_ms:.2f} | {base} | "
                         f"{others} |")
    return "\n".join(lines)


def memory_table(report: Report) -> str:
    lines = ["| server | worker pid | RSS after start | RSS after the runs | peak RSS (VmHWM) |",
             "|---|--:|--:|--:|--:|"]
    for server, workers in report.memory.items():
        for w in workers:
            lines.append(f"| {SERVER_TITLES.get(server, server)} | {w['pid']} | "
                         f"{_mib(w['start_kib'])} | {_mib(w['end_kib'])} | "
                         f"{_mib(w['peak_kib'])} |")
    return "\n".join(lines)


def targets_table(items: Sequence[Target]) -> str:
    lines = ["| target | goal | this run | |", "|---|---|---|---|"]
    for t in items:
        verdict = {True: "**met**", False: "**not met**", None: "not measured"}[t.met]
        lines.append(f"| {t.what} | {t.goal} | {t.figure or '–'} | {verdict} |")
    return "\n".join(lines)


def _after_warmup(seconds: float) -> str:
    return f" after a {seconds:g} s warm-up" if seconds > 0 else " without a warm-up"


def server_description(report: Report) -> str:
    """Which gunicorn worker class ran (from the master's log), threads, flags."""
    s = report.settings
    text = (f"{s['workers']} gunicorn workers, worker class `{s['worker_class']}` (from the "
            "master's \"Using worker\" log line)")
    threads = int(s.get("gunicorn_threads") or 1)
    if threads > 1 or s["worker_class"] == "gthread":
        text += f", {threads} threads per worker"
    if s.get("gunicorn_args"):
        text += f", extra gunicorn flags `{s['gunicorn_args']}`"
    return text


def write_markdown(report: Report, path: Path, plot: Path | None) -> None:
    m, s = report.machine, report.settings
    every = [*report.results, *report.sweep]
    bad = [r for r in every if not r.clean]
    out = ["# Benchmarks", "",
           f"Written by `make bench` (`bench/run.py`) on {report.started}; rerun it rather than "
           "editing this file. Load comes from wrk on the same machine as the servers, so the "
           "figures compare servers, scenarios and settings on this machine; they are not a "
           "capacity plan.", ""]
    if bad:
        out += ["**Warning: some runs had errors; their figures are not valid:** " + "; ".join(
            f"{SERVER_TITLES.get(r.server, r.server)} {r.scenario} at {r.connections} "
            f"connections: {r.non_2xx} non-2xx, socket errors {r.socket_errors}" for r in bad),
            ""]
    items = targets(report)
    met = sum(t.met is True for t in items)
    measured = sum(t.met is not None for t in items)
    out += ["## Targets", "",
            f"The targets of issue 7, each measured in this run: **{met} of {measured} met**"
            + (f" ({len(items) - measured} not measured)" if measured < len(items) else "")
            + ".", "", targets_table(items), "",
            "- Ratios are of request rates (req/s), the figure the targets are stated in; the "
            "ratio of server CPU per request is given next to them. A row says *not reliable* "
            f"when other programs used >= {NOISY} cores during either run: rerun then "
            "(`BENCH_REPEAT=2`, a longer `BENCH_QUIET_WAIT`). CPU per request is no stand-in "
            "for the rate: wrk and the kernel's loopback share the same cores, so a request "
            "that costs the server half the CPU is far from twice as fast.",
            f"- The p99 figures are from the concurrency sweep's {TARGET_P99_CONNECTIONS}-"
            "connection points; the rows/s figures from the main runs.",
            f"- RSS: 80 MB is read as {TARGET_RSS_BYTES:,} bytes "
            f"({TARGET_RSS_BYTES / 2**20:.1f} MiB).", ""]
    if plot is not None:
        out += [f"![req/s and p99 against connections, softserve and the baseline]({plot.name})",
                ""]
    baseline = s.get("baseline") or {}
    out += ["## Results", "",
            f"softserve: {server_description(report)}, the defaults a user gets (metrics and "
            "the access log on)."
            + (" The no-op app (`bench/baselines/noop_wsgi.py`) ran under the same gunicorn "
               f"command (worker class `{s.get('noop_worker_class') or '?'}` by its log) and "
               "was sent the single-row `/predict` request." if report.result("noop") else "")
            + (f" The baseline (`bench/baselines/fastapi_onnx.py`): FastAPI {m.get('fastapi')} "
               f"on uvicorn {m.get('uvicorn')} ({m.get('uvicorn_loop')}, "
               f"{m.get('uvicorn_http')}), {baseline.get('workers')} workers, log level "
               "warning, the same model file." if baseline else "")
            + f" wrk: {s['threads']} threads and {s['connections']} connections, "
            f"{s['seconds']:g} s per scenario{_after_warmup(s['warmup'])}"
            + (f"; servers and wrk at nice {s['nice']}" if s.get("nice") else "")
            + (f"; the best of {s['repeat']} runs per scenario (req/s of each run in the last "
               "column)" if s.get("repeat", 1) > 1 else "") + ". "
            f"Batches are {BATCH_ROWS} rows; rows/s = req/s × rows per request.", "",
            results_table(report.results), "",
            "- *non-2xx* is wrk's count of responses with a status >= 400; before each run the "
            "exact request is sent once to each server and its answer checked (200, the "
            "expected rows, the same classes from softserve and the baseline), so a redirect "
            "or a wrong payload stops the benchmark instead of being measured.",
            "- *server CPU µs/req* is the workers' user+system CPU time during the run divided by "
            "the requests: what one request costs the server, whatever wrk takes of the same "
            "cores.",
            "- *other load* is the CPU, in cores, that everything but the measured server's "
            "workers and wrk used during the run (other programs; interrupt time, mostly the "
            "benchmark's own loopback traffic, is left out): above ~0.1 the machine was not "
            "quiet, and that row's req/s and latencies suffer; its CPU µs/req much less."]
    if s.get("worker_class") == "sync":
        out += ["- gunicorn's sync worker closes the connection after every response (it has no "
                "keep-alive), so each of its requests includes a TCP connect and accept."]
    out += [""]
    ceilings = ceilings_table(report)
    if ceilings:
        out += ["### Single row against the ceilings", "",
                "softserve's single-row routes as a fraction of the no-op app on the same "
                "gunicorn command (the target) and of softserve's own `GET /v2/health/live`.",
                "", ceilings, ""]
    comparison = baseline_table(report)
    if comparison:
        out += ["### softserve against the FastAPI baseline", "",
                "The same requests, the same wrk settings, one after the other.", "",
                comparison, ""]
    sweep = sweep_table(report)
    if sweep:
        sw = s.get("sweep") or {}
        out += ["## Concurrency sweep", "",
                f"Single-row requests at {', '.join(map(str, sw.get('connections', [])))} "
                f"connections, wrk threads = min(2, connections), {sw.get('seconds', 0):g} s "
                f"per point{_after_warmup(s['warmup'])}, softserve and the baseline "
                "one after the other at each point.", "", sweep, ""]
    out += ["## Worker memory", "",
            "RSS of each worker process (the children of gunicorn's master; uvicorn's, without "
            "its multiprocessing resource tracker), from `/proc/<pid>/status`.", "",
            memory_table(report), "",
            "## Machine", "", "| | |", "|---|---|",
            f"| CPU | {m['cpu']} |", f"| cores | {m['cores']} (shared by the servers and wrk) |",
            f"| memory | {m.get('memory', '?')} |",
            f"| kernel | Linux {m['kernel']} |", f"| Python | {m['python']} |",
            f"| onnxruntime | {m['onnxruntime']} |",
            f"| gunicorn | {m['gunicorn']}, `{s['worker_class']}` worker class, "
            f"{s['workers']} workers |",
            f"| Flask / Werkzeug | {m['flask']} / {m['werkzeug']} |",
            f"| orjson / numpy | {m['orjson']} / {m['numpy']} |"]
    if baseline:
        out += [f"| baseline | FastAPI {m.get('fastapi')}, Starlette {m.get('starlette')}, "
                f"pydantic {m.get('pydantic')}, uvicorn {m.get('uvicorn')} with "
                f"{m.get('uvicorn_loop')} and {m.get('uvicorn_http')} |"]
    out += [f"| wrk | {m['wrk']} |", f"| softserve | commit {m['code']} |",
            "", "## Reproduce", "", "```sh",
            "make bench                      # installs .venv and the bench extra; needs wrk",
            "BENCH_SECONDS=30 make bench     # longer runs, steadier figures",
            "BENCH_NICE=-10 BENCH_REPEAT=3 make bench   # a shared machine: priority, best of 3",
            ".venv/bin/python bench/run.py --help",
            "# compare settings without touching this file:",
            ".venv/bin/python bench/run.py --no-docs --scenarios single --no-sweep --workers 4",
            "# the report and plot again from a run saved with --json FILE:",
            ".venv/bin/python bench/run.py --render FILE",
            '.venv/bin/python bench/run.py --no-docs --scenarios single --no-sweep '
            '--gunicorn-args="--worker-class gthread --threads 4"',
            "# where a request's time goes (needs py-spy):",
            ".venv/bin/python bench/profile_requests.py",
            "```", "", f"This run: `{report.command}`", "",
            "How these are made and read, and earlier findings: "
            "[bench/README.md](../bench/README.md).", ""]
    path.write_text("\n".join(out))


SERVER_COLORS = {"softserve": "#1f77b4", "baseline": "#ff7f0e"}
SCENARIO_STYLES = {"predict-1": ("-", "o"), "v2-json-1": ("--", "s")}


def write_plot(report: Report, path: Path) -> bool:
    """req/s and p99 against connections (the sweep), softserve and the baseline.

    Returns False, writing nothing, if matplotlib is missing or there was no sweep.
    """
    if not report.sweep:
        return False
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    except ImportError:
        return False
    connections = sorted({r.connections for r in report.sweep})
    names = list(dict.fromkeys(r.scenario for r in report.sweep))
    fig, (rate_ax, p99_ax) = plt.subplots(1, 2, figsize=(12, 5.2))
    busy = False
    for server in ("softserve", "baseline"):
        for name in names:
            points = [r for c in connections
                      if (r := report.sweep_result(name, server, c)) is not None]
            if not points:
                continue
            linestyle, marker = SCENARIO_STYLES.get(name, (":", "^"))
            label = f"{SERVER_TITLES[server]}, {SHORT_NAMES.get(name, name)}"
            xs = [r.connections for r in points]
            for ax, ys in ((rate_ax, [r.requests_per_s for r in points]),
                           (p99_ax, [r.p99_ms for r in points])):
                ax.plot(xs, ys, linestyle=linestyle, marker=marker, label=label,
                        color=SERVER_COLORS[server], linewidth=1.6, markersize=6)
                for x, y, r in zip(xs, ys, points):
                    if r.busy or not r.clean:  # hollow: not a fair point
                        busy = True
                        ax.plot([x], [y], marker=marker, markersize=10, linestyle="none",
                                markerfacecolor="white", color="#d62728" if not r.clean
                                else SERVER_COLORS[server])
    p99_ax.axhline(TARGET_P99_MS, color="#2ca02c", linestyle=":", linewidth=1.4)
    p99_ax.text(connections[0], TARGET_P99_MS, f" target: p99 < {TARGET_P99_MS:g} ms at "
                f"{TARGET_P99_CONNECTIONS} connections", color="#2ca02c", fontsize=8,
                va="bottom")
    if TARGET_P99_CONNECTIONS in connections:
        p99_ax.axvline(TARGET_P99_CONNECTIONS, color="#2ca02c", linestyle=":", linewidth=0.8,
                       alpha=0.6)
    p99_ax.set_yscale("log")
    p99_ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    p99_ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda y, _: f"{y:g}" if str(y)[0] in "25" else ""))
    rate_ax.set_ylim(bottom=0)
    rate_ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.0f}"))
    for ax, title, ylabel in ((rate_ax, "throughput (higher is better)", "requests/s"),
                              (p99_ax, "p99 latency (lower is better; log scale)", "p99, ms")):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(connections))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_xlabel("connections (wrk threads = min(2, connections))")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    rate_ax.legend(fontsize=8, loc="lower right")
    s, m = report.settings, report.machine
    base = s.get("baseline") or {}
    fig.suptitle(
        f"single-row requests: softserve ({s['workers']} gunicorn {s['worker_class']} workers)"
        + (f" vs FastAPI + uvicorn ({base.get('workers')} workers)" if base else "")
        + f"\nwrk on the same {m['cores']} cores ({m['cpu']}), "
        f"{(s.get('sweep') or {}).get('seconds', 0):g} s per point, {report.started}",
        fontsize=10)
    fig.tight_layout()
    if busy:
        fig.subplots_adjust(bottom=0.16)
        fig.text(0.01, 0.01, f"hollow markers: other programs used >= {NOISY} cores during that "
                 "point (its rate is low, its latency high); red: the point had errors",
                 fontsize=8, color="#555555")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------- main


def train(repository: Path) -> None:
    """Train and publish iris version 1 into ``repository``. Raises RuntimeError."""
    command = [sys.executable, "-m", "training", "--artifacts", str(repository),
               "--log-every", "0"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"training failed ({done.returncode}): {shlex.join(command)}\n"
                           f"{done.stdout}\n{done.stderr}")


def latest_version(repository: Path) -> Path:
    """The highest complete version directory of the iris model: the one softserve serves.

    Raises RuntimeError if there is none.
    """
    versions = [p for p in (repository / MODEL).glob("*") if p.name.isdigit()
                and int(p.name) > 0 and (p / "model.onnx").is_file()
                and (p / "metadata.json").is_file()]
    if not versions:
        raise RuntimeError(f"no version of {MODEL!r} in {repository}")
    return max(versions, key=lambda p: int(p.name))


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Load-test softserve (gunicorn), a no-op app on the same gunicorn command "
                    "and a FastAPI + uvicorn baseline with wrk; check the issue 7 targets; "
                    "write docs/benchmarks.md and docs/benchmarks.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("BENCH_SECONDS") or 10),
                        help="measured duration of each scenario (env BENCH_SECONDS)")
    parser.add_argument("--warmup", type=float,
                        default=float(os.environ.get("BENCH_WARMUP") or 1),
                        help="unmeasured wrk run before each scenario and sweep point, 0 for "
                             "none (env BENCH_WARMUP)")
    parser.add_argument("--quiet-wait", type=float,
                        default=float(os.environ.get("BENCH_QUIET_WAIT") or 10),
                        help="before each run, wait up to this many seconds for other "
                             "processes to go quiet (< 0.15 cores); 0: don't (env "
                             "BENCH_QUIET_WAIT)")
    parser.add_argument("--nice", type=int, default=int(os.environ.get("BENCH_NICE") or 0),
                        help="scheduling priority of the servers and wrk; below 0 (root only), "
                             "e.g. -10, they keep most of the CPU on a machine others are "
                             "using too (env BENCH_NICE)")
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT") or 1),
                        help="measure each scenario and sweep point this many times and keep "
                             "the best run (env BENCH_REPEAT)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (main scenarios)")
    parser.add_argument("--connections", type=int, default=32,
                        help="wrk connections (main scenarios)")
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn workers of softserve and the no-op app "
                             "(sets SOFTSERVE_WORKERS)")
    parser.add_argument("--gunicorn-args", default="",
                        help='extra gunicorn flags for softserve and the no-op app, one string, '
                             'e.g. "--worker-class gthread --threads 4" (they override the '
                             'config file)')
    parser.add_argument("--scenarios", default="all",
                        help="all, single, batch, or a comma-separated list of: "
                             + ", ".join(s.name for s in scenarios())
                             + " (noop: the no-op app; the baseline runs the ones it answers: "
                             + ", ".join(BASELINE_SCENARIOS) + ")")
    parser.add_argument("--no-baseline", action="store_true",
                        help="don't start or measure the FastAPI + uvicorn baseline")
    parser.add_argument("--baseline-workers", type=int, default=2,
                        help="uvicorn workers of the baseline")
    parser.add_argument("--no-sweep", action="store_true",
                        help="skip the concurrency sweep (then there is no plot and no p99 "
                             f"figure at {TARGET_P99_CONNECTIONS} connections unless "
                             f"--connections {TARGET_P99_CONNECTIONS})")
    parser.add_argument("--sweep-seconds", type=float,
                        default=float(os.environ.get("BENCH_SWEEP_SECONDS") or 5),
                        help="measured duration of each sweep point (env BENCH_SWEEP_SECONDS)")
    parser.add_argument("--sweep-connections", type=_int_list,
                        default=",".join(map(str, SWEEP_CONNECTIONS)),
                        help="the sweep's connection counts, comma-separated; wrk threads = "
                             "min(2, connections)")
    parser.add_argument("--sweep-scenarios", default="predict-1,v2-json-1",
                        help="the scenarios of the sweep, comma-separated")
    parser.add_argument("--repository", type=Path,
                        help="serve this existing model repository (it must hold an 'iris' "
                             "model) instead of training one into a temporary directory")
    parser.add_argument("--markdown", type=Path, default=DOCS / "benchmarks.md",
                        help="report to write")
    parser.add_argument("--plot", type=Path, default=DOCS / "benchmarks.png", help="plot to write")
    parser.add_argument("--no-docs", action="store_true",
                        help="write neither the report nor the plot: print the tables only")
    parser.add_argument("--json", type=Path, help="also write the raw results here as JSON")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: write the report and plot again from the JSON "
                             "a run saved with --json")
    parser.add_argument("--wrk", default=os.environ.get("WRK") or "wrk",
                        help="the wrk executable (env WRK)")
    args = parser.parse_args(argv)
    if (args.seconds < 1 or args.sweep_seconds < 1 or args.threads < 1
            or args.connections < args.threads or args.workers < 1 or args.repeat < 1
            or args.baseline_workers < 1):
        parser.error("need --seconds >= 1, --sweep-seconds >= 1, --threads >= 1, "
                     "--connections >= --threads, --workers >= 1, --baseline-workers >= 1, "
                     "--repeat >= 1")
    known = {s.name for s in scenarios() if s.server == "softserve"}
    args.sweep_scenarios = [n.strip() for n in args.sweep_scenarios.split(",") if n.strip()]
    unknown = [n for n in args.sweep_scenarios if n not in known]
    if unknown:
        parser.error(f"unknown sweep scenario(s) {', '.join(unknown)}: choose from "
                     f"{', '.join(sorted(known))}")
    if args.nice < 0 and os.geteuid() != 0:
        parser.error("--nice below 0 needs root")
    return args


def _missing_baseline_packages() -> list[str]:
    return [p for p in ("fastapi", "uvicorn") if importlib.util.find_spec(p) is None]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return finish(load_report(args.render), args)
    # Stopped with SIGTERM (or SIGINT from a shell that ignores it for background jobs), still
    # stop the servers on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chosen = select_scenarios(args.scenarios)
    by_name = {s.name: s for s in scenarios()}
    sweep_names = [] if args.no_sweep else args.sweep_scenarios
    with_baseline = not args.no_baseline and any(
        n in BASELINE_SCENARIOS for n in [*(s.name for s in chosen), *sweep_names])
    if shutil.which(args.wrk) is None:
        print(f"bench: wrk not found ({args.wrk!r}): install it (Debian/Ubuntu: "
              "apt-get install wrk) or pass --wrk PATH", file=sys.stderr)
        return 2
    if with_baseline and (missing := _missing_baseline_packages()):
        print(f"bench: the FastAPI baseline needs {' and '.join(missing)}: "
              ".venv/bin/pip install -e '.[bench]' (make bench does), or pass --no-baseline",
              file=sys.stderr)
        return 2

    # One list of runs, the baseline right after softserve on each scenario it answers, so
    # the figures compared were taken close together in time.
    plan: list[tuple[str, Scenario, Load]] = []
    main_load = Load(args.seconds, args.threads, args.connections)
    for scenario in chosen:
        plan.append((scenario.server, scenario, main_load))
        if with_baseline and scenario.name in BASELINE_SCENARIOS:
            plan.append(("baseline", scenario, main_load))
    sweep_plan: list[tuple[str, Scenario, Load]] = []
    for c in args.sweep_connections:
        load = Load(args.sweep_seconds, min(2, c), c)
        for name in sweep_names:
            sweep_plan.append(("softserve", by_name[name], load))
            if with_baseline and name in BASELINE_SCENARIOS:
                sweep_plan.append(("baseline", by_name[name], load))
    overhead = args.warmup + (0.5 * args.repeat if args.quiet_wait > 0 else 0)
    estimate = (len(plan) * (args.seconds * args.repeat + overhead)
                + len(sweep_plan) * (args.sweep_seconds * args.repeat + overhead))
    log(f"{len(plan)} runs of {args.seconds:g} s and {len(sweep_plan)} sweep points of "
        f"{args.sweep_seconds:g} s, each after a {args.warmup:g} s warm-up: ~{estimate:.0f} s "
        "of load, plus training and start-up")

    extra = shlex.split(args.gunicorn_args)
    started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    with tempfile.TemporaryDirectory(prefix="softserve-bench-") as tmp_name, \
            contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        repository = args.repository
        if repository is None:
            repository = tmp / "repository"
            log(f"training iris version 1 into {repository}")
            t0 = time.monotonic()
            train(repository)
            log(f"trained in {time.monotonic() - t0:.1f} s")
        version_dir = latest_version(repository)
        resolved = gunicorn_settings(extra, args.workers, tmp)
        control_socket = "off"
        if resolved.get("control_socket_disable") != "True":
            # Every gunicorn of the user would share ~/.gunicorn/gunicorn.ctl: one each.
            control_socket = "one per server, in the benchmark's temporary directory"
            log("the gunicorn config leaves the control socket on: giving each server its own")

        def control(name: str) -> list[str]:
            return [] if control_socket == "off" else ["--control-socket", str(tmp / f"{name}.ctl")]

        servers: dict[str, Server] = {}
        log(f"starting softserve: gunicorn, {args.workers} workers"
            + (f", extra flags {extra}" if extra else ""))
        softserve = servers["softserve"] = stack.enter_context(running_server(
            repository, args.workers, [*extra, *control("softserve")], tmp / "softserve.log",
            args.nice))
        worker_class, noop_class = softserve.worker_class(), None
        if any(s.server == "noop" for s in chosen):
            log("starting the no-op app on the same gunicorn command")
            noop = servers["noop"] = stack.enter_context(running_server(
                repository, args.workers, [*extra, *control("noop")], tmp / "noop.log",
                args.nice, app=NOOP_APP, name="noop"))
            noop_class = noop.worker_class()
            if noop_class != worker_class:
                log(f"warning: the no-op app runs {noop_class} workers, softserve "
                    f"{worker_class}")
        if with_baseline:
            log(f"starting the FastAPI baseline: uvicorn, {args.baseline_workers} workers, "
                f"model {version_dir}")
            servers["baseline"] = stack.enter_context(running_baseline(
                version_dir, args.baseline_workers, tmp / "baseline.log", args.nice))
        pids = {name: server.worker_pids() for name, server in servers.items()}
        start_memory = {name: {pid: memory_kib(pid) for pid in p} for name, p in pids.items()}
        for name, server in servers.items():
            log(f"{name} at {server.url}: workers {pids[name]}"
                + (f" ({server.worker_class()})" if isinstance(server, GunicornServer) else ""))
        check_answers(servers, [s for _, s, _ in [*plan, *sweep_plan]])

        report = Report(
            started=started, machine=machine_facts(args.wrk), cold_start_s=softserve.ready_after,
            settings={"workers": args.workers, "worker_class": worker_class,
                      "gunicorn_threads": int(resolved.get("threads") or 1),
                      "keepalive": resolved.get("keepalive"),
                      "gunicorn_args": args.gunicorn_args, "control_socket": control_socket,
                      "noop_worker_class": noop_class,
                      "threads": args.threads, "connections": args.connections,
                      "seconds": args.seconds, "warmup": args.warmup,
                      "quiet_wait": args.quiet_wait, "nice": args.nice, "repeat": args.repeat,
                      "sweep": ({"connections": args.sweep_connections,
                                 "seconds": args.sweep_seconds, "scenarios": sweep_names}
                                if sweep_plan else None),
                      "baseline": ({"workers": args.baseline_workers,
                                    "command": shlex.join(servers["baseline"].command[1:])}
                                   if with_baseline else None)},
            command=" ".join(
                [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items())
                 if k.startswith("BENCH_") and k != "BENCH_ARGS"]
                + [shlex.join(["python", "bench/run.py",
                               *(argv if argv is not None else sys.argv[1:])])]))
        t0 = time.monotonic()
        for kind, runs, results in (("", plan, report.results),
                                    ("sweep ", sweep_plan, report.sweep)):
            for name, scenario, load in runs:
                server = servers[name]
                log(f"{kind}{name} {scenario.name}: {scenario.title}, {len(scenario.body)} byte "
                    f"body, wrk -t{load.threads} -c{load.connections} {load.seconds:g} s")
                result = measure(server, scenario, load, args, tmp / "body.bin")
                results.append(result)
                note = "" if result.clean else (f"  ERRORS: {result.non_2xx} non-2xx, "
                                                f"socket {result.socket_errors}")
                rows = (f", {result.rows_per_s:,.0f} rows/s" if scenario.rows > 1 else "")
                log(f"{kind}{name} {scenario.name}: {result.requests_per_s:,.0f} req/s{rows}, "
                    f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, server "
                    f"{result.server_cpu_us_per_request:,.0f} CPU µs/req, other load "
                    f"{result.other_cpu_cores:.2f} cores{note}")
        log(f"measured in {time.monotonic() - t0:.0f} s")
        for name, server in servers.items():
            if server.worker_pids() != pids[name]:
                log(f"warning: {name}'s workers changed during the run ({pids[name]} -> "
                    f"{server.worker_pids()}): one was restarted; see its log")
            report.memory[name] = [
                {"pid": pid, "start_kib": start_memory[name][pid].get("VmRSS", 0),
                 "end_kib": memory_kib(pid).get("VmRSS", 0),
                 "peak_kib": memory_kib(pid).get("VmHWM", 0)} for pid in pids[name]]
    return finish(report, args)


def check_answers(servers: dict[str, Server], chosen: Sequence[Scenario]) -> None:
    """Send every scenario once to each server that runs it; softserve and the baseline must
    predict the same classes. Raises RuntimeError."""
    for scenario in {s.name: s for s in chosen}.values():
        if scenario.server == "noop":
            check_scenario(servers["noop"].url, scenario)
            continue
        ours = check_scenario(servers["softserve"].url, scenario)
        if "baseline" in servers and scenario.name in BASELINE_SCENARIOS:
            theirs = check_scenario(servers["baseline"].url, scenario)
            if ours != theirs:
                differ = sum(a != b for a, b in zip(ours or [], theirs or []))
                raise RuntimeError(f"{scenario.name}: softserve and the baseline disagree on "
                                   f"{differ} of {len(ours or [])} classes")


def load_report(path: Path) -> Report:
    """A report saved by --json, to render again (older files too)."""
    data = json.loads(path.read_text())
    for key in ("ratio", "targets"):
        data.pop(key, None)
    results = [Result(**r) for r in data.pop("results")]
    sweep = [Result(**r) for r in data.pop("sweep", [])]
    memory = data.pop("memory", {})
    if isinstance(memory, list):  # before the baseline: softserve's workers only
        memory = {"softserve": memory}
    return Report(**data, results=results, sweep=sweep, memory=memory)


def finish(report: Report, args: argparse.Namespace) -> int:
    """Print the tables and the targets, write the JSON and the docs; 1 if any run had errors."""
    print(results_table(report.results))
    for table in (ceilings_table(report), baseline_table(report), sweep_table(report)):
        if table:
            print()
            print(table)
    print()
    print(memory_table(report))
    items = targets(report)
    print(f"\nsoftserve: {server_description(report)}\ntargets (issue 7), "
          f"{sum(t.met is True for t in items)} of {sum(t.met is not None for t in items)} met:")
    for t in items:
        print(f"  {t.verdict:>12}  {t.what} {t.goal}: {t.figure or '-'}")
    if args.json:
        args.json.write_text(json.dumps(
            {**asdict(report), "targets": [{**asdict(t), "verdict": t.verdict} for t in items]},
            indent=1))
    if not args.no_docs:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        plot = args.plot if write_plot(report, args.plot) else None
        if plot is None:
            log("no plot: " + ("no concurrency sweep in this run" if not report.sweep
                               else "matplotlib is not installed"))
        write_markdown(report, args.markdown, plot)
        log(f"wrote {args.markdown}" + (f" and {plot}" if plot else ""))
    bad = [r for r in [*report.results, *report.sweep] if not r.clean]
    for r in bad:
        print(f"bench: {r.server} {r.scenario} at {r.connections} connections: {r.non_2xx} "
              f"responses with status >= 400, socket errors {r.socket_errors}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
