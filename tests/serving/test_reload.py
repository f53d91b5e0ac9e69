"""Hot reload against a real gunicorn: new versions and models, broken versions, rollback,
and a swap under sustained load with zero failed requests."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnx

import modelrepo
from serving.repository import ModelRepository
from tests.support import ROOT
from tests.support.server import start_server

POLL = 0.5
ROW = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()


def call(url: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def republish(repository: Path, model: str = "iris") -> int:
    """Publish v1's model again as the next version (what a retrain does, minus the training)."""
    metadata, model_bytes = modelrepo.read_version(repository / "iris" / "1")
    return modelrepo.publish_version(repository, model, model_bytes, metadata).version


def wait_for_version(url: str, version: str, timeout: float) -> float:
    """Seconds until 20 consecutive answers (spread over the workers) all carry ``version``."""
    start = time.monotonic()
    streak = 0
    while time.monotonic() - start < timeout:
        status, body = call(url, ROW)
        streak = streak + 1 if status == 200 and body["model_version"] == version else 0
        if streak >= 20:
            return time.monotonic() - start
    raise AssertionError(f"{url} did not switch to version {version} within {timeout} s")


def test_new_version_and_new_model_are_served_without_restart(repository: Path,
                                                              tmp_path: Path) -> None:
    server = start_server(repository, tmp_path, env={"SOFTSERVE_POLL_SECONDS": str(POLL)})
    try:
        assert call(server.url + "/predict", ROW)[1]["model_version"] == "1"
        assert republish(repository) == 2
        wait_for_version(server.url + "/predict", "2", POLL + 1)
        # Version 1 stays loaded and addressable.
        status, body = call(server.url + "/v2/models/iris/versions/1/ready")
        assert status == 200 and body["version"] == "1"
        # A whole new model directory is picked up the same way.
        republish(repository, model="second")
        wait_for_version(server.url + "/v1/models/second:predict", "1", POLL + 1)
        # Two models now: /predict stays on iris, the first published, in every worker.
        for _ in range(20):
            status, body = call(server.url + "/predict", ROW)
            assert status == 200 and body["model_name"] == "iris", body
    finally:
        assert server.stop() == 0


def _graph_that_loads_but(kind: str) -> bytes:
    """A graph with the contract's tensor signature that onnxruntime loads, but that fails at
    its first run, or answers one row with two probabilities: only running it can tell."""
    x = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 4])
    p = onnx.helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["N", 3])
    c = onnx.helper.make_tensor_value_info("class", onnx.TensorProto.INT64, ["N"])
    const = {"seven": [7], "one": [1], "two": [2]}
    initializers = [onnx.helper.make_tensor(n, onnx.TensorProto.INT64, [1], v)
                    for n, v in const.items()]
    if kind == "fails at its first run":  # column 7 of 4
        nodes = [onnx.helper.make_node("Gather", ["input", "seven"], ["g"], axis=1),
                 onnx.helper.make_node("Concat", ["g", "g", "g"], ["probabilities"], axis=1)]
    else:  # the top 2 + int(max(row)) columns: a width no shape inference can know
        nodes = [onnx.helper.make_node("ReduceMax", ["input"], ["m"], keepdims=0),
                 onnx.helper.make_node("Cast", ["m"], ["mi"], to=onnx.TensorProto.INT64),
                 onnx.helper.make_node("Reshape", ["mi", "one"], ["m1"]),
                 onnx.helper.make_node("Add", ["m1", "two"], ["k"]),
                 onnx.helper.make_node("TopK", ["input", "k"], ["probabilities", "i"], axis=1)]
    nodes.append(onnx.helper.make_node("ArgMax", ["probabilities"], ["class"], axis=1,
                                       keepdims=0))
    model = onnx.helper.make_model(
        onnx.helper.make_graph(nodes, "broken", [x], [p, c], initializer=initializers),
        opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _break(version_dir: Path, kind: str) -> None:
    model = version_dir / "model.onnx"
    meta_path = version_dir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    if kind == "corrupt model.onnx":
        data = b"\x08\x07garbage that is not a protobuf graph" * 10
        model.write_bytes(data)
        meta["model"]["sha256"] = hashlib.sha256(data).hexdigest()
        meta_path.write_text(json.dumps(meta))
    elif kind == "sha256 mismatch":
        model.write_bytes(model.read_bytes() + b"\x00")
    elif kind == "tensor signature":
        proto = onnx.load(model)
        proto.graph.output[1].name = "label"
        for node in proto.graph.node:
            node.output[:] = ["label" if o == "class" else o for o in node.output]
        data = proto.SerializeToString()
        model.write_bytes(data)
        meta["model"]["sha256"] = hashlib.sha256(data).hexdigest()
        meta_path.write_text(json.dumps(meta))
    elif kind in ("fails at its first run", "answers the wrong shape"):
        data = _graph_that_loads_but(kind)
        model.write_bytes(data)
        meta["model"]["sha256"] = hashlib.sha256(data).hexdigest()
        meta_path.write_text(json.dumps(meta))
    elif kind == "missing model.onnx":
        model.unlink()
    elif kind == "unreadable JSON":
        meta_path.write_text(meta_path.read_text()[:100])
    else:
        raise ValueError(kind)


BROKEN = {2: ("corrupt model.onnx", "onnxruntime cannot load"),
          3: ("sha256 mismatch", "sha256"),
          4: ("tensor signature", "differ from metadata"),
          5: ("missing model.onnx", "model.onnx is missing"),
          6: ("unreadable JSON", "not valid JSON"),
          # Refused since issue 12: a new session runs one row before it is swapped in.
          7: ("fails at its first run", "onnxruntime cannot run model.onnx"),
          8: ("answers the wrong shape", "answers one row with shapes [1, 2] and [1]")}


def test_broken_versions_are_refused_logged_once_and_never_served(repository: Path,
                                                                  tmp_path: Path) -> None:
    server = start_server(repository, tmp_path, env={"SOFTSERVE_POLL_SECONDS": str(POLL)})
    try:
        model_dir = repository / "iris"
        for number, (kind, _) in BROKEN.items():
            staging = model_dir / f".tmp-staging-{number}"
            shutil.copytree(model_dir / "1", staging)
            meta = json.loads((staging / "metadata.json").read_text())
            meta["version"] = number
            (staging / "metadata.json").write_text(json.dumps(meta))
            _break(staging, kind)
            staging.rename(model_dir / str(number))
        time.sleep(4 * POLL)  # several polls: each must not log again
        for number, (kind, reason) in BROKEN.items():
            status, body = call(f"{server.url}/v2/models/iris/versions/{number}/ready")
            assert status == 503 and reason in body["error"], (kind, body)
            status, body = call(f"{server.url}/v2/models/iris/versions/{number}/infer", b"{}")
            assert status == 503 and reason in body["error"], (kind, body)
        for _ in range(10):  # both workers keep serving version 1
            status, body = call(server.url + "/predict", ROW)
            assert status == 200 and body["model_version"] == "1"
        assert call(server.url + "/v2/health/ready")[0] == 200
        log = server.log()
        for number in BROKEN:
            # Once per worker (2), with its reason, however many polls passed.
            assert log.count(f"refusing model iris version {number}:") == 2, log
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_rollback_command_switches_the_running_server_back(repository: Path,
                                                           tmp_path: Path) -> None:
    republish(repository)
    server = start_server(repository, tmp_path, env={"SOFTSERVE_POLL_SECONDS": str(POLL)})
    try:
        wait_for_version(server.url + "/predict", "2", POLL + 1)
        run = subprocess.run([sys.executable, "-m", "modelrepo", "--artifacts", str(repository),
                              "rollback", "iris"], cwd=ROOT, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        wait_for_version(server.url + "/predict", "1", POLL + 1)
        status, body = call(server.url + "/v2/models/iris/versions/2/ready")
        assert status == 404 and "no version '2'" in body["error"]
        assert republish(repository) == 3  # 2 is retired, never reused
        wait_for_version(server.url + "/predict", "3", POLL + 1)
    finally:
        assert server.stop() == 0


def test_only_the_newest_keep_versions_are_loaded(repository: Path, tmp_path: Path) -> None:
    republish(repository)
    republish(repository)
    server = start_server(repository, tmp_path, workers=1,
                          env={"SOFTSERVE_KEEP_VERSIONS": "2"})
    try:
        assert call(server.url + "/v1/models/iris")[1]["versions"] == ["2", "3"]
        status, body = call(server.url + "/v2/models/iris/versions/1/infer", b"{}")
        assert status == 404 and "not loaded" in body["error"]
        assert (repository / "iris" / "1").is_dir(), "unloaded, still on disk"
        assert call(server.url + "/v2/models/iris/versions/2/ready")[0] == 200
    finally:
        assert server.stop() == 0


def test_a_request_in_flight_finishes_on_the_version_it_started_with(repository: Path) -> None:
    repo = ModelRepository(repository)
    repo.scan()
    held = repo.get("iris")
    republish(repository)
    repo.scan()
    assert repo.get("iris").version == "2" and held.version == "1"
    probabilities, classes = held.predict(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
    assert classes.tolist() == [0] and probabilities.shape == (1, 3)
    # Nothing changed on disk: the next scan reuses the loaded sessions, re-reading nothing.
    before = repo.models["iris"].loaded
    repo.scan()
    assert all(repo.models["iris"].loaded[v] is before[v] for v in before)


def test_publish_and_rollback_under_sustained_load_fail_no_request(repository: Path,
                                                                   tmp_path: Path) -> None:
    """Eight clients hammer V2 infer and /predict while a version is published, then rolled
    back. Every request must succeed, and every worker must switch within poll + 1 s."""
    server = start_server(repository, tmp_path, env={"SOFTSERVE_POLL_SECONDS": str(POLL)})
    infer = json.dumps({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                                    "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}).encode()
    results: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def client(n: int) -> None:
        url, body = ((server.url + "/v2/models/iris/infer", infer) if n % 2
                     else (server.url + "/predict", ROW))
        while not stop.is_set():
            try:
                status, answer = call(url, body)
                version = answer.get("model_version", "")
            except (OSError, ValueError) as exc:
                status, version = 0, repr(exc)
            results.append((time.monotonic(), status, version))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
        published_at = time.monotonic()
        republish(repository)
        time.sleep(POLL + 2)
        rolled_back_at = time.monotonic()
        assert subprocess.run([sys.executable, "-m", "modelrepo", "--artifacts",
                               str(repository), "rollback", "iris"], cwd=ROOT).returncode == 0
        time.sleep(POLL + 2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        assert server.stop() == 0
    failed = [r for r in results if r[1] != 200]
    assert not failed, failed[:5]
    last_old = max(t for t, _, v in results if v == "1" and published_at < t < rolled_back_at)
    last_new = max(t for t, _, v in results if v == "2" and t > rolled_back_at)
    switch, switch_back = last_old - published_at, last_new - rolled_back_at
    print(f"\nreload under load: {len(results)} requests, 0 failed; switch to v2 after "
          f"{switch:.2f} s, back to v1 after {switch_back:.2f} s (poll {POLL} s)")
    # What is asserted is that both switches happened with no request failing; how fast is
    # printed above and measured by `python -m bench.switch`, never asserted (a loaded machine
    # once took 1.69 s against a 1.5 s bound here).
    assert any(v == "2" for _, _, v in results) and results[-1][2] == "1"


# Run in a fresh process: freezing is per process, and this one's pytest heap is no worker's.
FROZEN_HEAP_SCRIPT = """
import gc, sys, weakref
from pathlib import Path
import modelrepo
from serving.repository import ModelRepository

repository = Path(sys.argv[1])
repo = ModelRepository(repository, keep_versions=1)
repo.scan()
first = repo.get("iris")
print(gc.get_freeze_count(), len(gc.get_objects()))
metadata, model_bytes = modelrepo.read_version(repository / "iris" / "1")
modelrepo.publish_version(repository, "iris", model_bytes, metadata)
gone = weakref.ref(first)
del first
repo.scan()
# Frozen, version 1 is never walked by the collector again: still freed, once unloaded.
print(repo.get("iris").version, gone() is None)
"""


def test_the_first_scan_freezes_the_heap_and_unloaded_versions_are_still_freed(
        repository: Path) -> None:
    """Issue 12: a worker's first full garbage collection walked its whole heap with the GIL
    held (~60 ms), set off by the allocations of a version switch every few dozen switches.
    The first scan (at boot) collects once and freezes what survives."""
    run = subprocess.run([sys.executable, "-c", FROZEN_HEAP_SCRIPT, str(repository)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    heap, switched = run.stdout.splitlines()[-2:]
    frozen, unfrozen = map(int, heap.split())
    assert frozen > 10_000 and unfrozen < frozen / 10, heap
    assert switched == "2 True"
