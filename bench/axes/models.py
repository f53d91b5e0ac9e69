"""Many models (issue 20): what a repository of 1, 10 and 100 models costs a worker.

Each model has ``VERSIONS_ON_DISK`` (10) version directories, of which the server keeps the
newest 3 loaded (``SOFTSERVE_KEEP_VERSIONS``'s default): 100 models are 1,000 version
directories on disk and 300 loaded versions per worker. Every version is the same small linear
softmax classifier (F = 4, K = 3, built with onnx.helper, no torch), published for one model
through ``modelrepo.publish_version`` and copied to the others (their names rewritten), so
the repository is built in well under a second.

Per point, a real gunicorn (softserve's configuration, ``ctx.workers`` workers, every setting
at its default: the 2 s poll) is started on it and measured:

- start-up: from the process's start to the first answer of ``/v2/health/ready``
  (``Server.ready_after``), and to the last worker's "serving" log line (every worker has
  loaded everything);
- memory: each worker's VmRSS once idle, and the RSS one more loaded version costs,
  (RSS at 100 models - RSS at 1) / (loaded versions at 100 - at 1);
- the idle poll: the workers' CPU time over a few idle seconds, as % of one core (all
  workers together; it includes the metrics flush thread, so it is the whole idle cost), and
  the cost of one scan of the unchanged repository, in-process (thread CPU, median);
- a new version: a version published while the server runs, and the seconds until every
  worker's log says it loaded it (the default poll is 2 s, so ~1 s on average);
- single-row V2 JSON to one of the models with all of them loaded: wrk, -t2 -c32, req/s,
  p50, p99 and the workers' CPU per request.

``python -m bench.axes.models [--quick]`` measures it alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import modelrepo
from bench.axes import Context, run_alone
from bench.measure import Load, start_gunicorn
from bench.measure import measure as measure_wrk
from bench.report import Target
from bench.scenarios import Scenario, _check_v2_json, v2_json_body
from tests.support.models import linear_metadata, linear_model_bytes
from tests.support.processes import proc_status
from tests.support.server import SERVING_LINE, Server

TITLE = "Many models"
PANELS = 2

POINTS = (1, 10, 100)  # models in the repository
VERSIONS_ON_DISK = 10  # version directories per model
KEEP_VERSIONS = 3  # the server's default SOFTSERVE_KEEP_VERSIONS
FEATURES, CLASSES = 4, 3
POLL_SECONDS = 2.0  # the server's default SOFTSERVE_POLL_SECONDS (left unset)

# The targets.
RSS_PER_VERSION_MIB = 2.0
READY_SECONDS = 2.0
IDLE_POLL_PERCENT = 1.0


def model_name(i: int) -> str:
    return f"m{i:03d}"


# ------------------------------------------------------------------------------ repositories


def build_template(tmp: Path) -> Path:
    """One model with ``VERSIONS_ON_DISK`` versions, published through modelrepo."""
    root = tmp / "template"
    model_bytes = linear_model_bytes(FEATURES, CLASSES, seed=20)
    metadata = linear_metadata(FEATURES, CLASSES)
    for _ in range(VERSIONS_ON_DISK):
        modelrepo.publish_version(root, model_name(0), model_bytes, dict(metadata))
    return root / model_name(0)


def build_repository(template: Path, root: Path, models: int) -> None:
    """``models`` copies of the template model, each with its own name in its files."""
    root.mkdir(parents=True)
    for i in range(models):
        target = root / model_name(i)
        shutil.copytree(template, target)
        if i == 0:
            continue
        for version in modelrepo.version_dirs(target).values():
            path = version / modelrepo.METADATA_FILE
            metadata = json.loads(path.read_text())
            metadata["name"] = model_name(i)
            path.write_text(json.dumps(metadata))
        config = target / modelrepo.CONFIG_FILE
        config.write_text(config.read_text().replace(f'"{model_name(0)}"', f'"{model_name(i)}"'))


# ------------------------------------------------------------------------------- measuring


def _log_lines(server: Server, marker: str) -> list[dict[str, Any]]:
    out = []
    for line in server.log().splitlines():
        if marker in line and line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _log_time(entry: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(entry["time"]).timestamp()


def cpu_ns(pids: Sequence[int]) -> int:
    """Nanoseconds these processes' threads have run (/proc/<pid>/task/*/schedstat): finer
    than the 10 ms ticks of /proc/<pid>/stat, which an idle second of a worker is below."""
    total = 0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total


def scan_cost(root: Path, scans: int) -> dict[str, float]:
    """One scan of an unchanged repository, in this process: (thread CPU ms median, wall ms
    median) over ``scans`` scans after the first (which loads everything)."""
    from serving.repository import RACY_SECONDS, ModelRepository  # onnxruntime: only here

    repository = ModelRepository(root, keep_versions=KEEP_VERSIONS)
    started = time.perf_counter()
    repository._scan()  # not scan(): no heap freeze in the benchmark's own process
    first = time.perf_counter() - started
    # A directory changed under RACY_SECONDS ago is looked at in full at every scan: the
    # repository was just built, so wait as a server's repository would have long before.
    time.sleep(max(0.0, RACY_SECONDS + 0.1 - first))
    repository._scan()
    cpu, wall = [], []
    for _ in range(scans):
        c0, w0 = time.thread_time(), time.perf_counter()
        repository._scan()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    repository.close()
    return {"first_scan_s": first, "scan_cpu_ms": statistics.median(cpu) * 1e3,
            "scan_wall_ms": statistics.median(wall) * 1e3}


def new_version_served(server: Server, root: Path, name: str, workers: int,
                       timeout: float = 20) -> dict[str, float]:
    """Publish the next version of ``name``; seconds until every worker logged it loaded.
    Raises RuntimeError if they do not within ``timeout``."""
    metadata, model_bytes = modelrepo.read_version(max(
        modelrepo.version_dirs(root / name).items())[1])
    published = modelrepo.publish_version(root, name, model_bytes, metadata)
    at = time.time()
    marker = f"loaded model {name} version {published.version} "
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = _log_lines(server, marker)
        if len(lines) >= workers:
            loads = [float(e["message"].split(" in ", 1)[1].split(" ms", 1)[0]) for e in lines]
            return {"seconds": max(_log_time(e) for e in lines) - at,
                    "load_ms": statistics.median(loads)}
        time.sleep(0.02)
    raise RuntimeError(f"version {published.version} of {name} not loaded by {workers} workers "
                       f"within {timeout} s:\n{server.log()[-3000:]}")


def measure_point(ctx: Context, template: Path, models: int) -> dict[str, Any]:
    root = ctx.tmp / f"repository-{models}"
    t0 = time.perf_counter()
    build_repository(template, root, models)
    built = time.perf_counter() - t0
    ctx.log(f"models {models}: {models * VERSIONS_ON_DISK} version directories built in "
            f"{built:.2f} s; measuring a scan in-process")
    scan = scan_cost(root, 5 if ctx.quick else 20)
    log_dir = ctx.tmp / f"logs-{models}"
    log_dir.mkdir()
    # Start-up is what other programs on the machine disturb most: the best of a few starts
    # (the last one stays up for the rest).
    starts = []
    for attempt in range(2 if ctx.quick else 3):
        wall_start = time.time()
        server = start_gunicorn(root, ctx.workers, [], log_dir, ctx.nice)
        serving = _log_lines(server, SERVING_LINE)
        # The workers' CPU from fork to idle (imports, the first scan's loads): unlike the
        # times above, not stretched by other programs.
        boot_cpu = cpu_ns(server.worker_pids()) / 1e9 / ctx.workers
        starts.append({"ready_s": server.ready_after, "cpu_s_per_worker": boot_cpu,
                       "all_serving_s": max(_log_time(e) for e in serving) - wall_start
                       if serving else None})
        if attempt < (1 if ctx.quick else 2):
            server.stop()
    try:
        loaded_lines = _log_lines(server, '"message":"loaded model ')
        pids = server.worker_pids()
        status = [proc_status(pid) for pid in pids]
        idle = 3.0 if ctx.quick else 6.0
        before = cpu_ns(pids)
        time.sleep(idle)
        idle_cpu = (cpu_ns(pids) - before) / 1e9
        rss_after_idle = [proc_status(pid).get("VmRSS", 0) for pid in pids]
        name = model_name(models - 1)  # the last one: sorted last in every listing
        rows = [[5.1, 3.5, 1.4, 0.2]]
        scenario = Scenario(f"models-{models}", f"V2 JSON infer, 1 row, one of {models} models",
                            "POST", f"/v2/models/{name}/infer", v2_json_body(rows),
                            {"Content-Type": "application/json"}, 1,
                            _check_v2_json(1, CLASSES))
        args = argparse.Namespace(quiet_wait=ctx.quiet_wait, wrk=ctx.wrk, nice=ctx.nice,
                                  warmup=ctx.warmup, repeat=1)
        result = measure_wrk(server, scenario, Load(ctx.seconds, 2, 32), args,
                         ctx.tmp / "body.json")
        # Each publish comes right after the workers' last poll saw the previous one: wait a
        # different share of the poll first, so the runs sample the whole wait, not its worst.
        runs = 1 if ctx.quick else 3
        switches = []
        for i in range(runs):
            time.sleep((i + 0.5) / runs * POLL_SECONDS)
            switches.append(new_version_served(server, root, model_name(i % models),
                                               ctx.workers))
    finally:
        server.stop()
    return {
        "models": models,
        "version_dirs": models * VERSIONS_ON_DISK,
        "loaded_per_worker": len(loaded_lines) / max(1, ctx.workers),
        "build_s": built,
        "ready_s": min(s["ready_s"] for s in starts),
        "all_serving_s": min((s["all_serving_s"] for s in starts
                              if s["all_serving_s"] is not None), default=None),
        "starts": starts,
        "start_cpu_s": min(s["cpu_s_per_worker"] for s in starts),
        "rss_mib": [s.get("VmRSS", 0) / 1024 for s in status],
        "hwm_mib": [s.get("VmHWM", 0) / 1024 for s in status],
        "rss_after_idle_mib": [r / 1024 for r in rss_after_idle],
        "idle_seconds": idle,
        "idle_cpu_percent": idle_cpu / idle * 100,
        **scan,
        "new_version_s": [s["seconds"] for s in switches],
        "new_version_load_ms": [s["load_ms"] for s in switches],
        "requests_per_s": result.requests_per_s,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "cpu_us_per_request": result.server_cpu_us_per_request,
        "errors": result.non_2xx + sum(result.socket_errors.values()),
        "other_cpu_cores": result.other_cpu_cores,
    }


def measure(ctx: Context) -> dict[str, Any]:
    template = build_template(ctx.tmp)
    points = []
    for models in POINTS:
        points.append(measure_point(ctx, template, models))
        p = points[-1]
        ctx.log(f"models {models}: ready {p['ready_s']:.2f} s, RSS "
                f"{statistics.mean(p['rss_mib']):.1f} MiB/worker, idle "
                f"{p['idle_cpu_percent']:.2f} % of a core, scan {p['scan_cpu_ms']:.1f} ms, "
                f"{p['requests_per_s']:.0f} req/s")
    errors = sum(p["errors"] for p in points)
    if errors:
        raise RuntimeError(f"many models: {errors} failed requests under wrk")
    return {"points": points, "workers": ctx.workers, "quick": ctx.quick,
            "seconds": ctx.seconds, "keep_versions": KEEP_VERSIONS,
            "versions_on_disk": VERSIONS_ON_DISK, "shape": [FEATURES, CLASSES],
            "poll_seconds": POLL_SECONDS}


# -------------------------------------------------------------------------------- reporting


def _mean(values: Sequence[float]) -> float:
    return statistics.mean(values) if values else 0.0


def rss_per_version(data: dict[str, Any]) -> float | None:
    """MiB of worker RSS one more loaded version costs: between the fewest and most models."""
    points = data["points"]
    if len(points) < 2:
        return None
    low, high = points[0], points[-1]
    versions = high["loaded_per_worker"] - low["loaded_per_worker"]
    if versions <= 0:
        return None
    return (_mean(high["rss_mib"]) - _mean(low["rss_mib"])) / versions


def _largest(data: dict[str, Any]) -> dict[str, Any]:
    return max(data["points"], key=lambda p: p["models"])


def targets(data: dict[str, Any]) -> list[Target]:
    per_version = rss_per_version(data)
    big = _largest(data)
    out = [Target("Many models: worker RSS per loaded version",
                  f"< {RSS_PER_VERSION_MIB:g} MB",
                  "" if per_version is None else f"{per_version * 1024:.0f} KiB",
                  None if per_version is None else per_version * 1.048576 < RSS_PER_VERSION_MIB),
           Target(f"Many models: ready with {big['models']} models",
                  f"< {READY_SECONDS:g} s", f"{big['ready_s']:.2f} s",
                  big["ready_s"] < READY_SECONDS),
           Target(f"Many models: idle poll, {big['version_dirs']:,} version directories",
                  f"< {IDLE_POLL_PERCENT:g} % of a core",
                  f"{big['idle_cpu_percent']:.2f} % ({data['workers']} workers)",
                  big["idle_cpu_percent"] < IDLE_POLL_PERCENT)]
    return out


def markdown(data: dict[str, Any]) -> list[str]:
    per_version = rss_per_version(data)
    workers = data["workers"]
    poll = data["poll_seconds"]
    out = [
        f"Repositories of {', '.join(str(p['models']) for p in data['points'])} models, each "
        f"with {data['versions_on_disk']} version directories of a linear classifier "
        f"(F = {data['shape'][0]}, K = {data['shape'][1]}), of which each worker keeps the "
        f"newest {data['keep_versions']} loaded. One gunicorn per point, {workers} workers, "
        f"every setting at its default (the repository polled every {poll:g} s). "
        "*ready*: process start to the first answer of `/v2/health/ready`; *all serving*: to "
        "the last worker's `serving` log line; *start-up CPU*: a worker's CPU from fork to "
        "idle, which other programs do not stretch (each the best of 2-3 starts). RSS: each "
        "worker's VmRSS once idle (mean; peak VmHWM). *idle CPU*: the workers' CPU over "
        f"{data['points'][0]['idle_seconds']:g} s idle, all workers, % of one core (the poll "
        "and the metrics flush). *scan*: one scan of the unchanged repository in-process "
        "(thread CPU, median; the poll's share of a core per worker is that over the poll). "
        "*new version*: a version published while it runs, at spread points of the poll "
        "interval, until every worker's log says it has loaded it (median of the runs: about "
        "half the poll plus the load). Single-row V2 JSON to the last model: wrk -t2 -c32, "
        f"{data['seconds']:g} s.",
        "",
        "| models | version dirs | loaded per worker | ready s | all serving s | start-up CPU s "
        "per worker | RSS MiB per worker (peak) | idle CPU % core | scan ms | poll share % "
        "core per worker | new version s | req/s | p50 ms | p99 ms | CPU µs/req |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in data["points"]:
        serving = "–" if p["all_serving_s"] is None else f"{p['all_serving_s']:.2f}"
        out.append(
            f"| {p['models']} | {p['version_dirs']:,} | {p['loaded_per_worker']:g} | "
            f"{p['ready_s']:.2f} | {serving} | {p.get('start_cpu_s', 0):.2f} | "
            f"{_mean(p['rss_mib']):.1f} "
            f"({max(p['hwm_mib']):.1f}) | {p['idle_cpu_percent']:.2f} | "
            f"{p['scan_cpu_ms']:.2f} | {p['scan_cpu_ms'] / (poll * 1e3) * 100:.3f} | "
            f"{statistics.median(p['new_version_s']):.2f} | {p['requests_per_s']:,.0f} | "
            f"{p['p50_ms']:.2f} | {p['p99_ms']:.2f} | {p['cpu_us_per_request']:.0f} |")
    out.append("")
    big = _largest(data)
    loads = [ms for p in data["points"] for ms in p["new_version_load_ms"]]
    if per_version is not None:
        out.append(f"One more loaded version costs a worker {per_version * 1024:.0f} KiB of RSS "
                   f"(the {big['models']}-model point against the "
                   f"{data['points'][0]['models']}-model one): an onnxruntime session of a "
                   "small graph (~85-120 KiB, arena on) and its metadata, so every version "
                   "is loaded at start-up, none lazily. Loading all "
                   f"{big['loaded_per_worker']:g} versions took {big['first_scan_s']:.2f} s "
                   "in-process (one thread, no server); a new version's load took a median "
                   f"{statistics.median(loads):.1f} ms in the workers." if loads else "")
    out += ["", "Before issue 20 every poll listed each model's directory and stat'ed each "
            "kept version's files: ~10-15 ms of CPU per scan with 100 models, ~0.5 % of a core "
            "per worker at the 2 s poll (1.0 % for two workers idle in a first run of this "
            "axis). A poll now keeps an unchanged model's state on two stats (its directory "
            "and `traffic.json`), and looks at everything every 15th poll "
            "(`serving/repository.py`)."]
    return out


def plot(axes: list[Any], data: dict[str, Any]) -> None:
    points = data["points"]
    models = [p["models"] for p in points]
    rss_ax, time_ax = axes[0], axes[1]
    rss_ax.plot(models, [_mean(p["rss_mib"]) for p in points], "o-", label="RSS (idle)")
    rss_ax.plot(models, [max(p["hwm_mib"]) for p in points], "s--", label="peak RSS (VmHWM)")
    rss_ax.set_title(f"Many models: worker memory ({data['keep_versions']} of "
                     f"{data['versions_on_disk']} versions loaded a model)")
    rss_ax.set_ylabel("MiB per worker")
    time_ax.plot(models, [p["ready_s"] for p in points], "o-", label="ready (first answer)")
    time_ax.plot(models, [p["all_serving_s"] or 0 for p in points], "s--",
                 label="every worker serving")
    time_ax.plot(models, [statistics.median(p["new_version_s"]) for p in points], "^:",
                 label=f"new version served (poll {data['poll_seconds']:g} s)")
    time_ax.axhline(READY_SECONDS, color="grey", linewidth=0.8, linestyle=":")
    time_ax.set_title("Many models: start-up and a new version")
    time_ax.set_ylabel("seconds")
    time_ax.set_ylim(bottom=0)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(models)
        ax.set_xticklabels([str(m) for m in models])
        ax.set_xlabel("models in the repository")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)


def main(argv: Sequence[str] | None = None) -> int:
    return run_alone("models", argv, "Many models (issue 20): RSS, start-up, the idle poll, a "
                     "new version and single-row latency with 1, 10 and 100 models of 10 "
                     "version directories each (3 loaded).")


if __name__ == "__main__":
    sys.exit(main())
