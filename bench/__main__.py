"""Load benchmark of the real server: softserve under gunicorn, a no-op app, a FastAPI baseline.

Trains an iris model into a temporary repository (never ./artifacts), publishes a wide one next
to it (``wide``: F = 64 features, K = 10 classes, a linear softmax classifier with seeded random
weights) and starts three servers on free 127.0.0.1 ports, each with its own log:

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
the same V2 JSON and binary ``/infer`` against the wide model (1 and 1000 rows of 64 features;
softserve only), the same V2 requests as iris's against ``forest``, a 100-tree scikit-learn
random forest imported with ``python -m modelrepo import`` (issue 15; needs the test extra's
scikit-learn and skl2onnx), single-row /predict against three more softserve servers that differ
from the defaults in one setting each (the loop scenarios, issue 17: drift counting off, the
prediction log at 10 % and at 100 %), the baseline right after softserve on each scenario it
supports (/predict and V2 JSON on iris). A concurrency sweep follows: single-row /predict and V2
JSON at 1, 4, 16 and 64 connections on softserve and the baseline. Writes docs/benchmarks.md (the
issue 7 targets, met or not, and the tables) and docs/benchmarks.png (req/s and p99 against
connections). A benchmark, not a test: ``make bench`` runs it, ``make test`` does not.

    .venv/bin/python -m bench --help
    make bench                                 # everything, 8 s per scenario, 5 s per sweep point
    BENCH_QUICK=1 make bench                   # every point, 2 s each: ~5 min, for development
    BENCH_SECONDS=3 make bench                 # quicker, noisier
    .venv/bin/python -m bench --no-docs --scenarios single --no-sweep \\
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
import datetime as dt
import importlib.util
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import (FOREST_MODEL, WIDE_CLASSES, WIDE_FEATURES, WIDE_MODEL, axes, log,
                   repository_to_serve, run_main)
from bench.measure import (NOOP_APP, Load, UvicornServer, gunicorn_settings, machine_facts,
                           measure, start_gunicorn)
from bench.report import TARGET_P99_CONNECTIONS, Report, finish, load_report
from bench.scenarios import (BASELINE_SCENARIOS, FOREST_SCENARIOS, LOOP_SERVERS, WIDE_SCENARIOS,
                             Scenario, check_answers, scenarios, select_scenarios)
from tests.support import ROOT
from tests.support.models import served_version
from tests.support.processes import proc_status
from tests.support.server import Server

DOCS = ROOT / "docs"
SWEEP_CONNECTIONS = (1, 4, 16, 64)


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
        prog="python -m bench",
        description="Load-test softserve (gunicorn), a no-op app on the same gunicorn command "
                    "and a FastAPI + uvicorn baseline with wrk; check the issue 7 targets; "
                    "write docs/benchmarks.md and docs/benchmarks.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("BENCH_SECONDS") or 8),
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
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
                        help="a quick run for development: every scenario, sweep point and "
                             "axis point, measured for 2 s after a 0.5 s warm-up, once, "
                             "waiting at most 2 s for quiet (env BENCH_QUICK=1)")
    parser.add_argument("--axes", default=os.environ.get("BENCH_AXES") or "all",
                        help="how cost grows (issue 20): all, none, or a comma-separated list "
                             "of: " + ", ".join(axes.AXES) + " (env BENCH_AXES)")
    parser.add_argument("--axis-seconds", type=float,
                        default=float(os.environ.get("BENCH_AXIS_SECONDS") or 5),
                        help="measured duration of each wrk run of the axes (env "
                             "BENCH_AXIS_SECONDS)")
    parser.add_argument("--scenarios", default="all",
                        help="all, none, single, batch, wide, forest, loop, lean, or a "
                             "comma-separated "
                             "list "
                             "of: "
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
                             "model, the first published, and a 'wide' one (F = 64, K = 10) "
                             "for the wide scenarios, and a 'forest' one (an imported tree "
                             "ensemble on iris's features) for the forest scenarios, which are "
                             "left out of 'all' without them) instead of training one into a "
                             "temporary directory")
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
    if (args.seconds < 1 or args.sweep_seconds < 1 or args.axis_seconds < 1 or args.threads < 1
            or args.connections < args.threads or args.workers < 1 or args.repeat < 1
            or args.baseline_workers < 1):
        parser.error("need --seconds >= 1, --sweep-seconds >= 1, --axis-seconds >= 1, "
                     "--threads >= 1, "
                     "--connections >= --threads, --workers >= 1, --baseline-workers >= 1, "
                     "--repeat >= 1")
    if args.quick:
        args.seconds = args.sweep_seconds = args.axis_seconds = 2.0
        args.warmup, args.repeat = min(args.warmup, 0.5), 1
        args.quiet_wait = min(args.quiet_wait, 2.0)
    try:
        args.axes = axes.select(args.axes)
    except ValueError as exc:
        parser.error(str(exc))
    known = {s.name for s in scenarios() if s.server == "softserve"}
    args.sweep_scenarios = [n.strip() for n in args.sweep_scenarios.split(",") if n.strip()]
    unknown = [n for n in args.sweep_scenarios if n not in known]
    if unknown:
        parser.error(f"unknown sweep scenario(s) {', '.join(unknown)}: choose from "
                     f"{', '.join(sorted(known))}")
    if args.nice < 0 and os.geteuid() != 0:
        parser.error("--nice below 0 needs root")
    return args


def _has_model(repository: Path, name: str) -> bool:
    try:
        served_version(repository, name)
    except RuntimeError:
        return False
    return True


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

    if not chosen and not sweep_names:
        report = Report(started=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                        machine=machine_facts(args.wrk), settings=_settings(args, {}, "-", None),
                        command=_command(argv))
        _measure_axes(report, args)
        return finish(report, args)
    extra = shlex.split(args.gunicorn_args)
    started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    with tempfile.TemporaryDirectory(prefix="softserve-bench-") as tmp_name, \
            contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        repository = repository_to_serve(args.repository, tmp)
        version_dir = served_version(repository)
        if any(s.name in WIDE_SCENARIOS for s in chosen) and not _has_model(repository,
                                                                            WIDE_MODEL):
            # Only a given repository can lack it; the bench's own always has it.
            if args.scenarios != "all":
                print(f"bench: the wide scenarios need a '{WIDE_MODEL}' model "
                      f"(F = {WIDE_FEATURES}, K = {WIDE_CLASSES}) in {repository}",
                      file=sys.stderr)
                return 2
            log(f"no '{WIDE_MODEL}' model in {repository}: leaving out the wide scenarios")
            chosen = [s for s in chosen if s.name not in WIDE_SCENARIOS]
            plan = [run for run in plan if run[1].name not in WIDE_SCENARIOS]
        if any(s.name in FOREST_SCENARIOS for s in chosen) and not _has_model(repository,
                                                                              FOREST_MODEL):
            # A given repository, or scikit-learn/skl2onnx missing (the test extra has them).
            if args.scenarios != "all":
                print(f"bench: the forest scenarios need a '{FOREST_MODEL}' model in "
                      f"{repository} (an imported tree ensemble on iris's 4 features; "
                      "pip install -e '.[test]' to let the bench make one)", file=sys.stderr)
                return 2
            log(f"no '{FOREST_MODEL}' model in {repository}: leaving out the forest scenarios")
            chosen = [s for s in chosen if s.name not in FOREST_SCENARIOS]
            plan = [run for run in plan if run[1].name not in FOREST_SCENARIOS]
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
        softserve = servers["softserve"] = stack.enter_context(start_gunicorn(
            repository, args.workers, [*extra, *control("softserve")], tmp, args.nice))
        worker_class, noop_class = softserve.worker_class(), None
        if any(s.server == "noop" for s in chosen):
            log("starting the no-op app on the same gunicorn command")
            noop = servers["noop"] = stack.enter_context(start_gunicorn(
                repository, args.workers, [*extra, *control("noop")], tmp, args.nice,
                app=NOOP_APP, name="noop"))
            noop_class = noop.worker_class()
            if noop_class != worker_class:
                log(f"warning: the no-op app runs {noop_class} workers, softserve "
                    f"{worker_class}")
        for name, settings in LOOP_SERVERS.items():  # the loop's settings, one server each
            if any(s.server == name for s in chosen):
                logged = "SOFTSERVE_PREDICTION_LOG_SAMPLE" in settings
                log(f"starting softserve with {settings}"
                    + (f" (prediction log in {tmp / name})" if logged else ""))
                servers[name] = stack.enter_context(start_gunicorn(
                    repository, args.workers, [*extra, *control(name)], tmp, args.nice,
                    name=name, env={**settings, "SOFTSERVE_PREDICTION_LOG": str(tmp / name)
                                    if "SOFTSERVE_PREDICTION_LOG_SAMPLE" in settings else ""}))
        if with_baseline:
            log(f"starting the FastAPI baseline: uvicorn, {args.baseline_workers} workers, "
                f"model {version_dir}")
            baseline = servers["baseline"] = stack.enter_context(UvicornServer(
                version_dir, args.baseline_workers, tmp, args.nice))
            baseline.wait_ready("/v2/health/live", timeout=60, settle=True)
        pids = {name: server.worker_pids() for name, server in servers.items()}
        start_memory = {name: {pid: proc_status(pid) for pid in p} for name, p in pids.items()}
        for name, server in servers.items():
            log(f"{name} at {server.url}: workers {pids[name]}"
                + (f" ({server.worker_class()})" if not isinstance(server, UvicornServer) else ""))
        check_answers(servers, [s for _, s, _ in [*plan, *sweep_plan]])

        report = Report(
            started=started, machine=machine_facts(args.wrk), cold_start_s=softserve.ready_after,
            settings=_settings(args, resolved, worker_class, noop_class,
                               control_socket=control_socket,
                               sweep=({"connections": args.sweep_connections,
                                       "seconds": args.sweep_seconds, "scenarios": sweep_names}
                                      if sweep_plan else None),
                               baseline=({"workers": args.baseline_workers,
                                          "command": shlex.join(servers["baseline"].command[1:])}
                                         if with_baseline else None)),
            command=_command(argv))
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
                 "end_kib": proc_status(pid).get("VmRSS", 0),
                 "peak_kib": proc_status(pid).get("VmHWM", 0)} for pid in pids[name]]
    # The scenarios' servers are stopped: each axis starts its own.
    _measure_axes(report, args)
    return finish(report, args)


def _settings(args: argparse.Namespace, resolved: dict[str, str], worker_class: str,
              noop_class: str | None, control_socket: str = "off",
              sweep: dict[str, Any] | None = None,
              baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"workers": args.workers, "worker_class": worker_class,
            "gunicorn_threads": int(resolved.get("threads") or 1),
            "keepalive": resolved.get("keepalive"),
            "gunicorn_args": args.gunicorn_args, "control_socket": control_socket,
            "noop_worker_class": noop_class,
            "threads": args.threads, "connections": args.connections,
            "seconds": args.seconds, "warmup": args.warmup,
            "quiet_wait": args.quiet_wait, "nice": args.nice, "repeat": args.repeat,
            "quick": args.quick, "axes": args.axes, "sweep": sweep, "baseline": baseline}


def _command(argv: Sequence[str] | None) -> str:
    return " ".join(
        [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items())
         if k.startswith("BENCH_") and k != "BENCH_ARGS"]
        + [shlex.join(["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])])])


def _measure_axes(report: Report, args: argparse.Namespace) -> None:
    """Each chosen axis in a temporary directory of its own; its figures go to the report."""
    for name in args.axes:
        t0 = time.monotonic()
        log(f"axis {name}: {axes.module(name).TITLE}")
        with tempfile.TemporaryDirectory(prefix=f"softserve-bench-{name}-") as tmp:
            report.axes[name] = axes.module(name).measure(axes.context(args, Path(tmp)))
        log(f"axis {name}: measured in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    run_main(main, "bench")
