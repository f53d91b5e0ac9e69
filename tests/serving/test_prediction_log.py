"""The prediction log, the feedback endpoint and drift figures: the log's writer in-process
(rotation, the total cap, an unwritable directory), then real gunicorn servers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelrepo
from modelrepo.drift import feature_statistics
from modelrepo.report import read_log
from serving.telemetry.prediction_log import PredictionLog
from serving.telemetry.prometheus import PrometheusBridge
from serving.telemetry.record import RequestRecord
from tests.support import ROOT
from tests.support.models import linear_model_bytes, linear_metadata
from tests.support.net import send, wait_until
from tests.support.server import Server, start_server

ROW = [0.5, -1.0, 2.0, 0.0]


def _record(request_id: str) -> RequestRecord:
    record = RequestRecord("POST", route="/predict", model="m", version="1")
    record.request_id = request_id
    return record


def _log_one(log: PredictionLog, request_id: str, rows: int = 1) -> None:
    log.prediction(_record(request_id), ["f0", "f1", "f2", "f3"], ["c0", "c1", "c2"],
                   np.full((rows, 4), 0.25, dtype=np.float32),
                   np.full((rows, 3), 1 / 3, dtype=np.float32), np.zeros(rows, dtype=np.int64))


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("events-*.jsonl"))


def test_files_rotate_by_size_and_the_oldest_go_past_the_total_cap(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, file_bytes=8192, max_bytes=3 * 8192, flush_seconds=3600)
    for i in range(400):  # ~500 bytes a record: ~200 kB in all, written 64 kB at a time
        _log_one(log, f"r{i:04d}")
        log.flush()
    log.close()
    files = _files(tmp_path)
    sizes = [f.stat().st_size for f in files]
    assert len(files) <= 3 and sum(sizes) <= 3 * 8192, sizes
    assert all(size <= 8192 for size in sizes), sizes
    kept = [json.loads(line)["id"] for f in files for line in f.read_bytes().splitlines()]
    assert kept == sorted(kept) and kept[-1] == "r0399"  # the newest survive, whole lines
    assert "r0000" not in kept


def test_records_are_cloudevents_with_the_documented_schema(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    _log_one(log, "req-1", rows=2)
    log.feedback([{"model": "m", "request_id": "req-1", "row": 1, "label": "c2"}])
    log.close()
    prediction, feedback = [json.loads(line) for line in
                            _files(tmp_path)[0].read_bytes().splitlines()]
    for event in (prediction, feedback):
        assert event["specversion"] == "1.0" and event["datacontenttype"] == "application/json"
        assert event["source"] == f"/softserve/{os.uname().nodename}/{os.getpid()}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", event["time"])
    assert prediction["id"] == "req-1"
    assert prediction["type"] == "io.softserve.inference.response"
    assert prediction["dataschema"] == "urn:softserve:prediction:1"
    assert prediction["data"] == {
        "model": "m", "version": "1", "route": "/predict", "feature_names": ["f0", "f1", "f2",
                                                                             "f3"],
        "inputs": [[0.25] * 4] * 2, "probabilities": [[pytest.approx(1 / 3)] * 3] * 2,
        "class": [0, 0], "label": ["c0", "c0"]}
    assert feedback["type"] == "io.softserve.feedback"
    assert feedback["dataschema"] == "urn:softserve:feedback:1"
    data = read_log(tmp_path, "m")
    assert [(p.id, row, label) for p, row, label in data.labelled()] == [("req-1", 1, "c2")]


def test_an_unwritable_directory_drops_counts_and_logs_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the log directory should be")
    log = PredictionLog(blocker / "log")
    bridge = PrometheusBridge()
    for i in range(5):
        _log_one(log, f"r{i}")
        log.flush()
    log.add_counts(bridge)
    assert bridge.prediction_log_dropped.labels("prediction")._value.get() == 5
    warnings = [r for r in caplog.records if r.name == "softserve.prediction_log"]
    assert len(warnings) == 1 and "cannot write" in warnings[0].getMessage()


FULL_DISK = """
import json, resource, signal, sys
import numpy as np
from pathlib import Path
from serving.telemetry.prediction_log import PredictionLog
from serving.telemetry.record import RequestRecord
log = PredictionLog(Path(sys.argv[1]), flush_seconds=3600)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write(2) fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))
record = RequestRecord("POST", route="/predict", model="m", version="1")
for i in range(200):
    record.request_id = f"r{i:04d}"
    log.prediction(record, ["a"], ["x", "y"], np.zeros((1, 1), dtype=np.float32),
                   np.zeros((1, 2), dtype=np.float32), np.zeros(1, dtype=np.int64))
    if i % 7 == 0:
        log.flush()
log.flush()
print(json.dumps({"written": log.written, "dropped": log.dropped}))
"""


def test_a_full_disk_drops_whole_records_and_leaves_no_half_line(tmp_path: Path) -> None:
    """A file size limit (EFBIG, as ENOSPC would) stops writes part-way: what could not be
    written is dropped and counted, and the file keeps only whole lines."""
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)
    assert counts["dropped"]["prediction"] > 0, counts
    assert counts["written"]["prediction"] + counts["dropped"]["prediction"] == 200
    lines = [line for f in _files(tmp_path) for line in f.read_bytes().splitlines()]
    assert len(lines) == counts["written"]["prediction"]
    assert all(json.loads(line)["type"] == "io.softserve.inference.response" for line in lines)
    assert all(f.read_bytes().endswith(b"\n") for f in _files(tmp_path))
    assert "cannot write" in done.stderr


# ------------------------------------------------------------------- real gunicorn servers


def _publish_with_statistics(repository: Path) -> np.ndarray:
    """A linear model "m" (4 features, 3 classes) with statistics of standard normal data."""
    train = np.random.default_rng(3).normal(0, 1, (2000, 4))
    metadata = linear_metadata(4, 3)
    metadata["data"] = {"source": "normal", "statistics": feature_statistics(
        train, metadata["feature_names"])}
    modelrepo.publish_version(repository, "m", linear_model_bytes(4, 3), metadata)
    return train


@pytest.fixture(scope="module")
def logged_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """Two workers, a prediction log of small files."""
    tmp = tmp_path_factory.mktemp("logged")
    _publish_with_statistics(tmp / "repository")
    with start_server(tmp / "repository", tmp, workers=2, ready_path="/v2/health/ready", env={
            "SOFTSERVE_PREDICTION_LOG": str(tmp / "log"),
            "SOFTSERVE_FEEDBACK_MAX_ITEMS": "50"}) as server:
        yield server, tmp / "log"


def test_two_workers_write_two_files_of_whole_records(
        logged_server: tuple[Server, Path]) -> None:
    server, log_dir = logged_server
    ids = []
    for i in range(200):  # a fresh connection each: both workers answer some
        reply = send(server.port, "POST", "/predict", json.dumps(
            {"instances": [[i, 0, 0, 0]]}).encode())
        assert reply.status == 200
        ids.append(reply.headers["x-request-id"])

    def written() -> list[Path]:
        files = _files(log_dir)
        lines = [line for f in files for line in f.read_bytes().splitlines()]
        assert len(lines) >= 200
        return files

    files = wait_until(written, timeout=10)
    assert len(files) == 2, files  # one per worker
    pids = sorted(int(f.name.split("-")[2]) for f in files)
    assert pids == sorted(server.worker_pids())
    for f in files:
        for line in f.read_bytes().splitlines():
            event = json.loads(line)  # every line a whole event: nothing interleaved
            assert event["source"].endswith(f"/{f.name.split('-')[2]}")
    logged = {p.id: p for p in read_log(log_dir, "m").predictions.values()}
    assert set(ids) <= set(logged)
    assert logged[ids[7]].inputs == [[7.0, 0.0, 0.0, 0.0]]


def test_every_api_logs_its_inferences(logged_server: tuple[Server, Path]) -> None:
    server, log_dir = logged_server
    rows = [[1.5, 2.5, 3.5, 4.5], [0.0, -1.0, 1.0, 2.0]]
    header = json.dumps({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 32}}]}).encode()
    requests = {
        "api-simple": ("/predict", json.dumps({"instances": rows}).encode(), {}),
        "api-v1": ("/v1/models/m:predict", json.dumps(
            {"instances": [dict(zip(["f0", "f1", "f2", "f3"], r)) for r in rows]}).encode(), {}),
        "api-v2-json": ("/v2/models/m/versions/1/infer", json.dumps({"inputs": [
            {"name": "input", "shape": [2, 4], "datatype": "FP32", "data": rows}]}).encode(),
            {}),
        "api-v2-binary": ("/v2/models/m/infer",
                          header + np.asarray(rows, dtype="<f4").tobytes(),
                          {"Inference-Header-Content-Length": str(len(header))}),
    }
    for request_id, (path, body, headers) in requests.items():
        reply = send(server.port, "POST", path, body, {**headers, "X-Request-ID": request_id})
        assert reply.status == 200, reply.body

    def logged() -> dict[str, Any]:
        found = read_log(log_dir, "m").predictions
        assert set(requests) <= set(found)
        return found

    found = wait_until(logged, timeout=10)
    for request_id in requests:
        assert found[request_id].inputs == rows and found[request_id].version == "1"
        assert len(found[request_id].labels) == 2


BAD_FEEDBACK = [
    ("not JSON", b"{", 400, "must be JSON"),
    ("a number", b"3", 400, "must be an object"),
    ("an empty list", b"[]", 400, "empty"),
    ("no id", b'{"label": "c0"}', 400, '"id"'),
    ("no label", b'{"id": "x"}', 400, '"label"'),
    ("unknown label", b'{"id": "x", "label": "rose"}', 400, "not a label of model 'm'"),
    ("label as a number", b'{"id": "x", "label": 1}', 400, '"label"'),
    ("unknown class", b'{"id": "x", "label": "c0", "class": 9}', 400, '"class" 9'),
    ("bad version", b'{"id": "x", "label": "c0", "model_version": 1}', 400, "model_version"),
    ("unknown key", b'{"id": "x", "label": "c0", "truth": "c1"}', 400, "unknown key 'truth'"),
    ("negative row", b'{"id": "x", "label": "c0", "row": -1}', 400, '"row"'),
    ("an item not an object", b'[{"id": "x", "label": "c0"}, "c1"]', 400, "feedback[1]"),
    ("too many items", json.dumps([{"id": "x", "label": "c0"}] * 51).encode(), 413, "51"),
]


@pytest.mark.parametrize("body, status, message", [b[1:] for b in BAD_FEEDBACK],
                         ids=[b[0] for b in BAD_FEEDBACK])
def test_bad_feedback_is_refused_with_a_clear_error(
        logged_server: tuple[Server, Path], body: bytes, status: int, message: str) -> None:
    server, _ = logged_server
    reply = send(server.port, "POST", "/v2/models/m/feedback", body)
    assert reply.status == status, reply.body
    assert message in reply.json()["error"]


def test_feedback_is_accepted_logged_and_counted(logged_server: tuple[Server, Path]) -> None:
    server, log_dir = logged_server
    reply = send(server.port, "POST", "/predict", json.dumps({"instances": [ROW]}).encode())
    answered = reply.json()["predictions"][0]
    request_id = reply.headers["x-request-id"]
    items = [{"id": request_id, "label": answered["label"], "model_version": "1",
              "class": answered["label"]},
             {"id": "never-served", "label": "c1"},  # unknown ids: accepted, unmatched
             # a version the repository never had: logged, but no metric series of its own
             {"id": "never-served", "label": "c1", "model_version": "987654", "class": "c1"}]
    reply = send(server.port, "POST", "/v2/models/m/feedback", json.dumps(items).encode())
    assert reply.status == 202 and reply.json() == {"accepted": 3, "logged": True}
    assert send(server.port, "POST", "/v2/models/nope/feedback", b"{}").status == 404
    assert "softserve_feedback" in send(server.port, "GET", "/v2").json()["extensions"]

    def joined() -> None:
        # The workers write the directory's first file at their first flush: not there yet is
        # "not yet" when this test runs first.
        assert log_dir.is_dir()
        data = read_log(log_dir, "m")
        assert any(p.id == request_id for p, _, _ in data.labelled())
        assert data.unmatched() >= 1

    wait_until(joined, timeout=10)

    def counted() -> None:
        metrics = send(server.port, "GET", "/metrics").body.decode()
        assert 'softserve_feedback_total{model="m",outcome="correct",version="1"} 1.0' in metrics
        assert 'version="987654"' not in metrics
        assert re.search(r'softserve_prediction_log_records_total\{kind="feedback"\} [1-9]',
                         metrics)

    wait_until(counted, timeout=10)


def test_metrics_show_psi_and_out_of_range_summed_over_workers(
        logged_server: tuple[Server, Path]) -> None:
    server, _ = logged_server
    rng = np.random.default_rng(4)
    served = rng.normal(0, 1, (400, 4))
    served[:, 3] = rng.normal(6, 1, 400)  # f3 far outside its training range
    for start in range(0, 400, 20):
        body = json.dumps({"instances": served[start:start + 20].tolist()}).encode()
        assert send(server.port, "POST", "/predict", body).status == 200

    def figures() -> dict[str, float]:
        metrics = send(server.port, "GET", "/metrics").body.decode()
        assert "softserve_drift_bin_values" not in metrics  # read into the PSI, not shown
        found = dict(re.findall(
            r'softserve_drift_psi\{feature="(f\d)",model="m",version="1"\} (\S+)', metrics))
        out = dict(re.findall(r'softserve_drift_out_of_range_total\{feature="(f\d)",model="m",'
                              r'version="1"\} (\S+)', metrics))
        assert float(out["f3"]) >= 300, out
        return {k: float(v) for k, v in found.items()}

    psi = wait_until(figures, timeout=10)
    assert psi["f3"] > 0.25 and psi["f1"] < psi["f3"], psi


def test_an_unwritable_log_directory_never_fails_a_request(tmp_path: Path) -> None:
    _publish_with_statistics(tmp_path / "repository")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with start_server(tmp_path / "repository", tmp_path, workers=1,
                      ready_path="/v2/health/ready",
                      env={"SOFTSERVE_PREDICTION_LOG": str(blocker / "log")}) as server:
        for _ in range(20):
            reply = send(server.port, "POST", "/predict",
                         json.dumps({"instances": [ROW]}).encode())
            assert reply.status == 200, reply.body
        reply = send(server.port, "POST", "/v2/models/m/feedback",
                     b'{"id": "x", "label": "c0"}')
        assert reply.status == 202

        def dropped() -> None:
            metrics = send(server.port, "GET", "/metrics").body.decode()
            assert 'softserve_prediction_log_dropped_total{kind="prediction"} 20.0' in metrics
            assert 'softserve_prediction_log_dropped_total{kind="feedback"} 1.0' in metrics

        wait_until(dropped, timeout=10)
        time.sleep(1.2)  # the flush thread tries again: still one warning
        assert server.log().count("prediction log: cannot write") == 1, server.log()
