"""Connections (issue 20): 1, 64 and 1,000 keep-alive connections on single-row V2 JSON, and
how the connections spread over the workers.

One softserve gunicorn (``ctx.workers`` workers, the server's defaults) serves a 4 x 3 linear
model. For each point, wrk holds that many kept-alive connections (``-t`` = min(2, c)); meanwhile
this module samples each worker's open file descriptors, its RSS and the established
connections it holds (its socket fds matched by inode against the server port's ESTABLISHED
sockets in /proc/net/tcp). Then the spread: several short runs of 4 and of 64 connections, each
giving the share of the connections held by the busiest worker (1/workers is a perfect split,
1.0 one worker holding all).

wrk opens ``c`` connections at once and one file descriptor each: 1,000 connections need the
soft ``ulimit -n`` above ~1,100 for wrk and each worker; it is raised to the hard limit here
(children inherit it) if lower.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from bench.axes import Context, run_alone
from bench.measure import (NOISY, Load, Result, measure_once, run_wrk, start_gunicorn,
                           wait_for_quiet)
from bench.report import Target
from bench.scenarios import Scenario, random_rows, v2_json_body
from tests.support.server import Server
from tests.support.models import publish_linear_model
from tests.support.processes import proc_status

TITLE = "Many connections"
PANELS = 2

MODEL, FEATURES, CLASSES = "conn", 4, 3
POINTS = (1, 64, 1000)
SPREAD_POINTS = (4, 64)
SPREAD_RUNS, SPREAD_RUNS_QUICK = 5, 3
FDS_NEEDED = 4096
ESTABLISHED = "01"
LISTEN = "0A"


def _check(headers: dict[str, str], body: bytes) -> None:
    outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
    assert outputs["probabilities"]["shape"] == [1, CLASSES], outputs


def scenario() -> Scenario:
    """Single-row V2 JSON inference on the axis's model."""
    return Scenario("conn-v2-json-1", "V2 JSON infer, single row", "POST",
                    f"/v2/models/{MODEL}/infer", v2_json_body(random_rows(1, FEATURES)),
                    {"Content-Type": "application/json"}, 1, _check)


def raise_fd_limit(needed: int = FDS_NEEDED) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``needed`` (never above the hard
    limit); the servers and wrk started afterwards inherit it. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return int(soft)


def established_inodes(port: int, every_state: bool = False) -> set[int]:
    """Inodes of the ESTABLISHED TCP sockets whose local port is ``port`` (the server's side
    of its connections), from /proc/net/tcp and tcp6; with ``every_state``, of every socket
    on it but the listening one (closing ones too)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            wanted = fields[3] != LISTEN if every_state else fields[3] == ESTABLISHED
            if len(fields) > 9 and wanted and int(fields[1].rsplit(":", 1)[1], 16) == port:
                out.add(int(fields[9]))
    return out


def socket_inodes(pid: int) -> tuple[int, set[int]]:
    """A process's open fd count and the inodes of its sockets; (0, empty) once it is gone."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0, set()
    inodes = set()
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return len(names), inodes


def sample(pids: list[int], port: int) -> dict[str, list[int]]:
    """Per worker (in ``pids`` order): open fds, established connections held, VmRSS kB."""
    live = established_inodes(port)
    fds, conns, rss = [], [], []
    for pid in pids:
        count, inodes = socket_inodes(pid)
        fds.append(count)
        conns.append(len(inodes & live))
        rss.append(proc_status(pid).get("VmRSS", 0))
    return {"fds": fds, "held": conns, "rss_kb": rss}


def run_sampled(run: Any, pids: list[int], port: int, seconds: float) -> tuple[Any, dict]:
    """``run()`` in a thread; meanwhile, samples of the workers from 30 % to 90 % of
    ``seconds``. Returns run's result and the sample holding the most connections (the middle
    of the run, every connection open). Raises what ``run`` raised."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = run()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target)
    started = time.monotonic()
    thread.start()
    samples = []
    for at in (0.3, 0.5, 0.7, 0.9):
        delay = started + at * seconds - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if not thread.is_alive():
            break
        samples.append(sample(pids, port))
    thread.join()
    if "error" in box:
        raise box["error"]
    best = max(samples, key=lambda s: sum(s["held"]), default=sample(pids, port))
    return box["result"], best


def settle(pids: list[int], port: int, limit: float = 5) -> None:
    """Wait (up to ``limit`` s) until the workers hold no connection, closing ones included:
    the last run's would still count for a worker when the next run's arrive."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        left = established_inodes(port, every_state=True)
        if not any(socket_inodes(pid)[1] & left for pid in pids):
            return
        time.sleep(0.05)


def _args(ctx: Context) -> argparse.Namespace:
    # No quiet wait inside measure_once: the samples are timed from its start (waited before).
    return argparse.Namespace(quiet_wait=0, wrk=ctx.wrk, nice=ctx.nice)


def measure(ctx: Context) -> dict[str, Any]:
    soft_limit = raise_fd_limit()
    if soft_limit < max(POINTS) + 200:
        raise RuntimeError(f"ulimit -n is {soft_limit}: {max(POINTS)} connections need more; "
                           f"raise the hard limit (ulimit -Hn) to {FDS_NEEDED}")
    repository = ctx.tmp / "repository"
    publish_linear_model(repository, MODEL, FEATURES, CLASSES)
    chosen = scenario()
    body_file = ctx.tmp / "body"
    server = start_gunicorn(repository, ctx.workers, [], ctx.tmp, nice=ctx.nice)
    data: dict[str, Any] = {"workers": ctx.workers, "fd_soft_limit": soft_limit,
                            "points": [], "spread": [], "spread_off": []}
    try:
        pids = sorted(server.worker_pids())
        idle = sample(pids, server.port)
        data["idle"] = idle
        for connections in POINTS:
            load = Load(ctx.seconds, min(2, connections), connections)
            if ctx.warmup > 0:
                run_wrk(ctx.wrk, server.url, chosen, ctx.warmup, load.threads, connections,
                        body_file, ctx.nice)
            settle(pids, server.port)  # the warm-up's connections are all closed
            if ctx.quiet_wait > 0:
                other = wait_for_quiet(ctx.quiet_wait)
                if other >= NOISY:
                    ctx.log(f"connections: other processes still use {other:.2f} cores; "
                            "measuring anyway")
            ctx.log(f"connections: {connections} kept alive, {ctx.seconds:g} s")
            result: Result
            result, seen = run_sampled(
                lambda load=load: measure_once(server, chosen, load, _args(ctx), body_file),
                pids, server.port, ctx.seconds)
            data["points"].append({
                "connections": connections, "requests_per_s": result.requests_per_s,
                "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                "server_cpu_us_per_request": result.server_cpu_us_per_request,
                "non_2xx": result.non_2xx, "socket_errors": result.socket_errors,
                "other_cpu_cores": result.other_cpu_cores, **seen})
        data["spread"] = spread(ctx, server, chosen, body_file)
    finally:
        server.stop()
    # The same spread with balancing off: how the workers took connections before it.
    server = start_gunicorn(repository, ctx.workers, [], ctx.tmp, nice=ctx.nice,
                            env={"SOFTSERVE_BALANCE_CONNECTIONS": "0"})
    try:
        data["spread_off"] = spread(ctx, server, chosen, body_file, " (balancing off)")
    finally:
        server.stop()
    return data


def spread(ctx: Context, server: Server, chosen: Scenario, body_file: Path,
           note: str = "") -> list[dict[str, Any]]:
    """Short wrk runs of each of SPREAD_POINTS connections: per run, the connections each
    worker held mid-run and the busiest worker's share. Raises RuntimeError if wrk failed."""
    pids = sorted(server.worker_pids())
    runs = SPREAD_RUNS_QUICK if ctx.quick else SPREAD_RUNS
    out = []
    for connections in SPREAD_POINTS:
        shares = []
        held = []
        for _ in range(runs):
            settle(pids, server.port)
            _, seen = run_sampled(
                lambda c=connections: run_wrk(ctx.wrk, server.url, chosen, 1, min(2, c), c,
                                              body_file, ctx.nice),
                pids, server.port, 1.0)
            total = sum(seen["held"])
            held.append(seen["held"])
            if total:  # else wrk had not connected yet when sampled (a loaded machine)
                shares.append(max(seen["held"]) / total)
        ctx.log(f"connections: spread of {connections} over {ctx.workers} workers{note}, "
                f"{runs} runs: {held}")
        out.append({"connections": connections, "runs": held, "busiest_share": shares})
    return out


# ------------------------------------------------------------------------------- reporting


def _point(data: dict[str, Any], connections: int) -> dict[str, Any] | None:
    return next((p for p in data["points"] if p["connections"] == connections), None)


def targets(data: dict[str, Any]) -> list[Target]:
    out = []
    fair = 1 / max(1, data["workers"])
    for spread in data["spread"]:
        c = spread["connections"]
        if not spread["busiest_share"]:
            out.append(Target(f"{c} connections over {data['workers']} workers: busiest "
                              "worker's share", "", "", None))
            continue
        worst = max(spread["busiest_share"])
        # Balanced: no run leaves a worker with more than half again its fair share (for 2
        # workers and 4 connections: 3/1 is the most allowed; 4/0 is not).
        goal = min(1.0, fair * 1.5)
        out.append(Target(f"{c} connections over {data['workers']} workers: busiest worker's "
                          f"share, worst of {len(spread['busiest_share'])} runs", f"<= {goal:.2f}",
                          f"{worst:.2f}", worst <= goal + 1e-9))
    big = _point(data, max(POINTS))
    if big is not None:
        errors = big["non_2xx"] + sum(big["socket_errors"].values())
        out.append(Target(f"{max(POINTS)} keep-alive connections: errors", "0",
                          str(errors), errors == 0))
    return out


def markdown(data: dict[str, Any]) -> list[str]:
    workers = data["workers"]
    lines = [
        f"Single-row V2 JSON inference (4 x 3 linear model) on one softserve gunicorn with "
        f"{workers} workers and its defaults, wrk holding 1, 64 and 1,000 kept-alive "
        f"connections (soft `ulimit -n` {data['fd_soft_limit']}). File descriptors, "
        "connections and RSS per worker are sampled during the run (connections: the worker's "
        "socket fds that are ESTABLISHED on the server port).",
        "",
        "| connections | req/s | p50 ms | p99 ms | server CPU µs/req | fds per worker | "
        "connections per worker | RSS MB per worker | errors |",
        "|---:|---:|---:|---:|---:|---|---|---|---:|",
    ]
    for p in data["points"]:
        errors = p["non_2xx"] + sum(p["socket_errors"].values())
        lines.append(
            f"| {p['connections']} | {p['requests_per_s']:,.0f} | {p['p50_ms']:.2f} | "
            f"{p['p99_ms']:.2f} | {p['server_cpu_us_per_request']:.0f} | "
            f"{' / '.join(map(str, p['fds']))} | {' / '.join(map(str, p['held']))} | "
            f"{' / '.join(f'{kb / 1024:.0f}' for kb in p['rss_kb'])} | {errors} |")
    lines += ["", "wrk opens all its connections at once, in every run: at 1,000 the p99 includes "
                  "the first requests of connections still waiting in the listen backlog (the "
                  "workers take them over about a second, each at most a quarter ahead of the "
                  "other while they balance)."]
    idle = data.get("idle")
    if idle:
        lines += ["", f"Idle: {' / '.join(map(str, idle['fds']))} fds and "
                      f"{' / '.join(f'{kb / 1024:.0f}' for kb in idle['rss_kb'])} MB RSS per "
                      "worker."]
    lines += [
        "",
        "Spread: short wrk runs with fresh connections; per run, the connections each worker "
        f"held mid-run, and the busiest worker's share ({1 / max(1, workers):.2f} is an even "
        "split, 1.00 one worker holding all).",
        "",
        "| balancing | connections | runs (per worker) | busiest share: median | worst |",
        "|---|---:|---|---:|---:|",
    ]
    for label, key in (("on (default)", "spread"), ("off", "spread_off")):
        for s in data.get(key, []):
            runs = ", ".join("/".join(map(str, r)) for r in s["runs"])
            shares = s["busiest_share"]
            median = f"{statistics.median(shares):.2f}" if shares else "-"
            worst = f"{max(shares):.2f}" if shares else "-"
            lines.append(f"| {label} | {s['connections']} | {runs} | {median} | {worst} |")
    lines += [
        "",
        "Balancing (`SOFTSERVE_BALANCE_CONNECTIONS`, serving/worker.py): the workers share one "
        "listening socket and the kernel gives a new connection to whichever asks first; each "
        "worker publishes how many connections it holds in shared memory, and one holding more "
        "than the fewest + 1 (or + a quarter) leaves the next ones to the others.",
    ]
    return lines


def plot(axes: list[Any], data: dict[str, Any]) -> None:
    points = data["points"]
    xs = [p["connections"] for p in points]
    left = axes[0]
    left.plot(xs, [p["requests_per_s"] for p in points], "o-", color="C0", label="req/s")
    left.set_xscale("log")
    left.set_xlabel("kept-alive connections")
    left.set_ylabel("req/s", color="C0")
    left.set_title("Connections: throughput and p99")
    right = left.twinx()
    right.plot(xs, [p["p99_ms"] for p in points], "s--", color="C3", label="p99 ms")
    right.set_ylabel("p99 ms", color="C3")
    right.set_yscale("log")
    if len(axes) > 1:
        spread = axes[1]
        for offset, key, color, label in ((-0.1, "spread_off", "C3", "balancing off"),
                                          (0.1, "spread", "C2", "balancing on")):
            for i, s in enumerate(data.get(key, [])):
                shares = s["busiest_share"]
                spread.plot([i + offset] * len(shares), shares, "o", alpha=0.6, color=color,
                            label=label if i == 0 else None)
        spread.axhline(1 / max(1, data["workers"]), color="grey", linestyle=":",
                       label="even split")
        spread.set_xticks(range(len(data["spread"])),
                          [f"{s['connections']} conns" for s in data["spread"]])
        spread.set_ylim(0, 1.05)
        spread.set_ylabel("busiest worker's share")
        spread.set_title(f"Connections over {data['workers']} workers, per run")
        spread.legend(loc="lower right")


def main(argv: list[str] | None = None) -> int:
    return run_alone("connections", argv, "Throughput, p99, fds and memory with 1, 64 and "
                     "1,000 kept-alive connections, and their spread over the workers.")


if __name__ == "__main__":
    from bench import run_main

    run_main(main, "python -m bench.axes.connections")
