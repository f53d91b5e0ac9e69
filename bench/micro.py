"""Micro-benchmark of the single-row /predict path, in-process, stage by stage.

No gunicorn, no sockets: the Flask app is called as a WSGI callable, and each stage of the
route (body read, decode, onnxruntime, encode, the Response) is timed on its own, warm (the
same call in a loop) and cold (the caches flushed between calls by reading 4 MiB, roughly
what a request through gunicorn, Flask and the kernel does to them). Next to the stages,
"what if" variants written here (the serving code is not changed) show what a cheaper
stage would cost. Figures are µs per call, the median of many calls. Then (issue 20) the whole
app's CPU per single-row /predict and V2 JSON request with softserve's defaults, with every
optional feature off and for the no-op app (``--no-apps``: not).

    .venv/bin/python -m bench.micro                 # trains iris into a temporary directory
    .venv/bin/python -m bench.micro --repository DIR
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench import repository_to_serve

FLOAT32_MAX = float(np.finfo(np.float32).max)
BODY = b'{"instances":[[5.1,3.5,1.4,0.2]]}'
_junk = np.ones(4 << 20, dtype=np.uint8)  # twice the L2 cache of one core here


def median_us(fn: Callable[[], object], cold: bool, calls: int) -> float:
    for _ in range(200):
        fn()
    times = []
    for _ in range(calls):
        if cold:
            _junk.sum()  # evict the caches the call would otherwise find warm
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    times.sort()
    return times[len(times) // 2] / 1000


def small_batch_decode(body: bytes) -> np.ndarray | None:
    """What-if: check a few rows in plain Python, build the float32 array directly."""
    doc = orjson.loads(body)
    rows = doc.get("instances") if type(doc) is dict and len(doc) == 1 else None
    if type(rows) is not list or not 0 < len(rows) <= 16:
        return None  # not small: the numpy path
    for row in rows:
        if type(row) is not list or len(row) != 4:
            return None
        for v in row:
            if type(v) is not float and type(v) is not int:
                return None  # the full decoder names the problem
            if not -FLOAT32_MAX <= v <= FLOAT32_MAX:
                return None
    return np.array(rows, dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, help="an existing repository with iris")
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per figure")
    parser.add_argument("--no-apps", action="store_true",
                        help="leave out the whole-app figures (defaults, lean, no-op)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="softserve-micro-") as tmp:
        repository = repository_to_serve(args.repository, Path(tmp))
        import flask

        from serving import codecs, create_app
        app = create_app({"model_repository": repository, "poll_seconds": 0,
                          "log_level": "WARNING"})
        model = app.extensions["softserve"].get("iris")
        rows = codecs.decode_instances(BODY, model.shape, 100_000)
        probabilities, classes = model.predict(rows)
        assert np.array_equal(small_batch_decode(BODY), rows)

        def environ(method: str, path: str, body: bytes = b"") -> dict:
            env = {"REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "127.0.0.1",
                   "SERVER_PORT": "8080", "HTTP_HOST": "127.0.0.1:8080",
                   "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                   "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr}
            if body:
                env.update(CONTENT_LENGTH=str(len(body)), CONTENT_TYPE="application/json")
            return env

        def wsgi(method: str, path: str, body: bytes = b"") -> Callable[[], object]:
            def call() -> object:
                out = app.wsgi_app(environ(method, path, body), lambda *a: None)
                data = b"".join(out)
                getattr(out, "close", lambda: None)()
                return data
            return call

        def get_data() -> bytes:
            request = flask.Request(environ("POST", "/predict", BODY))
            request.max_content_length = 16 << 20
            return request.get_data(cache=False)

        def raw_read() -> bytes:
            env = environ("POST", "/predict", BODY)
            return env["wsgi.input"].read(int(env["CONTENT_LENGTH"]))

        session = model.session
        stages: list[tuple[str, Callable[[], object]]] = [
            ("Flask WSGI: GET /v2/health/live", wsgi("GET", "/v2/health/live")),
            ("Flask WSGI: POST /predict, 1 row", wsgi("POST", "/predict", BODY)),
            ("request body: flask Request.get_data(cache=False)", get_data),
            ("  what-if: wsgi.input.read(CONTENT_LENGTH)", raw_read),
            ("decode: codecs.decode_instances", lambda: codecs.decode_instances(
                BODY, model.shape, 100_000)),
            ("  what-if: small-batch check in Python + np.array(float32)",
             lambda: small_batch_decode(BODY)),
            ("model: LoadedModel.predict (InferenceSession.run)", lambda: model.predict(rows)),
            ("  what-if: session._sess.run (no Python-side checks)",
             lambda: session._sess.run(["probabilities", "class"], {"input": rows}, None)),
            ("encode: codecs.encode_predictions", lambda: codecs.encode_predictions(
                model.name, model.version, probabilities, classes, model.class_labels)),
            ("response: flask.Response(bytes, mimetype=json)",
             lambda: flask.Response(b"{}", mimetype="application/json")),
        ]
        print("| stage (µs per call, median) | warm | cold caches |")
        print("|---|--:|--:|")
        for name, fn in stages:
            print(f"| {name} | {median_us(fn, False, args.calls):.1f} | "
                  f"{median_us(fn, True, max(100, args.calls // 5)):.1f} |", flush=True)
        app.extensions["softserve.telemetry"].close()
        if not args.no_apps:
            print()
            whole_apps(repository, args.calls)
    return 0


# Issue 20: softserve's defaults against every optional feature off (python -m bench's lean
# server), in-process.
LEAN = {"access_log": False, "metrics": False, "drift_sample": 0.0}
V2_BODY = (b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32",'
           b'"data":[5.1,3.5,1.4,0.2]}]}')
ROUNDS = 7


def whole_apps(repository: Path, calls: int) -> None:
    """The whole app's CPU time per single-row request (the request as softserve's worker hands
    it over, then what the worker runs before it next waits: after-answer work, access-log
    lines to /dev/null; the held drift rows counted at each round's end, as the metrics flush
    would), for the defaults, the lean settings and the no-op app; best of ROUNDS rounds, taken
    round-robin. Above the no-op app: the route's own cost, without gunicorn and the kernel,
    warm caches (under load, with the caches cold, each µs here is ~2-3 µs of server CPU)."""
    import os

    from bench.baselines.noop_wsgi import app as noop
    from serving import create_app
    from serving.telemetry.access_log import access_log_buffer

    def nothing() -> None:
        pass

    apps: dict[str, tuple[Callable[..., object], Callable[[], None], Any]] = {"no-op": (
        noop, nothing, None)}
    for name, settings in (("defaults", {}), ("lean", LEAN)):
        app = create_app({"model_repository": repository, "poll_seconds": 0,
                          "metrics_flush_seconds": 3600, **settings})
        buffer = access_log_buffer(app)
        flush = buffer.buffer_access_log() if buffer is not None else nothing
        apps[name] = (app, flush, app.extensions["softserve.telemetry"])
    requests = [("/predict", "/predict", BODY), ("V2 JSON", "/v2/models/iris/infer", V2_BODY)]

    def run(app: Callable[..., object], flush: Callable[[], None], telemetry: Any,
            path: str, body: bytes, n: int) -> float:
        spent = 0
        for _ in range(n):
            environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "SERVER_NAME": "127.0.0.1",
                       "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
                       "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
                       "wsgi.errors": sys.stderr, "CONTENT_LENGTH": str(len(body)),
                       "CONTENT_TYPE": "application/json", "REMOTE_ADDR": "127.0.0.1"}
            t0 = time.thread_time_ns()
            out = app(environ, lambda *a: None)
            b"".join(out)  # type: ignore[call-overload]
            close = getattr(out, "close", None)
            if close is not None:
                close()
            flush()
            spent += time.thread_time_ns() - t0
        if telemetry is not None:
            t0 = time.thread_time_ns()
            telemetry.flush()  # the held drift rows, as the flush thread counts them
            spent += time.thread_time_ns() - t0
        return spent / n / 1000

    best: dict[tuple[str, str], float] = {}
    devnull, saved = os.open(os.devnull, os.O_WRONLY), os.dup(1)
    os.dup2(devnull, 1)  # the access log
    try:
        for _ in range(ROUNDS):
            for name, (app, flush, telemetry) in apps.items():
                for label, path, body in requests[:1] if name == "no-op" else requests:
                    run(app, flush, telemetry, path, body, 200)
                    figure = run(app, flush, telemetry, path, body, max(1000, calls // 5))
                    best[(name, label)] = min(best.get((name, label), figure), figure)
    finally:
        os.dup2(saved, 1)
        os.close(devnull)
    for _, _, telemetry in apps.values():
        if telemetry is not None:
            telemetry.close()
    noop_us = best[("no-op", "/predict")]
    print(f"| whole app, single row (CPU µs per request, best of {ROUNDS} rounds) | µs | "
          "above the no-op app |")
    print("|---|--:|--:|")
    for (name, label), figure in best.items():
        print(f"| {name}, {label} | {figure:.1f} | {figure - noop_us:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
