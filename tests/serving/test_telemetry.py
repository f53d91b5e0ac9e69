"""Operability against a real multi-worker gunicorn: Prometheus metrics summed over workers,
V2 statistics, JSON access logs with request ids, and a killed worker's gauges gone."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import struct
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from serving.telemetry import Telemetry
from serving.telemetry.record import RequestRecord
from tests.support.net import wait_until
from tests.support.server import Server, start_server

ROW = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
V2 = json.dumps({"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32",
                             "data": [5.1, 3.5, 1.4, 0.2] * 3}]}).encode()
_SAMPLE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$')


def call(url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def metrics(server: Server) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    status, body, headers = call(server.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    parsed: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for line in body.decode().splitlines():
        if line.startswith("#") or not line:
            continue
        match = _SAMPLE.match(line)
        assert match, line
        name, labels, value = match.groups()
        key = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels or "")))
        parsed[name][key] = float(value)
    return parsed


def total(samples: dict[tuple[tuple[str, str], ...], float], **want: str) -> float:
    return sum(v for k, v in samples.items() if all(dict(k).get(a) == b for a, b in want.items()))


def binary_infer_body(rows: int) -> tuple[bytes, str]:
    header = json.dumps({"inputs": [{"name": "input", "shape": [rows, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": rows * 16}}]}).encode()
    return header + struct.pack(f"<{rows * 4}f", *([5.1, 3.5, 1.4, 0.2] * rows)), str(len(header))


@pytest.fixture(scope="module")
def observed(iris_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    metrics_dir = tmp_path_factory.mktemp("metrics")
    server = start_server(iris_repository, tmp_path_factory.mktemp("logs"), workers=2,
                          env={"SOFTSERVE_METRICS_FLUSH_SECONDS": "0.2",
                               "SOFTSERVE_METRICS_DIR": str(metrics_dir)},
                          ready_path="/v2/health/ready")
    yield server, metrics_dir
    server.stop()


def test_metrics_and_statistics_count_every_api_across_workers(observed) -> None:
    server, _ = observed
    base = metrics(server)
    before_rows = total(base.get("softserve_predicted_rows_total", {}), model="iris")
    binary, length = binary_infer_body(5)
    for _ in range(30):  # spread over both workers (sync workers: one connection each)
        assert call(server.url + "/predict", ROW)[0] == 200
        assert call(server.url + "/v1/models/iris:predict", ROW)[0] == 200
        assert call(server.url + "/v2/models/iris/infer", V2)[0] == 200
        assert call(server.url + "/v2/models/iris/versions/1/infer", binary,
                    {"Inference-Header-Content-Length": length})[0] == 200
        assert call(server.url + "/predict", b"not json")[0] == 400
    expected_rows = 30 * (1 + 1 + 3 + 5)

    def check() -> dict:
        m = metrics(server)
        requests = m["softserve_requests_total"]
        assert total(requests, route="/predict", code="200") - total(
            base.get("softserve_requests_total", {}), route="/predict", code="200") == 30
        assert total(requests, route="/predict", code="400") >= 30
        assert total(requests, route="/v1/models/<model:name>:predict", code="200") >= 30
        assert total(requests, route="/v2/models/<model:name>/versions/<version>/infer",
                     code="200", model="iris", version="1") >= 30
        assert total(m["softserve_predicted_rows_total"], model="iris") - before_rows == \
            expected_rows
        return m

    m = wait_until(check)
    assert total(m["softserve_inference_duration_seconds_count"], model="iris") >= 120
    assert total(m["softserve_request_duration_seconds_count"], route="/predict") >= 60
    assert total(m["softserve_request_size_bytes_sum"], route="/predict") >= 30 * len(ROW)
    assert total(m["softserve_response_size_bytes_count"], route="/predict") >= 60
    assert total(m["softserve_model_loads_total"], model="iris", outcome="success") == 2
    assert m["softserve_loaded_versions"][(("model", "iris"),)] == 1
    # Live-summed: only the /metrics request itself is in flight (once every worker has
    # flushed since its last request: a gauge is as fresh as the flush interval).
    def idle() -> None:
        assert metrics(server)["softserve_in_flight_requests"][()] == 1

    wait_until(idle)

    status, body, _ = call(server.url + "/v2/models/iris/versions/1/stats")
    assert status == 200
    (stats,) = json.loads(body)["model_stats"]
    assert stats["name"] == "iris" and stats["version"] == "1"
    assert stats["inference_count"] == total(m["softserve_predicted_rows_total"], model="iris")
    assert stats["execution_count"] == stats["inference_stats"]["success"]["count"]
    assert stats["inference_stats"]["fail"]["count"] >= 30
    for key in ("success", "compute_input", "compute_infer", "compute_output"):
        assert stats["inference_stats"][key]["ns"] > 0
    assert stats["last_inference"] > 0
    assert json.loads(call(server.url + "/v2/models/stats")[1])["model_stats"] == [stats]
    assert call(server.url + "/v2/models/iris/stats")[0] == 200
    assert call(server.url + "/v2/models/nope/stats")[0] == 404
    assert call(server.url + "/v2/models/iris/versions/9/stats")[0] == 404
    assert "statistics" in json.loads(call(server.url + "/v2")[1])["extensions"]


def test_request_ids_and_json_access_log(observed) -> None:
    server, _ = observed
    status, _, headers = call(server.url + "/predict", ROW, {"X-Request-ID": "trace-me-42"})
    assert status == 200 and headers["X-Request-ID"] == "trace-me-42"
    _, _, headers = call(server.url + "/v2/health/live")
    generated = headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)

    def check() -> dict:
        lines = [json.loads(x) for x in server.log().splitlines() if x.startswith("{")]
        access = {x["request_id"]: x for x in lines if x["logger"] == "softserve.access"}
        assert "trace-me-42" in access and generated in access
        return access

    access = wait_until(check)
    line = access["trace-me-42"]
    assert line["method"] == "POST" and line["path"] == "/predict" and line["status"] == 200
    assert line["model"] == "iris" and line["version"] == "1" and line["rows"] == 1
    assert line["duration_ms"] > 0 and "time" in line
    assert access[generated]["model"] is None and access[generated]["status"] == 200
    loads = [json.loads(x) for x in server.log().splitlines()
             if x.startswith("{") and '"softserve.repository"' in x]
    assert any(x["model"] == "iris" and x["version"] == "1" and "loaded" in x["message"]
               for x in loads)


def test_a_killed_worker_is_replaced_and_leaves_no_live_gauge(observed) -> None:
    server, metrics_dir = observed
    workers = sorted({int(p.name.split("_")[-1][:-3]) for p in metrics_dir.glob("gauge_live*")})
    assert len(workers) == 2, workers
    victim = workers[0]
    before = total(metrics(server)["softserve_requests_total"])
    os.kill(victim, signal.SIGKILL)

    def replaced() -> None:
        assert not list(metrics_dir.glob(f"gauge_live*_{victim}.db"))
        assert call(server.url + "/v2/health/ready")[0] == 200

    wait_until(replaced, timeout=15)
    for _ in range(20):
        assert call(server.url + "/predict", ROW)[0] == 200

    def consistent() -> None:
        m = metrics(server)
        # Counters survive their worker; live gauges do not outlive it.
        assert total(m["softserve_requests_total"]) >= before + 20
        assert m["softserve_in_flight_requests"][()] == 1
        assert m["softserve_loaded_versions"][(("model", "iris"),)] == 1

    wait_until(consistent)


def test_metrics_off_and_quiet_logs(iris_repository: Path, tmp_path: Path) -> None:
    server = start_server(iris_repository, tmp_path, workers=1,
                          env={"SOFTSERVE_METRICS": "0", "SOFTSERVE_LOG_LEVEL": "WARNING"},
                          ready_path="/v2/health/ready")
    try:
        assert call(server.url + "/predict", ROW)[0] == 200
        status, body, _ = call(server.url + "/metrics")
        assert status == 404 and "SOFTSERVE_METRICS=0" in json.loads(body)["error"]
        assert call(server.url + "/v2/models/stats")[0] == 404
        assert "statistics" not in json.loads(call(server.url + "/v2")[1])["extensions"]
    finally:
        server.stop()
    assert "softserve.access" not in server.log()
    assert '"level":"INFO"' not in server.log()


def test_buffered_access_log_waits_for_the_flush_and_loses_nothing(
        capfd: pytest.CaptureFixture[str]) -> None:
    """softserve's worker asks ObservedApp to hold access-log lines until it is about to wait
    for events: nothing is written before the flush, every line after it, whole."""
    from serving.telemetry.access_log import ObservedApp

    def app(environ: dict, start_response) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    observed = ObservedApp(app, None, access_log=True)
    flush = observed.buffer_access_log()
    for i in range(100):  # ~30 kB of lines: several writes of at most 4096 bytes
        observed({"REQUEST_METHOD": "GET", "PATH_INFO": f"/x/{i}"}, lambda *a: None)
    assert capfd.readouterr().out == ""
    flush()
    lines = capfd.readouterr().out.splitlines()
    assert [json.loads(line)["path"] for line in lines] == [f"/x/{i}" for i in range(100)]
    flush()
    assert capfd.readouterr().out == ""


def _app_leaving_tasks(done: list[str]):
    """A WSGI app whose requests leave two tasks for after their answer: one that raises,
    one that records the path — the second must run although the first failed."""
    from serving.telemetry.record import RECORD_KEY

    def app(environ: dict, start_response) -> list[bytes]:
        record = environ[RECORD_KEY]

        def fails() -> None:
            raise RuntimeError("a shadow model failed")

        record.after_answer(fails)
        record.after_answer(lambda: done.append(environ["PATH_INFO"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    return app


def test_after_answer_tasks_wait_for_the_workers_flush_and_never_fail_the_answer(
        caplog: pytest.LogCaptureFixture) -> None:
    """Under softserve's worker (buffered), a request's after-answer tasks run at the flush
    the worker makes before it waits, not while the answer is built; a failing one is logged
    and neither stops the others nor changes the answer."""
    from serving.telemetry.access_log import ObservedApp

    done: list[str] = []
    observed = ObservedApp(_app_leaving_tasks(done), None, access_log=False)
    flush = observed.buffer_access_log()
    for i in range(3):
        assert list(observed({"REQUEST_METHOD": "GET", "PATH_INFO": f"/x/{i}"},
                             lambda *a: None)) == [b"ok"]
    assert done == []
    with caplog.at_level(logging.ERROR, logger="softserve.after"):
        flush()
    assert done == ["/x/0", "/x/1", "/x/2"]
    assert [r.getMessage() for r in caplog.records] == [
        "a task run after an answer failed"] * 3
    flush()
    assert done == ["/x/0", "/x/1", "/x/2"]


def test_after_answer_tasks_run_when_another_server_closes_the_answer() -> None:
    """Under any other WSGI server the tasks run at the body's close(), which PEP 3333 servers
    call once the body is sent — not before."""
    from serving.telemetry.access_log import ObservedApp

    done: list[str] = []
    observed = ObservedApp(_app_leaving_tasks(done), None, access_log=False)
    body = observed({"REQUEST_METHOD": "GET", "PATH_INFO": "/y"}, lambda *a: None)
    assert list(body) == [b"ok"] and done == []
    body.close()
    assert done == ["/y"]
    body.close()
    assert done == ["/y"]


def test_close_stops_the_flush_thread_and_flushes_what_is_pending() -> None:
    """What gunicorn.conf's worker_exit relies on: nothing recorded is lost at close, the
    thread is gone when close returns, and a second close adds nothing."""
    before = set(threading.enumerate())
    telemetry = Telemetry(flush_seconds=3600)
    telemetry.start()
    (thread,) = set(threading.enumerate()) - before
    telemetry.request_started()
    telemetry.request_finished(RequestRecord(
        "POST", "/predict", "iris", "1", rows=1, decode_seconds=0.0001, infer_seconds=0.0002,
        encode_seconds=0.0001, status=200, seconds=0.001, request_bytes=50, response_bytes=80))
    labels = {"route": "/predict", "method": "POST", "model": "iris", "version": "1",
              "code": "200"}
    assert telemetry.registry.get_sample_value("softserve_requests_total", labels) is None
    telemetry.close()
    assert not thread.is_alive()
    telemetry.close()
    assert telemetry.registry.get_sample_value("softserve_requests_total", labels) == 1
    assert telemetry.registry.get_sample_value("softserve_predicted_rows_total",
                                               {"model": "iris", "version": "1"}) == 1


def test_every_request_is_labelled_by_its_route_in_process(
        iris_repository: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The request record carries the route label: the rule Flask matched for what Flask
    answers, the fast path's own for inference POSTs, "<unmatched>" when no route took the
    request; and the model and rows once a model answered."""
    from serving import create_app
    from serving.telemetry.access_log import access_log_buffer

    app = create_app({"model_repository": iris_repository, "poll_seconds": 0,
                      "metrics_flush_seconds": 3600})
    telemetry = app.extensions["softserve.telemetry"]
    try:
        client = app.test_client()
        capfd.readouterr()
        assert client.get("/v2/models/iris/versions/1/ready").status_code == 200
        assert client.get("/v2/models/iris/stats").status_code == 200
        assert client.get("/nowhere").status_code == 404
        assert client.delete("/predict").status_code == 405
        assert client.post("/predict", data=ROW).status_code == 200
        assert client.post("/v2/models/iris/infer", data=b"{").status_code == 400
        telemetry.flush()

        def count(route: str, method: str, code: str, model: str = "", version: str = "") -> float:
            return telemetry.registry.get_sample_value("softserve_requests_total", {
                "route": route, "method": method, "model": model, "version": version,
                "code": code}) or 0

        assert count("/v2/models/<model:name>/versions/<version>/ready", "GET", "200") == 1
        assert count("/v2/models/<model:name>/stats", "GET", "200") == 1
        assert count("<unmatched>", "GET", "404") == 1
        assert count("<unmatched>", "DELETE", "405") == 1
        assert count("/predict", "POST", "200", "iris", "1") == 1
        assert count("/v2/models/<model:name>/infer", "POST", "400", "iris", "1") == 1
        lines = [json.loads(x) for x in capfd.readouterr().out.splitlines()]
        assert [(x["route"], x["model"], x["rows"]) for x in lines] == [
            ("/v2/models/<model:name>/versions/<version>/ready", None, None),
            ("/v2/models/<model:name>/stats", None, None), ("<unmatched>", None, None),
            ("<unmatched>", None, None), ("/predict", "iris", 1),
            ("/v2/models/<model:name>/infer", "iris", None)]
        # What softserve's worker looks for on the app gunicorn hands it: the middleware.
        assert access_log_buffer(app) is app.wsgi_app
        assert access_log_buffer(lambda environ, start_response: []) is None
    finally:
        telemetry.close()
        app.extensions["softserve"].close()


@pytest.mark.parametrize("values", [[], [0.0], [0.0002, 0.0002, 0.00021], [20.0, 0.3, 1e-9],
                                    [0.001 * i for i in range(200)]])
def test_bucket_counts_reach_prometheus_as_observe_would_put_them(values: list[float]) -> None:
    """The flush adds bucket counts through prometheus-client's internals (prometheus.py,
    add_bucket_counts): what it exports must be what Histogram.observe() per value exports."""
    from prometheus_client import CollectorRegistry, Histogram

    from serving.telemetry.prometheus import LATENCY, LATENCY_BUCKETS, Figures, PrometheusBridge

    bridge = PrometheusBridge()
    figures = Figures()
    for value in values:
        figures.latency.observe(("/predict",), value)
    bridge.add(figures, 0)
    reference = CollectorRegistry()
    histogram = Histogram(LATENCY, "", ["route"], buckets=LATENCY_BUCKETS, registry=reference)
    for value in values:
        histogram.labels("/predict").observe(value)

    def samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
        return [(s.name, s.labels, s.value) for m in registry.collect() if m.name == LATENCY
                for s in m.samples if not s.name.endswith("_created")]

    got, want = samples(bridge.registry), samples(reference)
    assert len(want) == len(LATENCY_BUCKETS) + 3 if values else not want
    assert [(n, labels) for n, labels, _ in got] == [(n, labels) for n, labels, _ in want]
    assert [v for _, _, v in got] == pytest.approx([v for _, _, v in want])


@pytest.mark.parametrize("buffered", [True, False], ids=["softserve-worker", "other-server"])
def test_an_inference_leaves_no_reference_cycle(iris_repository: Path, buffered: bool,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    """Issue 20: a single-row inference with every default feature on (metrics, drift counting,
    the access log) leaves nothing for the cyclic garbage collector: the work left for after the
    answer (a closure over the request's record) is taken out of the record, so record and task
    are freed when the request is done, under softserve's worker (the access-log buffer) and
    under another WSGI server (the answer's close)."""
    import gc
    import io

    from serving import create_app
    from serving.telemetry.access_log import access_log_buffer

    app = create_app({"model_repository": iris_repository, "poll_seconds": 0,
                      "metrics_flush_seconds": 3600})
    telemetry = app.extensions["softserve.telemetry"]
    buffer = access_log_buffer(app)
    assert buffer is not None
    flush = buffer.buffer_access_log() if buffered else (lambda: None)
    answers: list[str] = []

    def request(path: str, body: bytes) -> None:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "SERVER_NAME": "127.0.0.1",
                   "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                   "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
                   "wsgi.errors": io.StringIO(), "CONTENT_LENGTH": str(len(body))}
        out = app(environ, lambda status, headers, exc_info=None: answers.append(status))
        b"".join(out)
        getattr(out, "close", lambda: None)()
        flush()

    try:
        for path, body in (("/predict", ROW), ("/v2/models/iris/infer", V2)):
            request(path, body)  # anything made once (caches, the drift counter) made now
            gc.collect()
            gc.disable()
            try:
                for _ in range(50):
                    request(path, body)
                left = gc.collect()
            finally:
                gc.enable()
            assert left == 0, f"{path}: {left} objects left in reference cycles by 50 requests"
        assert answers == ["200 OK"] * 102
        telemetry.flush()
        drift_rows = telemetry.registry.get_sample_value(
            "softserve_drift_rows_total", {"model": "iris", "version": "1"})
        assert drift_rows == 1 + 50 + 3 + 150  # the drift counts were taken all the same
    finally:
        telemetry.close()
        capfd.readouterr()


def test_small_requests_rows_are_held_and_counted_as_one_batch() -> None:
    """Issue 20: drift counting holds the rows of small requests and counts them together at
    the flush, or once HOLD_ROWS are held (the work it returns, for after that answer); the
    counts are those of counting each request as it came; big requests are counted at once."""
    import numpy as np

    from modelrepo.drift import BinCounter, feature_statistics
    from serving.telemetry.drift import HOLD_BATCH, HOLD_ROWS, DriftCounts

    rng = np.random.default_rng(7)
    statistics = feature_statistics(rng.normal(0, 1, (500, 3)), ["a", "b", "c"])
    metadata = {"data": {"statistics": statistics}}
    served = rng.normal(0.5, 1, (HOLD_ROWS + 5, 3)).astype(np.float32)
    served[3, 1] = np.nan
    drift, one_by_one = DriftCounts(1.0), BinCounter(statistics)
    tasks = [drift.hold("m", "1", metadata, served[i:i + 1]) for i in range(HOLD_ROWS - 1)]
    assert tasks == [None] * (HOLD_ROWS - 1)  # held, nothing to run after these answers
    count_held = drift.hold("m", "1", metadata, served[HOLD_ROWS - 1:HOLD_ROWS])
    assert count_held is not None
    for i in range(HOLD_ROWS):
        one_by_one.add(served[i:i + 1])
    one_by_one.merge()
    count_held()
    counter = drift._versions[("m", "1")].counter  # type: ignore[union-attr]
    assert counter.rows == HOLD_ROWS and (counter.counts == one_by_one.counts).all()
    assert counter.missing.tolist() == one_by_one.missing.tolist() == [0, 1, 0]
    assert drift.hold("m", "1", metadata, served[HOLD_ROWS:HOLD_ROWS + 2]) is None
    drift.count("m", "1", metadata, served[HOLD_ROWS + 2:])  # a "big" request: at once
    assert counter.rows == HOLD_ROWS + 3  # the 2 held rows are not counted yet
    one_by_one.add(served[HOLD_ROWS:])
    bridge = Telemetry(flush_seconds=0).prometheus
    drift.flush(bridge)  # counts what is held
    assert bridge.registry.get_sample_value("softserve_drift_rows_total",
                                            {"model": "m", "version": "1"}) == HOLD_ROWS + 5
    assert (counter.counts == one_by_one.counts).all()
    assert 1 <= HOLD_BATCH < HOLD_ROWS
