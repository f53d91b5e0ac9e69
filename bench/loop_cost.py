"""The loop's cost per single-row /predict, in-process: drift counting and the prediction log.

No gunicorn, no sockets: the whole app (``ObservedApp`` with its access-log buffer, as
softserve's worker uses it) answers a single-row /predict, then the held work runs as the worker
runs it before it next waits (the after-answer tasks: drift counts, the log record; the
access-log line goes to /dev/null). Each setting is its own app: softserve's defaults (log off,
drift on), drift off, the prediction log at 10 % and at 100 % — the same settings as ``python -m
bench --scenarios loop`` measures under load, but as server CPU per request, which a machine
shared with other work disturbs less than a rate. Figures are the CPU time of the thread per
request, the mean of many, measured round-robin, best round kept. Also: the drift count of one
row for 4, 13, 32, 64 and 784 features.

    .venv/bin/python -m bench.loop_cost                 # trains iris into a temporary directory
    .venv/bin/python -m bench.loop_cost --repository DIR
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import repository_to_serve

BODY = b'{"instances":[[5.1,3.5,1.4,0.2]]}'
SETTINGS: dict[str, dict[str, Any]] = {
    "defaults: log off, drift on": {},
    "drift off (SOFTSERVE_DRIFT_SAMPLE=0)": {"drift_sample": 0.0},
    "prediction log 10 %": {"prediction_log_sample": 0.1},
    "prediction log 100 %": {"prediction_log_sample": 1.0},
    "prediction log 100 %, drift off": {"prediction_log_sample": 1.0, "drift_sample": 0.0},
    "defaults again (a second app: the noise between two identical ones)": {},
}


def median_us(fn: Callable[[], object], calls: int) -> float:
    for _ in range(500):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    times.sort()
    return times[len(times) // 2] / 1000


ROUNDS = 10


class _Timed:
    """A single-row /predict through the whole app, then what the worker runs before it next
    waits (the after-answer tasks, then the access-log line); the thread's CPU time of each
    part summed apart."""

    def __init__(self, app: Any, flush: Callable[[], None]) -> None:
        self.app, self.flush = app, flush
        self.answer_ns = self.after_ns = self.calls = 0

    def __call__(self) -> None:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/predict",
                   "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080",
                   "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                   "wsgi.input": io.BytesIO(BODY), "wsgi.errors": sys.stderr,
                   "CONTENT_LENGTH": str(len(BODY))}
        t0 = time.thread_time_ns()
        b"".join(self.app.wsgi_app(environ, lambda *a: None))
        t1 = time.thread_time_ns()
        self.flush()
        t2 = time.thread_time_ns()
        self.answer_ns += t1 - t0
        self.after_ns += t2 - t1
        self.calls += 1

    def reset(self) -> None:
        self.answer_ns = self.after_ns = self.calls = 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loop_cost",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, help="an existing repository with iris")
    parser.add_argument("--calls", type=int, default=20000, help="timed calls per figure")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="softserve-loop-") as tmp:
        repository = repository_to_serve(args.repository, Path(tmp))
        from modelrepo.drift import BinCounter, feature_statistics
        from serving import create_app
        from serving.telemetry.access_log import access_log_buffer

        devnull = os.open(os.devnull, os.O_WRONLY)
        saved_stdout = os.dup(1)
        requests: dict[str, _Timed] = {}
        apps = []
        for name, settings in SETTINGS.items():
            logged = {"prediction_log": Path(tmp) / f"log-{len(apps)}"} \
                if "prediction_log_sample" in settings else {}
            app = create_app({"model_repository": repository, "poll_seconds": 0, **logged,
                              **settings})
            apps.append(app)
            buffer = access_log_buffer(app)
            assert buffer is not None
            requests[name] = _Timed(app, buffer.buffer_access_log())
        # Round-robin, the best round of each: the settings see the same machine, warm-up and
        # other load alike.
        answer = dict.fromkeys(SETTINGS, float("inf"))
        after = dict.fromkeys(SETTINGS, float("inf"))
        os.dup2(devnull, 1)  # the access log
        try:
            for _ in range(ROUNDS):
                for name, request in requests.items():
                    for _ in range(500):
                        request()
                    request.reset()
                    for _ in range(args.calls // ROUNDS):
                        request()
                    answer[name] = min(answer[name], request.answer_ns / request.calls / 1000)
                    after[name] = min(after[name], request.after_ns / request.calls / 1000)
        finally:
            os.dup2(saved_stdout, 1)
        print("| setting | answer: µs CPU per single-row /predict | after the answer: tasks + "
              f"access-log line, µs | (mean, best of {ROUNDS} rounds) |")
        print("|---|--:|--:|--|")
        for name in SETTINGS:
            print(f"| {name} | {answer[name]:.1f} | {after[name]:.2f} | |", flush=True)
        for app in apps:
            telemetry = app.extensions["softserve.telemetry"]
            if telemetry is not None:
                telemetry.close()
        print()
        print("| drift count of one row (BinCounter.add) | µs, median |")
        print("|---|--:|")
        rng = np.random.default_rng(0)
        for features in (4, 13, 32, 64, 784):
            stats = feature_statistics(rng.normal(size=(1000, features)),
                                       [f"f{i}" for i in range(features)])
            counter = BinCounter(stats)
            row = rng.normal(size=(1, features)).astype(np.float32)
            figure = median_us(lambda c=counter, r=row: c.add(r), args.calls)  # type: ignore[misc]
            print(f"| F = {features} | {figure:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
