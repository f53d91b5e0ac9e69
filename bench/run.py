"""Load benchmark of the real server: gunicorn + softserve, measured with wrk.

Trains an iris model into a temporary repository (never ./artifacts), starts
``gunicorn -c serving/gunicorn.conf.py "serving:create_app()"`` on a free 127.0.0.1 port, and runs
wrk once per scenario: the ``/v2/health/live`` ceiling, then single-row and 1000-row requests to
``/predict``, V2 JSON ``/infer`` and V2 binary ``/infer``. Writes docs/benchmarks.md and
docs/benchmarks.png. A benchmark, not a test: ``make bench`` runs it, ``make test`` does not.

    .venv/bin/python bench/run.py --help
    make bench                                   # the defaults: 2 sync workers, 10 s per scenario
    BENCH_SECONDS=3 make bench                   # quicker, noisier
    .venv/bin/python bench/run.py --no-docs --scenarios single \\
        --gunicorn-args="--worker-class gthread --threads 4"

Each scenario's exact request is sent once first and its answer checked (status 200, the
expected number of rows), so a wrong payload cannot be benchmarked as a fast error. Exits 1 if a
wrk run saw a response with status >= 400 or a socket error (after writing the report, which
lists them), 2 for a bad option or a missing tool.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
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
from contextlib import contextmanager
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
TARGET_RATIO = 0.80  # single-row /predict as a fraction of /v2/health/live (the target)
NOISY = 0.15  # cores used by other programs during a run above which its req/s is suspect
HEADER_LENGTH = "Inference-Header-Content-Length"


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
    check: Callable[[dict[str, str], bytes], None]


def _check_live(headers: dict[str, str], body: bytes) -> None:
    assert json.loads(body) == {"live": True}, body[:200]


def _check_predict(rows: int) -> Callable[[dict[str, str], bytes], None]:
    def check(headers: dict[str, str], body: bytes) -> None:
        doc = json.loads(body)
        assert len(doc["predictions"]) == rows, f"{len(doc['predictions'])} predictions"
        assert len(doc["predictions"][0]["probabilities"]) == 3
    return check


def _check_v2_json(rows: int) -> Callable[[dict[str, str], bytes], None]:
    def check(headers: dict[str, str], body: bytes) -> None:
        outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
        assert outputs["probabilities"]["shape"] == [rows, 3], outputs["probabilities"]["shape"]
        assert len(outputs["probabilities"]["data"]) == 3 * rows
        assert len(outputs["class"]["data"]) == rows
    return check


def _check_v2_binary(rows: int) -> Callable[[dict[str, str], bytes], None]:
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


def scenarios() -> list[Scenario]:
    """Every scenario, in report order; the first one is the ceiling."""
    json_headers = {"Content-Type": "application/json"}
    out = [Scenario("live", "GET /v2/health/live", "GET", "/v2/health/live", b"", {}, 0,
                    _check_live)]
    for n, suffix in ((1, "1"), (BATCH_ROWS, str(BATCH_ROWS))):
        rows = iris_rows(n)
        label = "single row" if n == 1 else f"{n} rows"
        out.append(Scenario(f"predict-{suffix}", f"POST /predict, {label}", "POST", "/predict",
                            _json({"instances": rows}), json_headers, n, _check_predict(n)))
        out.append(Scenario(
            f"v2-json-{suffix}", f"V2 JSON infer, {label}", "POST", f"/v2/models/{MODEL}/infer",
            _json({"inputs": [{"name": "input", "shape": [n, 4], "datatype": "FP32",
                               "data": [v for row in rows for v in row]}]}),
            json_headers, n, _check_v2_json(n)))
        body, headers = v2_binary_body(rows)
        out.append(Scenario(f"v2-binary-{suffix}", f"V2 binary infer, {label}", "POST",
                            f"/v2/models/{MODEL}/infer", body, headers, n, _check_v2_binary(n)))
    order = ["live", "predict-1", "v2-json-1", "v2-binary-1",
             f"predict-{BATCH_ROWS}", f"v2-json-{BATCH_ROWS}", f"v2-binary-{BATCH_ROWS}"]
    return sorted(out, key=lambda s: order.index(s.name))


SHORT_NAMES = {
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
    "single": ["live", "predict-1", "v2-json-1", "v2-binary-1"],
    "batch": ["live", f"predict-{BATCH_ROWS}", f"v2-json-{BATCH_ROWS}", f"v2-binary-{BATCH_ROWS}"],
}


def select_scenarios(spec: str) -> list[Scenario]:
    """Scenarios named by ``spec``: a group (all, single, batch) or a comma-separated list."""
    every = scenarios()
    names = SCENARIO_GROUPS.get(spec, spec.split(","))
    if names is None:
        return every
    known = {s.name for s in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}: choose from "
                         f"{', '.join(SCENARIO_GROUPS)} or {', '.join(sorted(known))}")
    return [s for s in every if s.name in names]


# ----------------------------------------------------------------------------------- server


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


def _priority(nice: int) -> Callable[[], None] | None:
    """A preexec_fn giving a child process (and its children) the scheduling priority ``nice``."""
    if nice == 0:
        return None
    return lambda: os.setpriority(os.PRIO_PROCESS, 0, nice)


class Server:
    """A real gunicorn master with its workers, on a free localhost port."""

    def __init__(self, repository: Path, workers: int, extra_args: Sequence[str],
                 log_path: Path, python: str = sys.executable, nice: int = 0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = log_path
        gunicorn = Path(python).parent / "gunicorn"
        command = [str(gunicorn)] if gunicorn.exists() else [python, "-m", "gunicorn"]
        self.command = [*command, "-c", str(GUNICORN_CONF.relative_to(ROOT)), *extra_args,
                        "serving:create_app()"]
        env = {**os.environ, "SOFTSERVE_MODEL_REPOSITORY": str(repository),
               "SOFTSERVE_BIND": f"127.0.0.1:{self.port}", "SOFTSERVE_WORKERS": str(workers)}
        with open(log_path, "wb") as f:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=f,
                                            stderr=subprocess.STDOUT,
                                            preexec_fn=_priority(nice))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        return children(self.process.pid)

    def worker_class(self) -> str:
        found = re.findall(r"Using worker: (\S+)", self.log())
        return found[-1] if found else "?"

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait for /v2/health/ready and for every worker to have booted. Raises RuntimeError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2):
                    pass
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
                continue
            # One worker answered; the others may still be loading their model.
            while time.monotonic() < deadline:
                booted = len(re.findall(r"Booting worker with pid", self.log()))
                if len(self.worker_pids()) >= self.workers and booted >= self.workers:
                    time.sleep(1.0)  # let the last worker finish create_app()
                    return
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn not ready within {timeout} s:\n{self.log()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextmanager
def running_server(repository: Path, workers: int, extra_args: Sequence[str],
                   log_path: Path, nice: int = 0) -> Iterator[Server]:
    server = Server(repository, workers, extra_args, log_path, nice=nice)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


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


def check_scenario(url: str, scenario: Scenario) -> None:
    """Raise RuntimeError unless the scenario's request gets 200 and the expected answer."""
    status, headers, body = send(url, scenario)
    if status != 200:
        raise RuntimeError(f"{scenario.name}: {scenario.method} {scenario.path} answered "
                           f"{status}: {body[:300]!r}")
    try:
        scenario.check(headers, body)
    except (AssertionError, KeyError, ValueError, TypeError) as exc:
        raise RuntimeError(
            f"{scenario.name}: unexpected answer ({exc!r}): {body[:300]!r}") from None


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

    @property
    def clean(self) -> bool:
        return self.non_2xx == 0 and not any(self.socket_errors.values())


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


def workers_cpu(pids: Sequence[int]) -> float:
    return sum((info[1] for info in map(_ppid_and_cpu, pids) if info), 0.0)


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def measure_once(server: Server, scenario: Scenario, args: argparse.Namespace,
                 body_file: Path) -> Result:
    if args.quiet_wait > 0:
        load = wait_for_quiet(args.quiet_wait)
        if load >= NOISY:
            log(f"{scenario.name}: other processes still use {load:.2f} cores; measuring anyway")
    pids = server.worker_pids()
    cpu_before, wrk_before, busy_before = workers_cpu(pids), children_cpu(), machine_busy()
    raw = run_wrk(args.wrk, server.url, scenario, args.seconds, args.threads, args.connections,
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
    )


def measure(server: Server, scenario: Scenario, args: argparse.Namespace,
            body_file: Path) -> Result:
    """Check the scenario, warm up, then the best (highest req/s) of ``args.repeat`` runs.

    Another program can only slow a run down, so on a shared machine the best run is the
    nearest to the server's own capacity. Errors of every run are added to the one kept.
    """
    check_scenario(server.url, scenario)
    if args.warmup > 0:
        run_wrk(args.wrk, server.url, scenario, args.warmup, args.threads, args.connections,
                body_file, args.nice)
    runs = [measure_once(server, scenario, args, body_file) for _ in range(args.repeat)]
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
    memory: list[dict[str, Any]] = field(default_factory=list)

    def result(self, name: str) -> Result | None:
        return next((r for r in self.results if r.scenario == name), None)

    def cpu_ratio(self) -> float | None:
        """The same ratio from server CPU per request: what it would be on a quiet machine
        with the server CPU-bound, and much steadier than the req/s ratio under noise."""
        live, predict = self.result("live"), self.result("predict-1")
        if live and predict and predict.server_cpu_us_per_request:
            return live.server_cpu_us_per_request / predict.server_cpu_us_per_request
        return None

    def ratio(self) -> float | None:
        live, predict = self.result("live"), self.result("predict-1")
        if live and predict and live.requests_per_s:
            return predict.requests_per_s / live.requests_per_s
        return None

    def quiet(self) -> bool:
        """Whether the two runs behind the ratio had the machine to themselves."""
        return all(r.other_cpu_cores < NOISY for r in self.results
                   if r.scenario in ("live", "predict-1"))

    def headline(self) -> tuple[float, str] | None:
        """(ratio, basis): by req/s on a quiet machine, else by server CPU per request."""
        ratio, cpu_ratio = self.ratio(), self.cpu_ratio()
        if ratio is None or cpu_ratio is None:
            return None
        return (ratio, "req/s") if self.quiet() else (cpu_ratio, "server CPU per request")


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    model = next((line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("model name")), "unknown")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return model + (", virtual machine" if "hypervisor" in flags else "")


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
        "kernel": platform.release(),
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "gunicorn": _version("gunicorn"),
        "flask": _version("flask"),
        "werkzeug": _version("werkzeug"),
        "orjson": _version("orjson"),
        "numpy": _version("numpy"),
        "wrk": wrk_version,
        "code": code_version(),
    }


def _fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def results_table(results: Sequence[Result]) -> str:
    repeated = any(len(r.runs_requests_per_s) > 1 for r in results)
    lines = ["| scenario | req/s | rows/s | p50 ms | p99 ms | non-2xx | socket errors "
             "| server CPU µs/req | other load |" + (" runs, req/s |" if repeated else ""),
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|" + ("--:|" if repeated else "")]
    for r in results:
        socket_errors = sum(r.socket_errors.values())
        lines.append(
            f"| {r.title} | {_fmt(r.requests_per_s)} | "
            f"{_fmt(r.rows_per_s) if r.rows_per_request else '–'} | {r.p50_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.non_2xx} | "
            f"{socket_errors if not socket_errors else str(r.socket_errors)} | "
            f"{_fmt(r.server_cpu_us_per_request)} | {r.other_cpu_cores:.2f} |"
            + (f" {', '.join(f'{v:,}' for v in r.runs_requests_per_s)} |" if repeated else ""))
    return "\n".join(lines)


def write_markdown(report: Report, path: Path, plot: Path | None) -> None:
    m, s = report.machine, report.settings
    bad = [r for r in report.results if not r.clean]
    out = ["# Benchmarks", "",
           f"Written by `make bench` (`bench/run.py`) on {report.started}; rerun it rather than "
           "editing this file. Load comes from wrk on the same machine as the server, so the "
           "figures compare scenarios and settings on this machine; they are not a capacity "
           "plan.", ""]
    if bad:
        out += ["**Warning: some runs had errors; their figures are not valid:** " + "; ".join(
            f"{r.scenario}: {r.non_2xx} non-2xx, socket errors {r.socket_errors}" for r in bad),
            ""]
    headline = report.headline()
    if headline is not None:
        live, predict = report.result("live"), report.result("predict-1")
        value, basis = headline
        verdict = "meets" if value >= TARGET_RATIO else "misses"
        cpu = (f"{report.cpu_ratio():.2f} ({_fmt(live.server_cpu_us_per_request)} µs for "
               f"live, {_fmt(predict.server_cpu_us_per_request)} µs for /predict)")
        rate = (f"{report.ratio():.2f} ({_fmt(predict.requests_per_s)} vs "
                f"{_fmt(live.requests_per_s)} req/s)")
        out += [f"**Headline: single-row `/predict` runs at {value:.2f} of the "
                f"`/v2/health/live` rate, by {basis}**; this {verdict} the target of "
                f">= {TARGET_RATIO:.2f}."]
        if basis == "req/s":
            out += [f"By req/s: {rate}. By server CPU per request: {cpu}."]
        else:
            out += [f"By server CPU per request: {cpu}. The req/s ratio, {rate}, is not "
                    f"reliable in this run: other programs used {live.other_cpu_cores:.2f} "
                    f"cores during live and {predict.other_cpu_cores:.2f} during /predict, and "
                    "CPU per request barely moves with the machine's load."]
        out += [""]
    if plot is not None:
        out += [f"![requests/s per scenario]({plot.name})", ""]
    out += ["## Results", "",
            f"{s['workers']} gunicorn `{s['worker_class']}` workers"
            + (f" (extra gunicorn flags: `{s['gunicorn_args']}`)" if s["gunicorn_args"] else "")
            + f"; wrk with {s['threads']} threads and {s['connections']} connections, "
            f"{s['seconds']:g} s per scenario after a {s['warmup']:g} s warm-up"
            + (f"; server and wrk at nice {s['nice']}" if s.get("nice") else "")
            + (f"; the best of {s['repeat']} runs per scenario (req/s of each run in the last "
               "column)" if s.get("repeat", 1) > 1 else "") + ". "
            f"Batches are {BATCH_ROWS} rows; rows/s = req/s × rows per request.", "",
            results_table(report.results), "",
            "- *non-2xx* is wrk's count of responses with a status >= 400; before each run the "
            "exact request is sent once and its answer checked (200, the expected rows), so a "
            "redirect or a wrong payload stops the benchmark instead of being measured.",
            "- *server CPU µs/req* is the workers' user+system CPU time during the run divided by "
            "the requests: what one request costs the server, whatever wrk takes of the same "
            "cores.",
            "- *other load* is the CPU, in cores, that everything but the workers and wrk used "
            "during the run (other programs; interrupt time, mostly the benchmark's own "
            "loopback traffic, is left out): above ~0.1 the machine was not quiet, and that "
            "row's req/s and latencies suffer; its CPU µs/req much less.",
            "- gunicorn's sync worker closes the connection after every response (it has no "
            "keep-alive), so each request includes a TCP connect and accept.", "",
            "## Worker memory", "",
            "RSS of each gunicorn worker (children of the master), from `/proc/<pid>/status`.", "",
            "| worker pid | RSS after start | RSS after the run | peak RSS (VmHWM) |",
            "|--:|--:|--:|--:|"]
    for w in report.memory:
        out.append(f"| {w['pid']} | {w['start_kib'] / 1024:.1f} MiB | "
                   f"{w['end_kib'] / 1024:.1f} MiB | {w['peak_kib'] / 1024:.1f} MiB |")
    out += ["", "## Machine", "", "| | |", "|---|---|",
            f"| CPU | {m['cpu']} |", f"| cores | {m['cores']} (shared by the server and wrk) |",
            f"| kernel | Linux {m['kernel']} |", f"| Python | {m['python']} |",
            f"| onnxruntime | {m['onnxruntime']} |",
            f"| gunicorn | {m['gunicorn']}, `{s['worker_class']}` worker class, "
            f"{s['workers']} workers |",
            f"| Flask / Werkzeug | {m['flask']} / {m['werkzeug']} |",
            f"| orjson / numpy | {m['orjson']} / {m['numpy']} |", f"| wrk | {m['wrk']} |",
            f"| softserve | commit {m['code']} |",
            "", "## Reproduce", "", "```sh",
            "make bench                      # installs .venv, needs wrk (apt-get install wrk)",
            "BENCH_SECONDS=30 make bench     # longer runs, steadier figures",
            "BENCH_NICE=-10 BENCH_REPEAT=3 make bench   # a shared machine: priority, best of 3",
            ".venv/bin/python bench/run.py --help",
            "# compare settings without touching this file:",
            ".venv/bin/python bench/run.py --no-docs --scenarios single --workers 4",
            '.venv/bin/python bench/run.py --no-docs --scenarios single '
            '--gunicorn-args="--worker-class gthread --threads 4"',
            "# where a request's time goes (needs py-spy):",
            ".venv/bin/python bench/profile_requests.py",
            "```", "", f"This run: `{report.command}`", "",
            "How these are made and read, the worker-class comparison and the profile of the "
            "single-row path: [bench/README.md](../bench/README.md).", ""]
    path.write_text("\n".join(out))


def write_plot(report: Report, path: Path) -> bool:
    """Bars of req/s (single rows), rows/s (batches) and server CPU per request.

    Returns False, writing nothing, if matplotlib is missing.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return False
    single = [r for r in report.results if r.rows_per_request <= 1]
    batch = [r for r in report.results if r.rows_per_request > 1]
    panels: list[tuple[str, list[Result]]] = [(k, p) for k, p in
                                              (("single", single), ("batch", batch)) if p]
    panels.append(("cpu", list(report.results)))
    fig = plt.figure(figsize=(12, 8))
    grid = fig.add_gridspec(2, len(panels) - 1)
    axes = [fig.add_subplot(grid[0, i]) for i in range(len(panels) - 1)]
    axes.append(fig.add_subplot(grid[1, :]))
    live = report.result("live")
    headline = report.headline()
    busy = False
    si = FuncFormatter(lambda x, _: f"{x / 1e6:g}M" if x >= 1e6 else
                       (f"{x / 1e3:g}k" if x >= 1e3 else f"{x:g}"))
    for ax, (kind, group) in zip(axes, panels):
        if kind == "cpu":
            values = [r.server_cpu_us_per_request for r in group]
            labels = [f" {v:,.0f} µs" + (f" ({v / group[0].server_cpu_us_per_request:.1f}× live)"
                                         if group[0].scenario == "live" and r is not group[0]
                                         else "") for v, r in zip(values, group)]
        elif kind == "batch":
            values = [r.rows_per_s for r in group]
            labels = [f" {v / 1e6:.2f}M rows/s, p99 {r.p99_ms:.1f} ms"
                      for v, r in zip(values, group)]
        else:
            values = [r.requests_per_s for r in group]
            labels = [f" {v:,.0f}/s, p99 {r.p99_ms:.1f} ms" for v, r in zip(values, group)]
        colors = ["#d62728" if not r.clean else
                  ("#9e9e9e" if r.scenario == "live" else "#1f77b4") for r in group]
        bars = ax.barh([SHORT_NAMES.get(r.scenario, r.scenario) for r in group], values,
                       color=colors)
        ax.invert_yaxis()
        for bar, label, r in zip(bars, labels, group):
            if r.other_cpu_cores >= NOISY and kind != "cpu":
                bar.set_hatch("///")  # the machine was busy: this bar is low
                bar.set_alpha(0.6)
                label += " (busy)"
                busy = True
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center",
                    fontsize=8)
        ax.set_xlim(0, max(values) * (1.35 if kind == "cpu" else 1.85))
        ax.xaxis.set_major_formatter(si)
        ax.grid(axis="x", alpha=0.3)
        if kind == "cpu":
            ax.set_title("server CPU per request (lower is better)", fontsize=10)
            ax.set_xlabel("worker CPU µs per request")
        elif kind == "batch":
            ax.set_title(f"{BATCH_ROWS}-row batches", fontsize=10)
            ax.set_xlabel("rows/s")
        else:
            title = "single row vs the /v2/health/live ceiling"
            if headline is not None:
                title += (f"\n/predict = {headline[0]:.2f} of live by "
                          f"{'req/s' if headline[1] == 'req/s' else 'CPU/request'} "
                          f"(target {TARGET_RATIO:.2f})")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("requests/s")
            if live:
                target = TARGET_RATIO * live.requests_per_s
                ax.axvline(target, color="#2ca02c", linestyle="--", linewidth=1.2)
                ax.text(target, len(group) - 0.45, f" {TARGET_RATIO:.0%} of live",
                        color="#2ca02c", fontsize=8, va="bottom")
    s, m = report.settings, report.machine
    fig.suptitle(f"softserve: {s['workers']} gunicorn {s['worker_class']} workers on "
                 f"{m['cores']} cores ({m['cpu']})\nwrk -t{s['threads']} -c{s['connections']} "
                 f"on the same cores, {s['seconds']:g} s per scenario, {report.started}",
                 fontsize=10)
    fig.tight_layout()
    if busy:
        fig.text(0.01, 0.005, f"hatched (busy): other programs used >= {NOISY} cores during "
                 "that run, so its rate is low; CPU per request is hardly affected",
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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Load-test the real gunicorn server with wrk and write docs/benchmarks.md "
                    "and docs/benchmarks.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("BENCH_SECONDS") or 10),
                        help="measured duration of each scenario (env BENCH_SECONDS)")
    parser.add_argument("--warmup", type=float,
                        default=float(os.environ.get("BENCH_WARMUP") or 1),
                        help="unmeasured wrk run before each scenario, 0 for none "
                             "(env BENCH_WARMUP)")
    parser.add_argument("--quiet-wait", type=float,
                        default=float(os.environ.get("BENCH_QUIET_WAIT") or 10),
                        help="before each scenario, wait up to this many seconds for other "
                             "processes to go quiet (< 0.15 cores); 0: don't (env "
                             "BENCH_QUIET_WAIT)")
    parser.add_argument("--nice", type=int, default=int(os.environ.get("BENCH_NICE") or 0),
                        help="scheduling priority of the server and wrk; below 0 (root only), "
                             "e.g. -10, they keep most of the CPU on a machine others are "
                             "using too (env BENCH_NICE)")
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT") or 1),
                        help="measure each scenario this many times and keep the best run "
                             "(env BENCH_REPEAT)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn workers (sets SOFTSERVE_WORKERS)")
    parser.add_argument("--gunicorn-args", default="",
                        help='extra gunicorn flags, one string, e.g. '
                             '"--worker-class gthread --threads 4" (they override the config file)')
    parser.add_argument("--scenarios", default="all",
                        help="all, single, batch, or a comma-separated list of: "
                             + ", ".join(s.name for s in scenarios()))
    parser.add_argument("--repository", type=Path,
                        help="serve this existing model repository (it must hold an 'iris' "
                             "model) instead of training one into a temporary directory")
    parser.add_argument("--markdown", type=Path, default=DOCS / "benchmarks.md",
                        help="report to write")
    parser.add_argument("--plot", type=Path, default=DOCS / "benchmarks.png", help="plot to write")
    parser.add_argument("--no-docs", action="store_true",
                        help="write neither the report nor the plot: print the table only")
    parser.add_argument("--json", type=Path, help="also write the raw results here as JSON")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: write the report and plot again from the JSON "
                             "a run saved with --json")
    parser.add_argument("--wrk", default=os.environ.get("WRK") or "wrk",
                        help="the wrk executable (env WRK)")
    args = parser.parse_args(argv)
    if (args.seconds < 1 or args.threads < 1 or args.connections < args.threads
            or args.workers < 1 or args.repeat < 1):
        parser.error("need --seconds >= 1, --threads >= 1, --connections >= --threads, "
                     "--workers >= 1, --repeat >= 1")
    if args.nice < 0 and os.geteuid() != 0:
        parser.error("--nice below 0 needs root")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return finish(load_report(args.render), args)
    # Stopped with SIGTERM (or SIGINT from a shell that ignores it for background jobs), still
    # stop the server on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chosen = select_scenarios(args.scenarios)
    if shutil.which(args.wrk) is None:
        print(f"bench: wrk not found ({args.wrk!r}): install it (Debian/Ubuntu: "
              "apt-get install wrk) or pass --wrk PATH", file=sys.stderr)
        return 2
    extra = shlex.split(args.gunicorn_args)
    started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    estimate = len(chosen) * (args.seconds * args.repeat + args.warmup + 0.5)
    log(f"{len(chosen)} scenarios x ({args.seconds:g} s + {args.warmup:g} s warm-up) "
        f"~ {estimate:.0f} s of load, plus training and start-up")
    with tempfile.TemporaryDirectory(prefix="softserve-bench-") as tmp_name:
        tmp = Path(tmp_name)
        repository = args.repository
        if repository is None:
            repository = tmp / "repository"
            log(f"training iris version 1 into {repository}")
            t0 = time.monotonic()
            train(repository)
            log(f"trained in {time.monotonic() - t0:.1f} s")
        log(f"starting gunicorn: {args.workers} workers"
            + (f", extra flags {extra}" if extra else ""))
        with running_server(repository, args.workers, extra, tmp / "gunicorn.log",
                            args.nice) as server:
            pids = server.worker_pids()
            start_memory = {pid: memory_kib(pid) for pid in pids}
            report = Report(
                started=started, machine=machine_facts(args.wrk),
                settings={"workers": args.workers, "worker_class": server.worker_class(),
                          "gunicorn_args": args.gunicorn_args, "threads": args.threads,
                          "connections": args.connections, "seconds": args.seconds,
                          "warmup": args.warmup, "quiet_wait": args.quiet_wait,
                          "nice": args.nice, "repeat": args.repeat},
                command=" ".join(
                    [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items())
                     if k.startswith("BENCH_") and k != "BENCH_ARGS"]
                    + [shlex.join(["python", "bench/run.py",
                                   *(argv if argv is not None else sys.argv[1:])])]))
            log(f"server {server.url} ready: workers {pids} ({report.settings['worker_class']})")
            for scenario in chosen:
                log(f"{scenario.name}: {scenario.title}, {len(scenario.body)} byte body, "
                    f"{args.seconds:g} s")
                result = measure(server, scenario, args, tmp / "body.bin")
                report.results.append(result)
                note = "" if result.clean else (f"  ERRORS: {result.non_2xx} non-2xx, "
                                                f"socket {result.socket_errors}")
                rows = f", {result.rows_per_s:,.0f} rows/s" if scenario.rows > 1 else ""
                log(f"{scenario.name}: {result.requests_per_s:,.0f} req/s{rows}, p50 "
                    f"{result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, server "
                    f"{result.server_cpu_us_per_request:,.0f} CPU µs/req, other load "
                    f"{result.other_cpu_cores:.2f} cores{note}")
            if server.worker_pids() != pids:
                log(f"warning: the workers changed during the run ({pids} -> "
                    f"{server.worker_pids()}): one was restarted; see the gunicorn log")
            report.memory = [{"pid": pid, "start_kib": start_memory[pid].get("VmRSS", 0),
                              "end_kib": memory_kib(pid).get("VmRSS", 0),
                              "peak_kib": memory_kib(pid).get("VmHWM", 0)} for pid in pids]
    return finish(report, args)


def load_report(path: Path) -> Report:
    """A report saved by --json, to render again."""
    data = json.loads(path.read_text())
    data.pop("ratio", None)
    results = [Result(**r) for r in data.pop("results")]
    return Report(**data, results=results)


def finish(report: Report, args: argparse.Namespace) -> int:
    """Print the table, write the JSON and the docs; 1 if any run had errors."""
    print(results_table(report.results))
    for w in report.memory:
        print(f"worker {w['pid']}: RSS {w['end_kib'] / 1024:.1f} MiB "
              f"(peak {w['peak_kib'] / 1024:.1f} MiB)")
    ratio = report.ratio()
    if ratio is not None:
        print(f"single-row /predict / live = {ratio:.3f} by req/s, {report.cpu_ratio():.3f} by "
              f"server CPU per request (target >= {TARGET_RATIO:.2f})"
              + ("" if report.quiet() else "; the machine was busy: go by CPU"))
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "ratio": ratio}, indent=1))
    if not args.no_docs:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        plot = args.plot if write_plot(report, args.plot) else None
        if plot is None:
            log("matplotlib is not installed: no plot")
        write_markdown(report, args.markdown, plot)
        log(f"wrote {args.markdown}" + (f" and {plot}" if plot else ""))
    bad = [r for r in report.results if not r.clean]
    for r in bad:
        print(f"bench: {r.scenario}: {r.non_2xx} responses with status >= 400, socket "
              f"errors {r.socket_errors}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
