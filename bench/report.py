"""The benchmark's report: the targets (issues 7 and 14) met or not, markdown tables,
docs/benchmarks.md and docs/benchmarks.png, and the JSON a run can be rendered again from
(``--render``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import log
from bench.measure import NOISY, Result
from bench import FOREST_MODEL, FOREST_TREES, WIDE_CLASSES, WIDE_FEATURES, WIDE_MODEL
from bench.scenarios import (BASELINE_SCENARIOS, BATCH_ROWS, FOREST_SCENARIOS, SHORT_NAMES,
                             WIDE_SCENARIOS)

# The targets of issue 7 (and issue 14's wide batch), all measured within one run.
TARGET_OF_NOOP = 0.85  # single-row /predict and V2 JSON req/s ÷ the no-op app's
TARGET_OF_BASELINE = 1.3  # single-row /predict and V2 JSON req/s ÷ the FastAPI baseline's
TARGET_P99_MS = 5.0  # single-row p99 ...
TARGET_P99_CONNECTIONS = 16  # ... at this many connections
TARGET_COLD_START_S = 1.0
TARGET_RSS_BYTES = 80_000_000  # per serving worker with a model loaded: 80 MB (decimal)
TARGET_ROWS_PER_S = {f"v2-json-{BATCH_ROWS}": 1_000_000, f"predict-{BATCH_ROWS}": 500_000,
                     f"v2-binary-{BATCH_ROWS}": 2_000_000,
                     f"wide-v2-binary-{BATCH_ROWS}": 1_000_000}  # issue 14: F = 64, K = 10
SINGLE_ROW_TARGETS = ("predict-1", "v2-json-1")
SERVER_TITLES = {"softserve": "softserve", "noop": "no-op WSGI app",
                 "baseline": "FastAPI baseline",
                 "loop-nodrift": "softserve, SOFTSERVE_DRIFT_SAMPLE=0",
                 "loop-log10": "softserve, prediction log 10 %",
                 "loop-log100": "softserve, prediction log 100 %",
                 "lean": "softserve, optional features off"}
# Issue 20: single rows with every feature on and with the optional ones off, against the FastAPI
# baseline in the same run; the route's own cost: server CPU per request above the no-op app's
# on the same gunicorn command. (scenario, softserve's server, the baseline's scenario, goal)
SINGLE_ROW_ALL_ON = (("predict-1", "predict-1", 1.5), ("v2-json-1", "v2-json-1", 1.5),
                     ("lean-predict-1", "predict-1", 2.0), ("lean-v2-json-1", "v2-json-1", 2.0))
TARGET_ROUTE_COST_US = 60.0


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
    axes: dict[str, dict[str, Any]] = field(default_factory=dict)  # issue 20: bench.axes

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
    """The issue's targets, each with its figure from this run and whether it is met (only
    the axes' when no scenario ran: ``--scenarios none``)."""
    if not report.results and not report.sweep:
        return axes_targets(report)
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
    return out + single_row_targets(report) + axes_targets(report)


def single_row_targets(report: Report) -> list[Target]:
    """Issue 20: single rows with every feature on (softserve's defaults) and with the optional
    ones off (the lean server), each ÷ the FastAPI baseline and as its route's own cost (server
    CPU per request above the no-op app's); each figure states the CPU per request."""
    out: list[Target] = []
    for name, baseline_name, goal in SINGLE_ROW_ALL_ON:
        a, b = report.result(name, _server_of(name)), report.result(baseline_name, "baseline")
        what = f"{SHORT_NAMES[name]} ÷ {SERVER_TITLES['baseline']} (issue 20)"
        if a is None or b is None:
            out.append(Target(what, f">= {goal:g}", "", None))
            continue
        ratio = Ratio(a, b)
        out.append(Target(what, f">= {goal:g}",
                          f"{ratio.text()}; server CPU {_fmt(a.server_cpu_us_per_request)} vs "
                          f"{_fmt(b.server_cpu_us_per_request)} µs/req", ratio.value >= goal))
    noop = report.result("noop")
    for name, _, _ in SINGLE_ROW_ALL_ON:
        what = f"{SHORT_NAMES[name]}: the route's own cost, server CPU µs/req above the no-op app"
        goal_text = f"<= {TARGET_ROUTE_COST_US:g} µs"
        a = report.result(name, _server_of(name))
        if a is None or noop is None:
            out.append(Target(what, goal_text, "", None))
            continue
        cost = a.server_cpu_us_per_request - noop.server_cpu_us_per_request
        out.append(Target(what, goal_text,
                          f"{cost:,.0f} µs ({_fmt(a.server_cpu_us_per_request)} - "
                          f"{_fmt(noop.server_cpu_us_per_request)}){_busy_note(a)}",
                          cost <= TARGET_ROUTE_COST_US))
    return out


def _server_of(scenario: str) -> str:
    return "lean" if scenario.startswith("lean-") else "softserve"


def axes_targets(report: Report) -> list[Target]:
    """The targets of the axes measured in this run (issue 20), each axis's own."""
    from bench import axes

    return [t for name in axes.AXES if name in report.axes
            for t in axes.module(name).targets(report.axes[name])]


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
           f"Written by `make bench` (`python -m bench`) on {report.started}; rerun it rather than "
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
            f"The targets of issues 7, 14 and 20, each measured in this run: **{met} of {measured} "
            "met**"
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
            f"Batches are {BATCH_ROWS} rows; rows/s = req/s × rows per request."
            + (f" The rows marked F = {WIDE_FEATURES} go to `/v2/models/{WIDE_MODEL}/infer`, a "
               f"linear softmax classifier of {WIDE_FEATURES} features and {WIDE_CLASSES} "
               "classes with seeded random weights (issue 14), sent seeded random rows; the "
               "others to iris (4 features, 3 classes)."
               if any(r.scenario in WIDE_SCENARIOS for r in report.results) else "")
            + (f" The rows marked forest go to `/v2/models/{FOREST_MODEL}/infer`, a "
               f"scikit-learn random forest of {FOREST_TREES} trees fitted on iris, exported by "
               "skl2onnx and published by `python -m modelrepo import` (issue 15), sent the "
               "same iris rows as the linear iris model: the difference is what the ensemble "
               "costs." if any(r.scenario in FOREST_SCENARIOS for r in report.results) else ""),
            "",
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
    from bench import axes
    for name in axes.AXES:
        if name in report.axes:
            axis = axes.module(name)
            out += [f"## {axis.TITLE}", "", *axis.markdown(report.axes[name]), ""]
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
            ".venv/bin/python -m bench --help",
            "# compare settings without touching this file:",
            ".venv/bin/python -m bench --no-docs --scenarios single --no-sweep --workers 4",
            "# the report and plot again from a run saved with --json FILE:",
            ".venv/bin/python -m bench --render FILE",
            '.venv/bin/python -m bench --no-docs --scenarios single --no-sweep '
            '--gunicorn-args="--worker-class gthread --threads 4"',
            "# where a request's time goes (needs py-spy):",
            ".venv/bin/python -m bench.profile_requests",
            "```", "", f"This run: `{report.command}`", "",
            "How these are made and read, and earlier findings: "
            "[bench/README.md](../bench/README.md).", ""]
    path.write_text("\n".join(out))


SERVER_COLORS = {"softserve": "#1f77b4", "baseline": "#ff7f0e"}
SCENARIO_STYLES = {"predict-1": ("-", "o"), "v2-json-1": ("--", "s")}


def write_plot(report: Report, path: Path) -> bool:
    """One figure: req/s and p99 against connections (the sweep, softserve and the baseline),
    then each measured axis's panels (issue 20), two panels a row.

    Returns False, writing nothing, if matplotlib is missing or there is nothing to plot.
    """
    from bench import axes

    drawn = [(name, axes.module(name)) for name in axes.AXES if name in report.axes]
    drawn = [(name, axis) for name, axis in drawn if axis.PANELS]
    panels = (2 if report.sweep else 0) + sum(axis.PANELS for _, axis in drawn)
    if not panels:
        return False
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = (panels + 1) // 2
    fig, grid = plt.subplots(rows, 2, figsize=(12, 4.6 * rows + 0.8), squeeze=False)
    flat = list(grid.flat)
    busy = False
    if report.sweep:
        busy = _plot_sweep(report, flat[0], flat[1])
        flat = flat[2:]
    for name, axis in drawn:
        axis.plot(flat[:axis.PANELS], report.axes[name])
        flat = flat[axis.PANELS:]
    for ax in flat:  # an odd number of panels
        ax.set_visible(False)
    s, m = report.settings, report.machine
    base = s.get("baseline") or {}
    fig.suptitle(
        f"softserve ({s['workers']} gunicorn {str(s['worker_class']).rsplit('.', 1)[-1]} "
        "workers)" + (f" vs FastAPI + uvicorn ({base.get('workers')} workers)" if base else "")
        + f"\nwrk on the same {m['cores']} cores ({m['cpu']}), {report.started}"
        + (" (--quick)" if s.get("quick") else ""), fontsize=10)
    height = 4.6 * rows + 0.8
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.55 / height))
    if busy:
        fig.subplots_adjust(bottom=0.16 / rows)
        fig.text(0.01, 0.005, f"hollow markers: other programs used >= {NOISY} cores during that "
                 "point (its rate is low, its latency high); red: the point had errors",
                 fontsize=8, color="#555555")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plot_sweep(report: Report, rate_ax: Any, p99_ax: Any) -> bool:
    """The concurrency sweep's two panels; True if a point was busy or had errors."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    connections = sorted({r.connections for r in report.sweep})
    names = list(dict.fromkeys(r.scenario for r in report.sweep))
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
    seconds = (report.settings.get("sweep") or {}).get("seconds", 0)
    rate_ax.set_title(f"single rows: throughput (higher is better), {seconds:g} s a point",
                      fontsize=10)
    return busy


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
    if report.results:
        print(results_table(report.results))
    for table in (ceilings_table(report), baseline_table(report), sweep_table(report)):
        if table:
            print()
            print(table)
    if report.memory:
        print()
        print(memory_table(report))
    items = targets(report)
    print(f"\nsoftserve: {server_description(report)}\ntargets (issues 7, 14 and 20), "
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
