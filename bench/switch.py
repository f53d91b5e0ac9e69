"""Request latency while the served version switches (issue 12).

Trains iris into a temporary repository, starts the real gunicorn (``serving/gunicorn.conf.py``,
2 workers, ``SOFTSERVE_POLL_SECONDS`` 0.5) on a free 127.0.0.1 port, and drives steady
single-row ``POST /predict`` load from client processes, one kept-alive connection each, paced
to ``--rate`` requests/s in all. Meanwhile it publishes a new version and rolls it back, in
turn, ``--switches`` times. Each worker's watcher logs when it loaded or unloaded a version; a
request that overlapped such a moment (``--window-before`` seconds before the log line, which
the load precedes, to ``--window-after`` after) is a *switch* request, every other one is
*baseline*. Prints max, p50, p99 and p99.9 of both, the worst request around each load event,
and the workers' garbage collections (a ``sitecustomize`` hook on the server's PYTHONPATH logs
them: ``serving/`` is measured as it is).

    .venv/bin/python -m bench.switch                      # the default run, ~40 s
    .venv/bin/python -m bench.switch --switches 60 --realtime 10 --json /tmp/switch.json
    .venv/bin/python -m bench.switch --in-process         # where a load's time goes

``--in-process`` starts no server: it builds the app as a worker does, calls it (WSGI
``/predict``) in a loop thread, and has a watcher thread scan after each publish or rollback
(done by another process). It shows each scan's wall time, the longest request overlapping
it, the repository's own timing of each load (read and verify, session, warm-up run), every
garbage collection with the longest request it overlapped, and the steps alone.

Latency is measured in the client from send to the last byte of the answer, so it includes
the client's own scheduling: on a busy machine the baseline's tail grows too. Compare switch
with baseline of the same run, and repeat runs; ``--realtime`` (root) takes most of another
process's noise out.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import datetime as dt
import gc
import hashlib
import http.client
import io
import json
import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

ROW = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
HEADERS = {"Content-Type": "application/json"}
LOAD_EVENTS = ("loaded model", "unloaded model", "refusing model")


# --- the client processes ---------------------------------------------------------------------


def client(port: int, rate: float, stop_at: float, out: str) -> None:
    """Send ``/predict`` at ``rate``/s (0: back to back) on one kept-alive connection until the
    wall clock passes ``stop_at``; write (wall start ns, latency ns, status) rows to ``out``.

    A late request is sent at once, but the schedule does not catch up in a burst.
    """
    # Arrays, and no cyclic collector: a list of tuples would grow until the client's own full
    # collections took tens of ms, and those would be measured as the server's latency.
    gc.disable()
    walls, latencies, statuses = array.array("q"), array.array("q"), array.array("h")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    period = 1.0 / rate if rate > 0 else 0.0
    next_at = time.perf_counter()
    while time.time() < stop_at:
        if period:
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            next_at = max(next_at + period, time.perf_counter())
        wall, start = time.time_ns(), time.perf_counter_ns()
        try:
            conn.request("POST", "/predict", ROW, HEADERS)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            status = 0
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies.append(time.perf_counter_ns() - start)
        walls.append(wall)
        statuses.append(status)
    conn.close()
    with open(out, "w") as f:
        json.dump(list(zip(walls, latencies, statuses)), f)


# --- the figures ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0-100) of already sorted values; nan if none."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def summary(latencies_ms: list[float]) -> dict[str, float]:
    values = sorted(latencies_ms)
    return {"requests": len(values), "p50": percentile(values, 50),
            "p99": percentile(values, 99), "p99.9": percentile(values, 99.9),
            "max": values[-1] if values else float("nan")}


def load_events(log_text: str, after: float) -> list[dict[str, Any]]:
    """The repository's loaded/unloaded/refusing lines logged after wall time ``after``."""
    events = []
    for line in log_text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        message = record.get("message", "")
        if record.get("logger") != "softserve.repository" or not message.startswith(LOAD_EVENTS):
            continue
        at = dt.datetime.fromisoformat(record["time"]).timestamp()
        if at >= after:
            events.append({"at": at, "pid": record.get("pid"), "message": message})
    return events


def classify(requests: list[tuple[int, int, int]], events: list[dict[str, Any]],
             before: float, after: float) -> tuple[list[float], list[float], list[float]]:
    """Latencies (ms) of switch requests, of baseline requests, and the worst per event."""
    windows = sorted((e["at"] - before, e["at"] + after) for e in events)
    worst = [0.0] * len(windows)
    switch, baseline = [], []
    for wall_ns, latency_ns, _ in requests:
        start, ms = wall_ns / 1e9, latency_ns / 1e6
        end = start + ms / 1e3
        hit = False
        for i, (w0, w1) in enumerate(windows):
            if start <= w1 and end >= w0:
                hit = True
                worst[i] = max(worst[i], ms)
        (switch if hit else baseline).append(ms)
    return switch, baseline, worst


def train(tmp: Path) -> Path:
    """Train iris version 1 into ``tmp/repository`` with the training CLI, in a child process:
    torch stays out of this process's heap."""
    from tests.support.models import train_in_subprocess

    repository = tmp / "repository"
    train_in_subprocess(repository)
    return repository


def prioritise(args: argparse.Namespace) -> None:
    """Apply --realtime to this process; what it starts from now on inherits them."""
    if args.realtime:
        # Round-robin real-time priority: other processes on a shared machine no longer preempt
        # the server or the clients (paced load, so nothing is starved; the kernel also keeps
        # 5% of each second for normal tasks).
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(args.realtime))


# --- one run against gunicorn -----------------------------------------------------------------

# Imported by every Python process of the server (PYTHONPATH): logs each garbage collection of
# generation 2, and any other taking 1 ms or more, with its process and thread — the workers'
# collections, as they happen, without touching serving/.
GC_HOOK = """\
import gc, os, threading, time

_path = os.environ.get("BENCH_SWITCH_GC_LOG")
_started = [0.0, 0.0]


def _on_gc(phase, info):
    if phase == "start":
        _started[:] = [time.perf_counter(), time.thread_time()]
        return
    ms = (time.perf_counter() - _started[0]) * 1e3
    if info["generation"] == 2 or ms >= 1.0:
        cpu = (time.thread_time() - _started[1]) * 1e3
        line = "%.6f %d %d %.3f %.3f %s\\n" % (time.time(), os.getpid(), info["generation"], ms,
                                               cpu, threading.current_thread().name)
        fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, line.encode())
        os.close(fd)


if _path:
    gc.callbacks.append(_on_gc)
"""


def publish(repository: Path) -> int:
    """Publish version 1's model again as the next version (a retrain, minus the training)."""
    import modelrepo

    metadata, model_bytes = modelrepo.read_version(repository / "iris" / "1")
    return modelrepo.publish_version(repository, "iris", model_bytes, metadata).version


def rollback(repository: Path) -> None:
    from modelrepo.__main__ import cmd_rollback

    with contextlib.redirect_stdout(io.StringIO()):
        if cmd_rollback(repository, "iris", None) != 0:
            raise RuntimeError("modelrepo rollback failed")


def run_server(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from tests.support.server import start_server

    repository = train(tmp)
    hook = tmp / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(GC_HOOK)
    gc_log = tmp / "gc.log"
    prioritise(args)
    server = start_server(repository, tmp, workers=args.workers,
                          env={"SOFTSERVE_POLL_SECONDS": str(args.poll),
                               "PYTHONPATH": os.pathsep.join(
                                   filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
                               "BENCH_SWITCH_GC_LOG": str(gc_log)},
                          ready_path="/v2/health/ready")
    try:
        started = time.time()
        seconds = args.warmup + args.switches * args.interval + args.settle
        stop_at = started + seconds
        spawn = multiprocessing.get_context("spawn")
        outs = [str(tmp / f"client-{i}.json") for i in range(args.clients)]
        procs = [spawn.Process(target=client, args=(server.port, args.rate / args.clients,
                                                    stop_at, out)) for out in outs]
        for p in procs:
            p.start()
        time.sleep(args.warmup)
        switches = []
        for i in range(args.switches):
            at = time.time()
            if i % 2 == 0:
                switches.append((at, f"publish version {publish(repository)}"))
            else:
                rollback(repository)
                switches.append((at, "rollback"))
            time.sleep(max(0.0, started + args.warmup + (i + 1) * args.interval - time.time()))
        for p in procs:
            p.join(seconds + 60)
        requests: list[tuple[int, int, int]] = []
        for out in outs:
            requests += [tuple(r) for r in json.loads(Path(out).read_text())]
        # Not measured: the clients' connect and first requests, and their last half second,
        # when the first to stop write out their figures while others still send.
        measured = (started + min(1.0, args.warmup), stop_at - min(0.5, args.settle))
        requests = [r for r in requests if measured[0] <= r[0] / 1e9 < measured[1]]
        seconds = measured[1] - measured[0]
    finally:
        code = server.stop()
    log_text = server.log()
    if code != 0 or "Traceback" in log_text:
        raise RuntimeError(f"gunicorn exited with {code} or logged a traceback:\n{log_text}")
    events = load_events(log_text, started)
    switch, baseline, worst = classify(requests, events, args.window_before, args.window_after)
    workers = {e["pid"] for e in events}
    collections = []
    for line in (gc_log.read_text().splitlines() if gc_log.exists() else []):
        at, pid, generation, ms, cpu, thread = line.split(" ", 5)
        if started <= float(at) <= stop_at and int(pid) in workers:  # not at their exit
            collections.append({"at": float(at), "pid": int(pid), "generation": int(generation),
                                "ms": float(ms), "cpu_ms": float(cpu), "thread": thread})
    return {"requests": len(requests), "failed": sum(1 for r in requests if r[2] != 200),
            "seconds": seconds, "started": started, "switches": switches, "events": events,
            "collections": collections, "switch": summary(switch),
            "baseline": summary(baseline), "all": summary(switch + baseline),
            "worst_per_event": worst,
            "slowest": [(r[0] / 1e9 - started, r[1] / 1e6)
                        for r in sorted(requests, key=lambda r: -r[1])[:10]]}


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"{result['requests']} requests in {result['seconds']:.1f} s "
          f"({result['requests'] / result['seconds']:.0f}/s), {result['failed']} failed; "
          f"{args.clients} clients at {args.rate or 'max'} req/s in all; "
          f"{len(result['switches'])} switches, {len(result['events'])} worker load events")
    print(f"{'requests':<10}{'count':>8}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'max ms':>9}")
    for name in ("baseline", "switch", "all"):
        s = result[name]
        print(f"{name:<10}{s['requests']:>8}{s['p50']:>9.2f}{s['p99']:>9.2f}{s['p99.9']:>10.2f}"
              f"{s['max']:>9.2f}")
    worst = sorted(result["worst_per_event"])
    if worst:
        print(f"worst request per load event: median {statistics.median(worst):.2f} ms, "
              f"p90 {percentile(worst, 90):.2f} ms, max {worst[-1]:.2f} ms")
    print("the 10 load events with the worst request around them (s after start, ms, what):")
    events = sorted(zip(sorted(result["events"], key=lambda e: e["at"]),
                        result["worst_per_event"]), key=lambda ew: -ew[1])[:10]
    for event, worst_ms in sorted(events, key=lambda ew: ew[0]["at"]):
        message = event["message"].split(" from ")[0] + (
            " in " + event["message"].split(" in ", 1)[1] if " in " in event["message"] else "")
        print(f"  {event['at'] - result['started']:6.2f} {worst_ms:7.2f}  pid {event['pid']}: "
              f"{message}")
    print("the workers' garbage collections of generation 2 or of >= 1 ms (s after start, pid, "
          "thread, generation, ms, thread CPU ms):")
    for c in result["collections"]:
        print(f"  {c['at'] - result['started']:6.2f} {c['pid']} {c['thread']:<16} "
              f"{c['generation']} {c['ms']:7.2f} {c['cpu_ms']:7.2f}")
    if not result["collections"]:
        print("  none")


# --- in-process: where a load's time goes -----------------------------------------------------

PUBLISH = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
           "from bench.switch import publish, rollback; "
           "(publish if sys.argv[3] == 'publish' else rollback)(Path(sys.argv[2]))")


class _Records(logging.Handler):
    """Keeps the repository's log records (and prints none)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def run_in_process(args: argparse.Namespace, tmp: Path) -> None:
    import numpy as np

    import modelrepo
    from serving.model import LoadedModel

    repository = train(tmp)
    prioritise(args)
    # The worker's heap: the whole app, built as gunicorn's worker builds it.
    os.environ["SOFTSERVE_MODEL_REPOSITORY"] = str(repository)
    records = _Records()
    logging.getLogger("softserve").addHandler(records)  # create_app then adds no stdout handler
    from serving import create_app

    app = create_app({"poll_seconds": 0, "access_log": False})
    repo = app.extensions["softserve"]
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "SCRIPT_NAME": "",
               "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
               "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_TYPE": "application/json",
               "CONTENT_LENGTH": str(len(ROW)), "wsgi.url_scheme": "http",
               "wsgi.errors": sys.stderr, "wsgi.multithread": False,
               "wsgi.multiprocess": True, "wsgi.run_once": False}

    # The request loop: one WSGI /predict after another, as the worker's loop thread calls the
    # app. Arrays, not lists of tuples: the measurement must not feed the garbage collector.
    ends, lengths = array.array("d"), array.array("d")
    stop = threading.Event()

    def serve() -> None:
        statuses: list[str] = []
        while not stop.is_set():
            t0 = time.perf_counter()
            statuses.clear()
            body = b"".join(app({**environ, "wsgi.input": io.BytesIO(ROW)},
                                lambda status, headers, exc_info=None: statuses.append(status)))
            if not statuses[0].startswith("200"):
                raise RuntimeError(f"/predict answered {statuses[0]}: {body!r}")
            time.sleep(0.0001)  # the loop waits for the next request between requests
            t1 = time.perf_counter()
            ends.append(t1)
            lengths.append(t1 - t0)

    collections: list[tuple[float, float, str, int]] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            collections.append((gc_started[0], time.perf_counter(),
                                threading.current_thread().name, info["generation"]))

    scans: list[tuple[float, float]] = []

    def scan() -> None:
        t0 = time.perf_counter()
        repo.scan()
        scans.append((t0, time.perf_counter()))

    gc.callbacks.append(on_gc)
    loop = threading.Thread(target=serve, name="request-loop")
    loop.start()
    try:
        time.sleep(0.5)
        for i in range(args.repeat):
            # Published by another process, as in production: only the load runs in here.
            subprocess.run([sys.executable, "-c", PUBLISH, str(ROOT), str(repository),
                            "publish" if i % 2 == 0 else "rollback"], check=True)
            watcher = threading.Thread(target=scan, name="watcher")
            watcher.start()
            watcher.join()
            time.sleep(0.05)
        # What the next full collection would cost the loop now.
        full = threading.Thread(target=gc.collect, name="watcher (gc.collect())")
        full.start()
        full.join()
        time.sleep(0.05)
    finally:
        stop.set()
        loop.join()
        gc.callbacks.remove(on_gc)

    def stall(t0: float, t1: float) -> float:
        """The longest request that overlapped [t0, t1], in ms."""
        return max((d for e, d in zip(ends, lengths) if e >= t0 and e - d <= t1),
                   default=0.0) * 1e3

    normal = sorted(lengths)
    print(f"request loop: {len(lengths)} WSGI /predict calls, p50 "
          f"{percentile(normal, 50) * 1e3:.3f} ms, p99 {percentile(normal, 99) * 1e3:.3f} ms, "
          f"max {normal[-1] * 1e3:.2f} ms; switch interval {sys.getswitchinterval() * 1e3:.1f} "
          f"ms; heap: {len(gc.get_objects())} tracked objects, {gc.get_freeze_count()} frozen")
    stalls = sorted(stall(t0, t1) for t0, t1 in scans)
    walls = sorted((t1 - t0) * 1e3 for t0, t1 in scans)
    print(f"{args.repeat} scans in the watcher thread (publish, rollback in turn): wall median "
          f"{statistics.median(walls):.2f} ms, max {walls[-1]:.2f} ms; longest request "
          f"overlapping a scan: median {statistics.median(stalls):.2f} ms, max {stalls[-1]:.2f} ms")
    loads = [r.args for r in records.records if r.getMessage().startswith("loaded model")
             and isinstance(r.args, tuple) and len(r.args) == 7]
    if loads:
        print(f"the repository's own timing of {len(loads)} loads (ms, median / max):")
        for i, name in ((3, "total"), (4, "read_version (read, json, checks, sha256)"),
                        (5, "session (InferenceSession, signature)"), (6, "warm-up run")):
            values = [float(a[i]) for a in loads]
            print(f"  {name:<44}{statistics.median(values):7.2f} /{max(values):7.2f}")
    print("garbage collections (generation: count, max ms, longest request overlapping it, "
          "threads):")
    for generation in (0, 1, 2):
        these = [c for c in collections if c[3] == generation]
        if these:
            print(f"  gen {generation}: {len(these)}, "
                  f"{max((t1 - t0) * 1e3 for t0, t1, _, _ in these):.2f} ms, "
                  f"{max(stall(t0, t1) for t0, t1, _, _ in these):.2f} ms, "
                  f"{', '.join(sorted({c[2] for c in these}))}")

    # read_version's parts, and the session's, one at a time on an idle loop (ms, median of 20).
    path = repository / "iris" / "1"
    raw = (path / modelrepo.METADATA_FILE).read_bytes()
    model_bytes = (path / modelrepo.MODEL_FILE).read_bytes()
    metadata = json.loads(raw)
    row = np.zeros((1, len(metadata["feature_names"])), dtype=np.float32)
    parts: dict[str, Callable[[], Any]] = {
        "read_version": lambda: modelrepo.read_version(path),
        f"  json.loads ({len(raw)} bytes)": lambda: json.loads(raw),
        "  check_metadata": lambda: modelrepo.check_metadata(metadata, path, 1),
        f"  sha256 ({len(model_bytes)} bytes)": lambda: hashlib.sha256(model_bytes).digest(),
        "LoadedModel":
            lambda: LoadedModel("iris", 1, metadata, model_bytes, path),
        "  predict, 2nd and later runs": lambda: repo.get("iris").predict(row),
    }
    print("the steps alone, no request loop (ms, median of 20):")
    for name, fn in parts.items():
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"  {name:<44}{statistics.median(times):7.3f}")


# --- command line ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.switch", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--clients", type=int, default=4,
                        help="client processes, one kept-alive connection each (4)")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="requests/s of all clients together; 0: back to back (1000)")
    parser.add_argument("--switches", type=int, default=20,
                        help="publishes and rollbacks, in turn (20)")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between switches, more than --poll (1)")
    parser.add_argument("--poll", type=float, default=0.5, help="SOFTSERVE_POLL_SECONDS (0.5)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of load before the first switch; the first second is "
                             "not measured (2)")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds of load after the last switch (1)")
    parser.add_argument("--window-before", type=float, default=0.1,
                        help="a load event's window starts this long before its log line (0.1)")
    parser.add_argument("--window-after", type=float, default=0.05,
                        help="and ends this long after it (0.05)")
    parser.add_argument("--repeat", type=int, default=60,
                        help="--in-process: scans, after a publish or a rollback in turn (60)")
    parser.add_argument("--in-process", action="store_true",
                        help="no server: time each step of a load against a request loop")
    parser.add_argument("--realtime", type=int, default=0, metavar="PRIORITY",
                        help="run the server and the clients under SCHED_RR at this priority, "
                             "e.g. 10 (root only): a shared machine's other load then barely "
                             "shows in the latencies (0: off)")
    parser.add_argument("--json", type=Path, help="also write the run's figures to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="softserve-switch-") as name:
        if args.in_process:
            run_in_process(args, Path(name))
            return 0
        result = run_server(args, Path(name))
    report(result, args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
