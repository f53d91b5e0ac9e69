"""Soak test of the real server: paced load for a long time while versions come and go.

    python -m soak.run --help                  # from the repository root
    make soak                                  # the defaults: 10 minutes at 80% of the maximum
    SOAK_ARGS="--duration 120" make soak       # a shorter run

What it does:

1. trains an iris model into a temporary repository (or copies ``--repository``), never touching
   ./artifacts;
2. starts ``gunicorn -c serving/gunicorn.conf.py "serving:create_app()"`` on a free 127.0.0.1 port
   (2 workers of the default class, the access log off: ten minutes of it would fill the disk);
3. measures the maximum rate: ``--concurrency`` closed-loop clients, each sending the next
   request as soon as the last is answered, for ``--measure-seconds``;
4. sends ``--rate-fraction`` (80%) of that rate, paced (open loop: requests leave on schedule
   whether or not earlier ones were answered), for ``--duration`` seconds — single-row
   ``POST /predict``, one connection per request. Every ``--cycle-seconds`` (60) a new version is
   published (``modelrepo.publish_version`` of a copy of the model) and, half a cycle later,
   rolled back (``python -m modelrepo rollback iris``);
5. every ``--sample-seconds`` (5) samples the RSS and the open file descriptors of the master
   and of every worker (``/proc/<pid>/status`` and ``/proc/<pid>/fd``);
6. stops the server with SIGTERM, then writes the figures to docs/reliability.md (between the
   ``soak:begin``/``soak:end`` markers) and prints them.

The load generator is Python (asyncio, raw sockets), not wrk: wrk cannot pace a rate (wrk2 is
not packaged for Debian), and counting every request's outcome and the version that answered
it needs per-request accounting. The same generator measures the maximum, so "80%" is relative
to what this client and this server reach together on this machine.

Exit status: 0 when no request failed, no worker was replaced, RSS stayed flat and file
descriptors did not grow; 1 otherwise; 2 for bad options.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import modelrepo
from tests.support import ROOT
from tests.support.models import MODEL, served_version, train_in_subprocess
from tests.support.processes import children, open_fds, proc_status
from tests.support.server import Server, start_server

DOCS = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
_VERSION = re.compile(rb'"model_version":"(\d+)"')
RSS_TOLERANCE_KB = 16 * 1024  # "flat": the end within 16 MiB (or 10%) of the start
RSS_TOLERANCE_RATIO = 0.10


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the load --------------------------------------------------------------------------------


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, a sample
    skipped: int = 0  # not sent: the client had too many requests in flight

    @property
    def failures(self) -> int:
        return sum(self.failed.values())


async def one_request(port: int, payload: bytes, timeout: float) -> tuple[int | None, bytes, str]:
    """(status, body, error) of one request on its own connection."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(payload)
                await writer.drain()
                data = await reader.read()  # the server closes the connection after answering
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        return None, b"", type(exc).__name__
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not match:
        return None, b"", "no HTTP answer"
    return int(match.group(1)), body, ""


def record(tally: Tally, status: int | None, body: bytes, error: str, seconds: float) -> None:
    if status == 200:
        tally.ok += 1
        version = _VERSION.search(body)
        tally.versions[version.group(1).decode() if version else "?"] += 1
    else:
        tally.failed[error or f"HTTP {status}"] += 1
    if len(tally.latencies) < 200_000:
        tally.latencies.append(seconds)


def request_bytes() -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(BODY)}\r\n"
            "Connection: close\r\n\r\n").encode() + BODY


async def closed_loop(port: int, concurrency: int, seconds: float) -> float:
    """Requests per second that ``concurrency`` back-to-back clients get answered (status 200)."""
    payload, tally = request_bytes(), Tally()
    deadline = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            status, body, error = await one_request(port, payload, 30)
            tally.sent += 1
            record(tally, status, body, error, time.monotonic() - started)

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    if tally.failures:
        raise RuntimeError(f"failures while measuring the maximum: {dict(tally.failed)}")
    return tally.ok / (time.monotonic() - started)


async def paced(port: int, rate: float, seconds: float, tally: Tally, stop: threading.Event,
                max_in_flight: int) -> None:
    """Send ``rate`` requests a second on schedule for ``seconds``, whatever the answers do."""
    payload = request_bytes()
    in_flight: set[asyncio.Task[None]] = set()
    start = time.monotonic()

    async def send() -> None:
        started = time.monotonic()
        status, body, error = await one_request(port, payload, 30)
        record(tally, status, body, error, time.monotonic() - started)

    while not stop.is_set():
        now = time.monotonic()
        if now - start >= seconds:
            break
        due = int((now - start) * rate) - tally.sent - tally.skipped
        for _ in range(max(0, due)):
            if len(in_flight) >= max_in_flight:
                tally.skipped += 1
                continue
            tally.sent += 1
            task = asyncio.create_task(send())
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.sleep(0.002)
    if in_flight:
        await asyncio.wait(in_flight, timeout=60)


# --- the server and the repository ------------------------------------------------------------


def prepare_repository(work: Path, source: Path | None) -> Path:
    """The repository to serve, in ``work``: a copy of ``source``, or iris trained afresh.

    Raises SystemExit if it has no valid version of the model.
    """
    repository = work / "repository"
    if source is not None:
        shutil.copytree(source, repository, symlinks=True)
        log(f"copied the repository {source}")
    else:
        log("training iris into a temporary repository ...")
        train_in_subprocess(repository)
    try:
        served_version(repository)
    except RuntimeError as exc:
        raise SystemExit(f"error: {exc}") from None
    return repository


def serve(repository: Path, work: Path, workers: int, gunicorn_args: str,
          poll_seconds: float) -> Server:
    """softserve's gunicorn with every worker booted, the access log off. Raises SystemExit."""
    env = {"SOFTSERVE_ACCESS_LOG": "0"}
    if gunicorn_args:
        env["GUNICORN_CMD_ARGS"] = gunicorn_args
    try:
        return start_server(repository, work, workers=workers, env=env,
                            poll_seconds=poll_seconds, ready_path="/v2/health/ready",
                            timeout=120)
    except RuntimeError as exc:
        raise SystemExit(f"error: {exc}") from None


def sample(master: int) -> dict[int, tuple[int, int]]:
    """pid -> (RSS kB, open fds) for the master and each worker."""
    out = {}
    for pid in [master, *children(master)]:
        try:
            rss = proc_status(pid).get("VmRSS")
            if rss is not None:
                out[pid] = (rss, open_fds(pid))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def publish_copy(repository: Path) -> int:
    """A new version: version 1's model and metadata published again (what a retrain does)."""
    metadata, model_bytes = modelrepo.read_version(repository / MODEL / "1")
    return modelrepo.publish_version(repository, MODEL, model_bytes, metadata).version


def rollback(repository: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "modelrepo", "--artifacts", str(repository),
                             "rollback", MODEL], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"rollback failed: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]


# --- the run ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="softserve-soak-"))
    server: Server | None = None
    try:
        repository = prepare_repository(work, args.repository)
        server = serve(repository, work, args.workers, args.gunicorn_args, args.poll_seconds)
        port, master = server.port, server.process.pid
        log(f"gunicorn {master} on 127.0.0.1:{port}, workers {children(master)}")
        asyncio.run(closed_loop(port, args.concurrency, 2))  # warm-up
        maximum = asyncio.run(closed_loop(port, args.concurrency, args.measure_seconds))
        rate = args.rate if args.rate else maximum * args.rate_fraction
        log(f"maximum {maximum:.0f} requests/s ({args.concurrency} closed-loop clients, "
            f"{args.measure_seconds:.0f} s); soaking at {rate:.0f}/s for {args.duration:.0f} s")

        tally, stop = Tally(), threading.Event()
        loader = threading.Thread(target=lambda: asyncio.run(paced(
            port, rate, args.duration, tally, stop, args.max_in_flight)), name="load")
        samples: list[tuple[float, dict[int, tuple[int, int]]]] = []
        events: list[str] = []
        initial_workers = children(master)
        started = time.monotonic()
        loader.start()
        next_sample = next_cycle = started
        published: int | None = None
        last_report = started
        try:
            while loader.is_alive():
                now = time.monotonic()
                if now >= next_sample:
                    samples.append((now - started, sample(master)))
                    next_sample += args.sample_seconds
                if now >= next_cycle:
                    published = publish_copy(repository)
                    events.append(f"{now - started:6.1f} s published version {published}")
                    next_cycle += args.cycle_seconds
                elif published is not None and now >= next_cycle - args.cycle_seconds / 2:
                    events.append(f"{now - started:6.1f} s {rollback(repository)}")
                    published = None
                if now - last_report >= args.report_seconds:
                    last_report = now
                    rss = {p: r for p, (r, _) in samples[-1][1].items()} if samples else {}
                    log(f"{now - started:5.0f} s: sent {tally.sent}, ok {tally.ok}, failed "
                        f"{tally.failures}, {tally.ok / max(now - started, 1e-9):.0f}/s; "
                        f"RSS kB {rss}; versions {dict(tally.versions)}")
                time.sleep(0.1)
        finally:
            stop.set()
            loader.join()
        elapsed = time.monotonic() - started
        samples.append((elapsed, sample(master)))
        final_workers = children(master)
        exit_code = server.stop(timeout=120)
        log(f"server stopped with exit status {exit_code}")
        return summarize(args, maximum, rate, tally, samples, events, initial_workers,
                         final_workers, exit_code, elapsed, master, server.log())
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def summarize(args: argparse.Namespace, maximum: float, rate: float, tally: Tally,
              samples: list[tuple[float, dict[int, tuple[int, int]]]], events: list[str],
              initial_workers: list[int], final_workers: list[int], exit_code: int,
              elapsed: float, master: int, server_log: str) -> dict[str, Any]:
    first, last = samples[0][1], samples[-1][1]
    processes = []
    flat = True
    for pid in [master, *initial_workers]:
        role = "master" if pid == master else "worker"
        series = [s[pid] for _, s in samples if pid in s]
        if pid not in first or pid not in last:
            processes.append({"pid": pid, "role": role, "note": "gone before the end"})
            flat = False
            continue
        rss_start, rss_end = first[pid][0], last[pid][0]
        rss_max = max(r for r, _ in series)
        # After the warm-up minute: the start of a soak also loads versions and fills caches.
        settled = [r for t, s in samples if t >= min(60.0, elapsed / 4) and pid in s
                   for r in [s[pid][0]]]
        rss_settled = settled[0] if settled else rss_start
        fds = [f for _, f in series]
        quarter = max(1, len(fds) // 4)
        # The floor, not the peak: a worker holds its clients' connections for a moment (the
        # event-loop worker closes each one when it reads the client's EOF), so a sample's count
        # includes whatever is in flight; a leak raises the floor.
        fd_growth = min(fds[-quarter:]) - min(fds[:quarter])
        grew = rss_end - rss_settled > max(RSS_TOLERANCE_KB, RSS_TOLERANCE_RATIO * rss_settled)
        flat = flat and not grew and fd_growth <= 0
        processes.append({"pid": pid, "role": role, "rss_start_kb": rss_start,
                          "rss_after_warmup_kb": rss_settled, "rss_end_kb": rss_end,
                          "rss_max_kb": rss_max, "fd_start": first[pid][1],
                          "fd_end": last[pid][1], "fd_min": min(fds), "fd_max": max(fds),
                          "fd_growth_last_vs_first_quarter": fd_growth, "rss_grew": grew})
    replaced = sorted(set(initial_workers) ^ set(final_workers))
    ok = (tally.failures == 0 and not replaced and flat and exit_code == 0 and tally.skipped == 0)
    problems = [line for line in server_log.splitlines()
                if re.search(r"Traceback|WORKER TIMEOUT|was sent SIG|ERROR", line)]
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": f"{platform.node()} ({os.cpu_count()} CPUs), Python {platform.python_version()}",
        "workers": args.workers, "gunicorn_args": args.gunicorn_args or "(none)",
        "duration_s": round(elapsed, 1), "maximum_rps": round(maximum, 1),
        "target_rps": round(rate, 1), "achieved_rps": round(tally.ok / elapsed, 1),
        "sent": tally.sent, "ok": tally.ok, "failed": dict(tally.failed),
        "skipped_client_side": tally.skipped,
        "latency_ms": {"p50": round(percentile(tally.latencies, 0.5) * 1000, 2),
                       "p99": round(percentile(tally.latencies, 0.99) * 1000, 2),
                       "max": round(max(tally.latencies, default=0) * 1000, 2),
                       "mean": round(statistics.fmean(tally.latencies) * 1000, 2)
                       if tally.latencies else None},
        "versions_answered": dict(sorted(tally.versions.items(), key=lambda kv: int(kv[0])
                                         if kv[0].isdigit() else 0)),
        "version_events": events, "workers_replaced": replaced, "server_exit": exit_code,
        "log_problems": problems[:20], "processes": processes, "passed": ok and not problems,
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        BEGIN,
        f"Last run: {result['date']} on {result['host']}; {result['workers']} workers, "
        f"gunicorn args {result['gunicorn_args']}. "
        f"**{'PASSED' if result['passed'] else 'FAILED'}**",
        "",
        f"- duration {result['duration_s']} s; maximum {result['maximum_rps']} requests/s "
        f"(closed loop); target {result['target_rps']}/s; achieved {result['achieved_rps']}/s",
        f"- requests sent {result['sent']}, answered 200 {result['ok']}, failed "
        f"{sum(result['failed'].values())} {result['failed'] or ''}, not sent (client "
        f"saturated) {result['skipped_client_side']}",
        f"- latency p50 {result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms, "
        f"max {result['latency_ms']['max']} ms",
        f"- answers per version: {result['versions_answered']}; "
        f"{len(result['version_events'])} publish/rollback events; workers replaced: "
        f"{result['workers_replaced'] or 'none'}; server exit status {result['server_exit']}",
        "",
        "| process | pid | RSS start | RSS after 1 min | RSS end | RSS max | fds start | fds end "
        "| fds min–max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result["processes"]:
        if "note" in p:
            lines.append(f"| {p['role']} | {p['pid']} | {p['note']} | | | | | | |")
            continue
        lines.append(
            f"| {p['role']} | {p['pid']} | {p['rss_start_kb'] / 1024:.1f} MiB | "
            f"{p['rss_after_warmup_kb'] / 1024:.1f} MiB | {p['rss_end_kb'] / 1024:.1f} MiB | "
            f"{p['rss_max_kb'] / 1024:.1f} MiB | {p['fd_start']} | {p['fd_end']} | "
            f"{p['fd_min']}–{p['fd_max']} |")
    if result["log_problems"]:
        lines += ["", "Server log problems:", "", *[f"    {x}" for x in result["log_problems"]]]
    lines.append(END)
    return "\n".join(lines)


def write_docs(text: str) -> None:
    current = DOCS.read_text() if DOCS.exists() else ""
    if BEGIN in current and END in current:
        head, _, rest = current.partition(BEGIN)
        _, _, tail = rest.partition(END)
        DOCS.write_text(head + text + tail)
    else:
        DOCS.write_text(current.rstrip("\n") + "\n\n## Soak\n\n" + text + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m soak.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                epilog="Exit status: 0 passed, 1 failed, 2 bad options.")
    p.add_argument("--duration", type=float, default=600, help="seconds of paced load")
    p.add_argument("--rate-fraction", type=float, default=0.8,
                   help="the paced rate as a fraction of the measured maximum")
    p.add_argument("--rate", type=float, help="a fixed rate (requests/s) instead of a fraction")
    p.add_argument("--concurrency", type=int, default=16,
                   help="closed-loop clients when measuring the maximum")
    p.add_argument("--measure-seconds", type=float, default=10,
                   help="how long the maximum is measured")
    p.add_argument("--cycle-seconds", type=float, default=60,
                   help="a version is published at the start of each cycle, rolled back half "
                   "a cycle later")
    p.add_argument("--sample-seconds", type=float, default=5,
                   help="how often RSS and file descriptors are sampled")
    p.add_argument("--report-seconds", type=float, default=30, help="progress line interval")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    p.add_argument("--gunicorn-args", default="",
                   help="extra gunicorn flags, e.g. '--worker-class gthread --threads 4'")
    p.add_argument("--poll-seconds", type=float, default=2, help="SOFTSERVE_POLL_SECONDS")
    p.add_argument("--max-in-flight", type=int, default=4096,
                   help="client-side cap on requests in flight (beyond it, requests are counted "
                   "as not sent and the run fails)")
    p.add_argument("--repository", type=Path,
                   help="copy this model repository instead of training a fresh one")
    p.add_argument("--no-docs", action="store_true",
                   help="print the figures only; leave docs/reliability.md alone")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.duration <= 0 or not 0 < args.rate_fraction <= 1 or args.workers < 1 or \
            args.sample_seconds <= 0 or args.cycle_seconds <= 0 or args.concurrency < 1:
        parser.error("--duration, --sample-seconds, --cycle-seconds must be > 0, "
                     "--rate-fraction in (0, 1], --workers and --concurrency >= 1")
    result = run(args)
    text = render(result)
    print(text)
    if not args.no_docs:
        write_docs(text)
        log(f"wrote {DOCS.relative_to(ROOT)}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
