"""Measuring a server: softserve's and the no-op app's gunicorn and the FastAPI baseline's uvicorn
started and stopped (through ``tests.support.server``), wrk runs, the workers' CPU time and how
busy the rest of the machine was meanwhile."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import log
from bench.scenarios import Scenario, check_scenario
from tests.support import ROOT
from tests.support.net import free_port
from tests.support.processes import children, cmdline, cpu_seconds, priority
from tests.support.server import (SOFTSERVE_APP, Server, gunicorn_command, gunicorn_env,
                                  start_server)

LUA_SCRIPT = ROOT / "bench" / "wrk.lua"
NOOP_APP = "bench.baselines.noop_wsgi:app"
BASELINE_APP = "bench.baselines.fastapi_onnx:app"
NOISY = 0.15  # cores used by other programs during a run above which its req/s is suspect


# ---------------------------------------------------------------------------------- servers


def start_gunicorn(repository: Path, workers: int, extra_args: Sequence[str], log_dir: Path,
                   nice: int = 0, app: str = SOFTSERVE_APP, name: str = "softserve",
                   env: Mapping[str, str] | None = None) -> Server:
    """A gunicorn server with softserve's configuration and the server's own settings
    (SOFTSERVE_POLL_SECONDS and the rest as a user gets them, but ``env``), ready and idle.

    Raises RuntimeError if it does not start.
    """
    return start_server(repository, log_dir, workers=workers, app=app, extra_args=extra_args,
                        name=name, nice=nice, poll_seconds=None, ready_path="/v2/health/ready",
                        timeout=60, settle=True, env=env)


class UvicornServer(Server):
    """The FastAPI baseline: uvicorn with ``workers`` worker processes."""

    def __init__(self, version_dir: Path, workers: int, log_dir: Path, nice: int = 0,
                 python: str = sys.executable) -> None:
        port = free_port()
        command = [python, "-m", "uvicorn", BASELINE_APP, "--host", "127.0.0.1", "--port",
                   str(port), "--workers", str(workers), "--log-level", "warning"]
        # ORT_DISABLE_TELEMETRY as softserve's gunicorn config sets it: no lookups, no slow exit.
        env = {"ORT_DISABLE_TELEMETRY": "1", **os.environ, "BASELINE_MODEL": str(version_dir)}
        super().__init__(command, env, port, log_dir / f"baseline-{port}.log", workers=workers,
                         name="baseline", nice=nice)

    def worker_pids(self) -> list[int]:
        # uvicorn spawns its workers with multiprocessing, which adds a resource tracker.
        pids = [pid for pid in children(self.process.pid)
                if b"resource_tracker" not in cmdline(pid)]
        self._remember(pids)
        return pids


def gunicorn_settings(extra_args: Sequence[str], workers: int, tmp: Path) -> dict[str, str]:
    """gunicorn's fully resolved settings for softserve's command line (``--print-config``).

    Resolved with the no-op app, so nothing heavy is imported. Raises RuntimeError.
    """
    port = free_port()
    # The config makes a metrics directory unless told one; give it a throwaway one here.
    env = gunicorn_env(None, port, workers, {"SOFTSERVE_METRICS_DIR": str(tmp / "metrics")})
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
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=priority(nice))
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
    cpu_before, wrk_before, busy_before = cpu_seconds(pids), children_cpu(), machine_busy()
    raw = run_wrk(args.wrk, server.url, scenario, load.seconds, load.threads, load.connections,
                  body_file, args.nice)
    cpu, wrk_cpu = cpu_seconds(pids) - cpu_before, children_cpu() - wrk_before
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
    check_scenario(server, scenario)
    if args.warmup > 0:
        run_wrk(args.wrk, server.url, scenario, args.warmup, load.threads, load.connections,
                body_file, args.nice)
    runs = [measure_once(server, scenario, load, args, body_file) for _ in range(args.repeat)]
    best = max(runs, key=lambda r: r.requests_per_s)
    best.runs_requests_per_s = [round(r.requests_per_s) for r in runs]
    best.non_2xx = sum(r.non_2xx for r in runs)
    best.socket_errors = {k: sum(r.socket_errors[k] for r in runs) for k in best.socket_errors}
    return best


# ---------------------------------------------------------------------------------- machine


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
