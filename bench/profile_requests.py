"""Where a request's time goes: py-spy samples one gunicorn worker while wrk loads it.

Starts the real server with ONE worker (so every sample is a request being served; and the
no-op app or a loop or lean server of ``python -m bench``, one worker each, when a chosen
scenario is theirs), runs wrk on each chosen scenario and, in the middle of that run,
``py-spy record`` on the worker.
Each sampled stack is put in one bucket (gunicorn accept / parse / send / close, Flask and
werkzeug, reading the body, decode and validation in serving/codecs/, onnxruntime, encode,
...) by the deepest frame that names a bucket. The worker's measured CPU time per request
(/proc/<pid>/stat over the sampling window, divided by the requests wrk got answered meanwhile)
is then spread over the buckets: its user time by the shares of the samples running Python or
C code, its system time by the shares of the samples sitting in a socket call (sendall, accept,
recv, shutdown, close). py-spy counts wall time of a running thread, preemption included; CPU
time is what a request costs, so the table is in CPU µs per request.

    pip install py-spy                      # not a project dependency; needs ptrace (root)
    .venv/bin/python -m bench.profile_requests                       # live vs predict-1
    .venv/bin/python -m bench.profile_requests --scenarios predict-1,v2-binary-1 --out /tmp/prof
    .venv/bin/python -m bench.profile_requests --scenarios noop,predict-1,v2-json-1,lean-predict-1

--out keeps py-spy's collapsed stacks (``<scenario>.txt``, for flamegraph.pl or speedscope).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import log, repository_to_serve, run_main
from bench.measure import NOOP_APP, run_wrk, start_gunicorn, wait_for_quiet
from bench.scenarios import LOOP_SERVERS, Scenario, check_scenario, select_scenarios
from tests.support.processes import cpu_times
from tests.support.server import Server

# (bucket, test on "function (file:line)") — a stack's bucket is the one named by its deepest
# matching frame, so the more specific buckets (codecs, onnxruntime) win over the outer ones.
RULES: list[tuple[str, tuple[str, ...]]] = [
    # the catch-all for gunicorn's own frames: only where nothing more specific is found
    ("gunicorn: worker loop, other", ("gunicorn/",)),
    ("gunicorn: accept", ("socket.accept ",)),
    ("gunicorn: read + parse request", ("Parser.__next__ ", "get_parser ")),
    ("gunicorn: WSGI environ", ("create (gunicorn/http/wsgi.py",)),
    ("gunicorn: send (headers, sendall)", ("Response.write (gunicorn", "Response.close (gunicorn",
                                           "Response.send_headers (gunicorn",
                                           "write (gunicorn/util.py")),
    ("gunicorn: close connection", ("close_graceful ",)),
    ("gunicorn: access log / notify", ("Logger.access ", "WorkerTmp.notify ")),
    ("Flask/werkzeug: dispatch, context, response", ("Flask.__call__ ", "Flask.wsgi_app ")),
    # serving's own WSGI layers, where the code has them (a deeper Flask.wsgi_app wins back)
    ("serving WSGI middleware (telemetry, fast path)", ("serving/telemetry/",
                                                        "serving/fastpath.py")),
    ("route code (serving/routes)", ("serving/routes/",)),
    ("model lookup (repository.get)", ("ModelRepository.get ", "default_model ",
                                       "ModelRepository.ready ")),
    ("read body (request.get_data / read_body)", ("Request.get_data ", "read_body ")),
    ("werkzeug Response object", ("Response.__init__ (werkzeug", "Response.__init__ (flask",
                                  "json_response ")),
    ("decode: other (codecs)", ("decode_instances ", "decode_infer ", "parse_header_length ")),
    ("decode: JSON parse (orjson)", ("_load_json ",)),
    ("decode: numpy array + checks", ("_holds_booleans ", "_first_out_of_float32 ",
                                      "_to_float32 ", "_json_input ", "_binary_input ",
                                      "_check_shape ", "_check_datatype ", "_requested_outputs ",
                                      "_rows_from_objects ", "_check_integers ")),
    ("onnxruntime run", ("LoadedModel.predict ", "onnxruntime")),
    ("encode response (codecs)", ("encode_predictions ", "encode_infer ")),
    # issue 20: the telemetry apart from the rest of the middleware (ObservedApp's own frame
    # builds the access-log line; its write and the after-answer work run in the worker loop)
    ("telemetry: metrics (recording)", ("Telemetry.request_finished ",
                                        "Telemetry.request_started ")),
    ("telemetry: access-log write, after-answer work", ("flush_access_log ",)),
    ("telemetry: drift counting", ("DriftCounts.", "BinCounter.")),
    ("routing: model and version (repository, traffic policy)", ("Inference._resolve ",)),
]
# Background threads of a worker, recognised anywhere in the stack.
THREADS = {"repository watcher thread": "ModelRepository.watch",
           "metrics flush thread": "Telemetry.start"}
EXCLUDED = {"repository watcher thread"}  # it only lists directories every few seconds
# py-spy takes a thread blocked in Event.wait(timeout) for a running one: such samples are idle.
IDLE_LEAVES = ("Condition.wait ", "Event.wait ", "sleep ")


OUTSIDE = "other (outside gunicorn's request loop)"
GUNICORN_OTHER = RULES[0][0]
# Leaf frames that are a Python line calling into the kernel (sendall, accept, recv, shutdown,
# close, the heartbeat's fchmod): their samples are system time, the rest user time.
SYSCALL_LEAVES = ("write (gunicorn/util.py", "socket.accept ", "close_graceful ",
                  "SocketUnreader.chunk ", "socket._real_close ", "socket.close ",
                  "WorkerTmp.notify ", "socket.recv", "socket.send")


def bucket(frames: Sequence[str]) -> str:
    for name, marker in THREADS.items():
        if any(marker in frame for frame in frames):
            return name
    found = OUTSIDE
    for frame in frames:  # root first: a deeper match overrides, except the catch-all
        for name, needles in RULES:
            if any(n in frame for n in needles) and (name != GUNICORN_OTHER or found == OUTSIDE):
                found = name
    return found


def read_collapsed(path: Path) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """(bucket -> user-time samples, bucket -> system-time samples) of py-spy's raw output."""
    user: collections.Counter[str] = collections.Counter()
    kernel: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        name = bucket(frames)
        if name in EXCLUDED or frames[-1].startswith(IDLE_LEAVES):
            continue
        (kernel if any(frames[-1].startswith(leaf) for leaf in SYSCALL_LEAVES) else user)[
            name] += int(n)
    return user, kernel


@dataclass
class Profile:
    requests_per_s: float
    user_us: float  # the worker's user CPU per request
    system_us: float  # its system (kernel) CPU per request
    buckets: dict[str, float]  # bucket -> CPU µs per request (user and system shares)
    samples: int


def profile_scenario(server: Server, scenario: Scenario, args: argparse.Namespace,
                     tmp: Path, py_spy: str) -> Profile:
    """Sample one worker under wrk load; py-spy's shares spread the measured CPU time."""
    check_scenario(server, scenario)
    run_wrk(args.wrk, server.url, scenario, 1, args.threads, args.connections,
                tmp / "body.bin", args.nice)  # warm-up
    worker = server.worker_pids()[0]
    out = (args.out or tmp) / f"{scenario.name}.txt"
    result: dict[str, dict] = {}

    def load() -> None:
        result["wrk"] = run_wrk(args.wrk, server.url, scenario, args.seconds + 4,
                                args.threads, args.connections, tmp / "body2.bin", args.nice)

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(2)
    user0, system0 = cpu_times(worker)
    t0 = time.monotonic()
    done = subprocess.run([py_spy, "record", "-p", str(worker), "-d", str(round(args.seconds)),
                           "-r", str(args.rate), "-f", "raw", "-o", str(out),
                           *(["--native"] if args.native else [])],
                          capture_output=True, text=True)
    user1, system1 = cpu_times(worker)
    window = time.monotonic() - t0
    thread.join()
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({done.returncode}): {done.stderr}{done.stdout}")
    wrk = result["wrk"]
    rps = wrk["requests"] / (wrk["duration_us"] / 1e6)
    served = rps * window
    user_us, system_us = (user1 - user0) / served * 1e6, (system1 - system0) / served * 1e6
    user, kernel = read_collapsed(out)
    n_user, n_kernel = sum(user.values()) or 1, sum(kernel.values()) or 1
    buckets = {b: user.get(b, 0) / n_user * user_us + kernel.get(b, 0) / n_kernel * system_us
               for b in set(user) | set(kernel)}
    return Profile(rps, user_us, system_us, buckets, sum(user.values()) + sum(kernel.values()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_requests", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scenarios", default="live,predict-1",
                        help="comma-separated scenarios of python -m bench")
    parser.add_argument("--seconds", type=float, default=10, help="sampling time per scenario")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--gunicorn-args", default="", help="extra gunicorn flags, one string")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    parser.add_argument("--repository", type=Path, help="an existing repository with iris")
    parser.add_argument("--out", type=Path, help="keep py-spy's collapsed stacks here")
    parser.add_argument("--quiet-wait", type=float, default=10,
                        help="wait up to this long for other processes to go quiet first")
    parser.add_argument("--nice", type=int, default=0,
                        help="scheduling priority of the server and wrk (below 0: root only)")
    parser.add_argument("--wrk", default="wrk")
    parser.add_argument("--py-spy", default=None, help="py-spy executable (default: PATH, then "
                        "next to this Python)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    py_spy = args.py_spy or shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists() and not shutil.which(py_spy):
        print("profile: py-spy not found: pip install py-spy (or pass --py-spy PATH)",
              file=sys.stderr)
        return 2
    chosen = select_scenarios(args.scenarios)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    profiles: dict[str, Profile] = {}
    with tempfile.TemporaryDirectory(prefix="softserve-profile-") as tmp_name, \
            contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        repository = repository_to_serve(args.repository, tmp)
        servers: dict[str, Server] = {}
        for name in dict.fromkeys(s.server for s in chosen):  # one server each, one worker
            app = {"app": NOOP_APP} if name == "noop" else {}
            env = LOOP_SERVERS.get(name) if name != "softserve" else None
            server = servers[name] = stack.enter_context(start_gunicorn(
                repository, 1, shlex.split(args.gunicorn_args), tmp, args.nice, name=name,
                env=env, **app))
            log(f"{name} {server.url}, one {server.worker_class()} worker "
                f"{server.worker_pids()}" + (f", {env}" if env else ""))
        for scenario in chosen:
            if args.quiet_wait:
                wait_for_quiet(args.quiet_wait)
            log(f"{scenario.name}: wrk + py-spy for {args.seconds:g} s")
            prof = profile_scenario(servers[scenario.server], scenario, args, tmp, py_spy)
            profiles[scenario.name] = prof
            log(f"{scenario.name}: {prof.requests_per_s:,.0f} req/s, {prof.samples} "
                f"samples, {prof.user_us:.0f} µs user + {prof.system_us:.0f} µs system "
                "CPU per request")
    print_table(profiles)
    return 0


def print_table(profiles: dict[str, Profile]) -> None:
    """A markdown table, one column per scenario; "(+n)": more than the first scenario (with
    ``noop`` first, the route's own cost above the no-op app)."""
    names = list(profiles)
    print("| worker CPU µs per request | " + " | ".join(names) + " |")
    print("|---|" + "--:|" * len(names))

    def row(label: str, values: list[float], bold: bool = False) -> None:
        cells = [f"{v:.0f}" + (f" ({v - values[0]:+.0f})" if i and round(v - values[0]) else "")
                 for i, v in enumerate(values)]
        if bold:
            cells = [f"**{c}**" for c in cells]
        print(f"| {label} | " + " | ".join(cells) + " |")

    for b in [b for b, _ in RULES] + list(THREADS) + [OUTSIDE]:
        values = [profiles[n].buckets.get(b, 0.0) for n in names]
        if b not in EXCLUDED and any(v >= 0.5 for v in values):
            row(b, values)
    row("user CPU", [profiles[n].user_us for n in names])
    row("system (kernel) CPU", [profiles[n].system_us for n in names])
    row("total CPU", [profiles[n].user_us + profiles[n].system_us for n in names], bold=True)
    print("| requests/s (1 worker, under py-spy) | "
          + " | ".join(f"{profiles[n].requests_per_s:,.0f}" for n in names) + " |")


if __name__ == "__main__":
    run_main(main, "profile")
