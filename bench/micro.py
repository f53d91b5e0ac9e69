"""Micro-benchmark of the single-row /predict path, in-process, stage by stage.

No gunicorn, no sockets: the Flask app is called as a WSGI callable, and each stage of the
route (body read, decode, onnxruntime, encode, the Response) is timed on its own, warm (the
same call in a loop) and cold (the caches flushed between calls by reading 4 MiB, roughly
what a request through gunicorn, Flask and the kernel does to them). Next to the stages,
"what if" variants written here (the serving code is not changed) show what a cheaper
stage would cost. Figures are µs per call, the median of many calls.

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
