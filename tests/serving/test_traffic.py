"""Model traffic against a real gunicorn (issue 16): aliases by every addressing form, promote
and its undo, a canary split and its sticky routing, a shadow that never touches an answer,
a malformed or dangling policy, changes under load, and the progressive rollout."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import modelrepo
from modelrepo import policy
from modelrepo.rollout import parse_metrics, total
from tests.support import ROOT
from tests.support.models import linear_metadata, linear_model_bytes
from tests.support.net import send, wait_until
from tests.support.server import Server, start_server

POLL = 0.5
MODEL = "lin"
F, K = 4, 3
ROW = [0.5, -1.0, 2.0, 1.5]
TRAP = [50.0, 0.0, 0.0, 0.0]  # a row the trap version fails on (a feature >= 10)
ENV = {"SOFTSERVE_POLL_SECONDS": str(POLL), "SOFTSERVE_METRICS_FLUSH_SECONDS": "0.2",
       "SOFTSERVE_ACCESS_LOG": "0"}


def trap_model_bytes(seed: int = 0) -> bytes:
    """The linear model of ``seed``, plus a trap: it adds ``zeros[int(max(row values))]`` to its
    logits, so it answers as the linear model for every batch whose largest value is under 10
    (the loader's warm-up row of zeros included) and fails at run time (Gather out of bounds)
    for any batch holding a value of 10 or more."""
    model = onnx.load_from_string(linear_model_bytes(F, K, seed=seed))
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.zeros((10, K), np.float32), "trap"))
    graph.node.extend([
        helper.make_node("ReduceMax", ["input"], ["largest"], keepdims=0),
        helper.make_node("Cast", ["largest"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["trap", "index"], ["offset"], axis=0),
        helper.make_node("Add", ["logits", "offset"], ["trapped"]),
    ])
    for node in graph.node:
        if node.op_type in ("Softmax", "ArgMax"):
            node.input[0] = "trapped"
    nodes = list(graph.node)  # topological order: the trap before its readers
    readers = [n for n in nodes if n.op_type in ("Softmax", "ArgMax")]
    del graph.node[:]
    graph.node.extend([n for n in nodes if n not in readers] + readers)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def publish(repository: Path, kind: str = "same", seed: int = 0) -> int:
    """Publish the next version of ``lin``: "same" weights as seed 0's, or the "trap" model."""
    data = trap_model_bytes(seed) if kind == "trap" else linear_model_bytes(F, K, seed=seed)
    return modelrepo.publish_version(repository, MODEL, data, linear_metadata(F, K)).version


def cli(repository: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([sys.executable, "-m", "modelrepo", "--artifacts", str(repository),
                          *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if check:
        assert run.returncode == 0, run.stdout + run.stderr
    return run


def predict(server: Server, path: str = f"/v1/models/{MODEL}:predict", rows: list[list[float]]
            | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    reply = send(server.port, "POST", path, json.dumps({"instances": rows or [ROW]}).encode(),
                 headers)
    return reply.status, reply.json()


def infer(server: Server, version: str | None = None, rows: list[list[float]] | None = None
          ) -> tuple[int, dict]:
    rows = rows or [ROW]
    path = f"/v2/models/{MODEL}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {"inputs": [{"name": "input", "shape": [len(rows), F], "datatype": "FP32",
                        "data": [v for r in rows for v in r]}]}
    reply = send(server.port, "POST", path, json.dumps(body).encode())
    return reply.status, reply.json()


def serves(server: Server, version: str, streak: int = 16) -> None:
    """Wait until ``streak`` answers in a row to unversioned requests (V1 and V2 alternately,
    spread over the workers) carry ``version``: within a poll or two."""
    def check() -> None:
        for i in range(streak):
            status, body = predict(server) if i % 2 else infer(server)
            assert status == 200 and body["model_version"] == version, body
    wait_until(check, timeout=POLL * 6 + 5, interval=0.05)


def metrics(server: Server) -> dict:
    return parse_metrics(send(server.port, "GET", "/metrics").body.decode())


@pytest.fixture
def lin(tmp_path: Path) -> Path:
    """A repository with ``lin`` version 1 (the linear model of seed 0)."""
    repository = tmp_path / "repository"
    publish(repository)
    return repository


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        assert server.stop() == 0, server.log()


def serve(lin: Path, tmp_path: Path, started: list[Server], workers: int = 2) -> Server:
    server = start_server(lin, tmp_path, workers=workers, env=ENV,
                          ready_path="/v2/health/ready")
    started.append(server)
    return server


def test_aliases_answer_by_every_addressing_form_and_promote_is_undone_by_rollback(
        lin: Path, tmp_path: Path, started: list[Server]) -> None:
    publish(lin, seed=1)
    server = serve(lin, tmp_path, started)
    serves(server, "2")  # no policy: the latest version, as before
    cli(lin, "alias", MODEL, "candidate", "2")
    cli(lin, "alias", MODEL, "production", "1")  # last: once it serves, both are in force
    serves(server, "1")
    forms = {
        f"/v2/models/{MODEL}/versions/production/infer": "1",
        f"/v2/models/{MODEL}/versions/candidate/infer": "2",
        f"/v1/models/{MODEL}/labels/production:predict": "1",
        f"/v1/models/{MODEL}/labels/candidate:predict": "2",
        f"/v1/models/{MODEL}/versions/2:predict": "2",
        f"/v1/models/{MODEL}/versions/1:predict": "1",
        "/predict": "1",
    }
    for path, version in forms.items():
        if "/v2/" in path:
            status, body = infer(server, path.split("/")[5])
        else:
            status, body = predict(server, path)
        assert status == 200 and body["model_version"] == version, (path, body)
    for alias, version in (("candidate", "2"), ("production", "1")):
        base = f"/v2/models/{MODEL}/versions/{alias}"
        meta = send(server.port, "GET", base).json()
        assert meta["versions"] == [version] and meta["name"] == MODEL, meta  # spec-shaped
        assert send(server.port, "GET", base + "/ready").json() == {
            "name": MODEL, "version": version, "ready": True}
    status, body = predict(server, f"/v1/models/{MODEL}/labels/nope:predict")
    assert status == 404 and "aliases: candidate, production" in body["error"]
    # promote, then undo it
    assert "production 1 -> 2" in cli(lin, "promote", MODEL, "candidate").stdout
    serves(server, "2")
    assert "production 2 -> 1" in cli(lin, "rollback", MODEL).stdout
    serves(server, "1")
    assert all((lin / MODEL / str(v)).is_dir() for v in (1, 2)), "a rollback retires nothing"
    cli(lin, "promote", MODEL, "2")
    serves(server, "2")
    listed = cli(lin, "list", MODEL).stdout
    assert "[candidate, production]" in listed and "(production)" in listed, listed


def test_a_20_percent_canary_holds_across_workers_and_sticky_users_keep_their_version(
        lin: Path, tmp_path: Path, started: list[Server]) -> None:
    publish(lin, seed=1)
    cli(lin, "alias", MODEL, "production", "1")
    cli(lin, "canary", MODEL, "2", "--percent", "20", "--sticky-header", "X-User-Id")
    server = serve(lin, tmp_path, started)
    before = metrics(server)
    answers: Counter[str] = Counter()
    lock = threading.Lock()

    def client(n: int) -> None:
        mine: Counter[str] = Counter()
        for i in range(260):
            status, body = (infer(server) if (n + i) % 2 else predict(server))
            mine[body["model_version"] if status == 200 else f"status {status}"] += 1
        with lock:
            answers.update(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    n = sum(answers.values())
    assert n == 2080 and set(answers) == {"1", "2"}, answers
    # Binomial(n, 0.2): 5 standard deviations either side (a false alarm in ~2 million runs).
    mean, sd = 0.2 * n, math.sqrt(n * 0.2 * 0.8)
    print(f"\ncanary 20%: {answers['2']} of {n} requests on the canary "
          f"({answers['2'] / n:.2%}; 5-sigma bounds {mean - 5 * sd:.0f}-{mean + 5 * sd:.0f})")
    assert abs(answers["2"] - mean) <= 5 * sd, answers

    def shares_counted() -> None:  # the share each version got, as /metrics reports it
        now = metrics(server)
        for version, target in (("2", "canary"), ("1", "production")):
            got = total(now, "softserve_routed_requests_total", model=MODEL, version=version,
                        target=target) - total(before, "softserve_routed_requests_total",
                                               model=MODEL, version=version, target=target)
            assert got == answers[version], (version, got, answers)
        assert total(now, "softserve_model_request_duration_seconds_count", model=MODEL,
                     version="2") >= answers["2"]
    wait_until(shares_counted, timeout=10)

    # Sticky: a user id hashes to one version, in every worker, request after request.
    seen: dict[str, set[str]] = {}
    for i in range(600):
        user = f"user-{i % 200}"
        status, body = predict(server, headers={"X-User-Id": user})
        assert status == 200
        seen.setdefault(user, set()).add(body["model_version"])
    assert all(len(v) == 1 for v in seen.values()), [u for u, v in seen.items() if len(v) > 1]
    on_canary = sum(v == {"2"} for v in seen.values())
    mean, sd = 200 * 0.2, math.sqrt(200 * 0.2 * 0.8)
    assert abs(on_canary - mean) <= 5 * sd, on_canary


def test_the_shadow_never_changes_an_answer_nor_fails_a_request_even_when_it_raises(
        lin: Path, tmp_path: Path, started: list[Server]) -> None:
    assert publish(lin, "trap") == 2  # answers as version 1 under 10, fails from 10 on
    cli(lin, "alias", MODEL, "production", "1")
    cli(lin, "shadow", MODEL, "2")
    server = serve(lin, tmp_path, started)
    batches = [[ROW], [TRAP], [ROW, TRAP, ROW], [[1.0, 2.0, 3.0, 4.0]] * 5]
    expected = {}
    for i, rows in enumerate(batches):
        status, body = infer(server, "1", rows)  # version 1 named: never shadowed
        assert status == 200
        expected[i] = body["outputs"]
    status, body = infer(server, "2", [TRAP])
    assert status == 500, "the trap version itself fails on that row"
    for _ in range(30):
        for i, rows in enumerate(batches):
            status, body = infer(server, rows=rows)
            assert status == 200 and body["model_version"] == "1", body
            assert body["outputs"] == expected[i]
            status, answer = predict(server, rows=rows)
            assert status == 200 and answer["model_version"] == "1", answer

    def counted() -> dict:
        now = metrics(server)
        labels = {"model": MODEL, "primary": "1", "shadow": "2"}
        ok = total(now, "softserve_shadow_requests_total", outcome="success", **labels)
        failed = total(now, "softserve_shadow_requests_total", outcome="fail", **labels)
        rows = total(now, "softserve_shadow_rows_total", **labels)
        # 240 answers: 120 of batches holding the trap row (the shadow fails), 120 of 6 rows
        assert (ok, failed) == (120, 120) and rows == 60 * 6, (ok, failed, rows)
        assert total(now, "softserve_shadow_agreed_rows_total", **labels) == rows
        assert total(now, "softserve_shadow_max_probability_difference", **labels) < 1e-6
        assert total(now, "softserve_shadow_duration_seconds_count", **labels) == 120
        return now
    now = wait_until(counted, timeout=10)
    # The shadow's runs are no requests of version 2: only the one asked for directly.
    assert total(now, "softserve_model_requests_total", model=MODEL, version="2") == 1
    stats = send(server.port, "GET", f"/v2/models/{MODEL}/stats").json()
    assert stats["shadow_stats"] == [{
        "name": MODEL, "primary_version": "1", "shadow_version": "2", "requests": 240,
        "failed": 120, "rows": 360, "agreed_rows": 360, "agreement": 1.0,
        "max_probability_difference": stats["shadow_stats"][0]["max_probability_difference"],
        "shadow_ns": stats["shadow_stats"][0]["shadow_ns"]}], stats
    log = server.log()
    assert log.count("shadow version 2 of model lin failed") <= 2, "once per worker at most"
    assert "a task run after an answer failed" not in log


def test_a_malformed_policy_keeps_the_last_good_one_and_dangling_parts_are_ignored(
        lin: Path, tmp_path: Path, started: list[Server]) -> None:
    publish(lin, seed=1)
    cli(lin, "alias", MODEL, "production", "1")
    server = serve(lin, tmp_path, started)
    serves(server, "1")
    path = lin / MODEL / policy.POLICY_FILE
    good = path.read_text()
    for bad in ('{"schema": 1, "aliases": {"production": "one"}}', "{not json", "[]"):
        staged = path.with_name(".tmp-staged")
        staged.write_text(bad)
        staged.rename(path)
        time.sleep(3 * POLL)  # several polls: each logs nothing new
        serves(server, "1")
    log = server.log()
    assert log.count("ignoring the traffic policy of model lin") == 3 * 2, log  # per worker
    listed = cli(lin, "list", MODEL).stdout
    assert "traffic policy: UNUSABLE" in listed, listed
    refused = cli(lin, "promote", MODEL, "2", check=False)
    assert refused.returncode == 1 and "nothing was changed" in refused.stderr, refused
    assert path.read_text() == "[]", "a malformed policy is never overwritten"
    # A policy naming versions that are not served: those parts are ignored, logged once.
    path.write_text(good)
    serves(server, "1")
    cli(lin, "canary", MODEL, "2", "--percent", "100")
    serves(server, "2")
    (lin / MODEL / "2").rename(lin / MODEL / "retired-2")
    serves(server, "1")  # the canary's version is gone: production keeps serving
    data = json.loads(path.read_text())
    data["aliases"]["production"] = 7
    path.write_text(json.dumps(data))
    serves(server, "1")  # production names a missing version: the latest serves (1)
    time.sleep(3 * POLL)
    log = server.log()
    for text in ("canary: version 2 is retired", "production: version 7 is missing"):
        assert log.count(f"traffic policy of model lin, ignoring {text}") == 2, (text, log)


def test_publish_promote_canary_and_shadow_under_load_fail_no_request(
        lin: Path, tmp_path: Path, started: list[Server]) -> None:
    cli(lin, "alias", MODEL, "production", "1")
    server = serve(lin, tmp_path, started)
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def client(n: int) -> None:
        while not stop.is_set():
            try:
                status, body = infer(server) if n % 2 else predict(server)
                results.append((status, body.get("model_version", "")))
            except (OSError, ValueError) as exc:
                results.append((0, repr(exc)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        assert publish(lin, seed=1) == 2  # production is pinned: nothing changes
        time.sleep(3 * POLL)
        cli(lin, "shadow", MODEL, "2")
        time.sleep(3 * POLL)
        cli(lin, "canary", MODEL, "2", "--percent", "50")
        time.sleep(3 * POLL)
        cli(lin, "promote", MODEL, "2")
        time.sleep(3 * POLL)
        cli(lin, "rollback", MODEL)
        time.sleep(3 * POLL)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    failed = [r for r in results if r[0] != 200]
    assert not failed and len(results) > 100, failed[:5]
    assert {v for _, v in results} == {"1", "2"} and results[-1][1] == "1"
    serves(server, "1")


def rollout(lin: Path, server: Server, *flags: str) -> subprocess.CompletedProcess[str]:
    return cli(lin, "rollout", MODEL, "2", "--steps", "20,50,100", "--interval", "1.5s",
               "--url", server.url, *flags, check=False)


@pytest.mark.parametrize("candidate", ["good", "fails", "disagrees"])
def test_rollout_promotes_a_good_candidate_and_aborts_a_bad_one(
        lin: Path, tmp_path: Path, started: list[Server], candidate: str) -> None:
    publish(lin, *{"good": ("same",), "fails": ("trap",), "disagrees": ("same", 1)}[candidate])
    server = serve(lin, tmp_path, started)
    stop = threading.Event()
    statuses: Counter[int] = Counter()

    def client(n: int) -> None:
        while not stop.is_set():  # one request in ten holds a row the trap fails on
            statuses[infer(server, rows=[TRAP] if n == 0 else [ROW, [1.0, 0.5, 3.0, 0.0]])[0]] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    try:
        run = rollout(lin, server, "--max-error-rate", "0.01", "--min-agreement", "0.99")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    print(f"\nrollout of a {candidate} candidate (exit {run.returncode}):\n{run.stdout}")
    final = policy.read_policy(lin / MODEL)
    assert final.canary is None and final.shadow is None, final
    assert final.rollout is not None
    if candidate == "good":
        assert run.returncode == 0, run.stdout + run.stderr
        assert "PROMOTED" in run.stdout and final.production == 2
        assert final.rollout["outcome"] == "promoted"
        assert statuses.keys() == {200}, statuses
        serves(server, "2")
    else:
        assert run.returncode == 1, run.stdout + run.stderr
        assert "ABORTED at 20%" in run.stdout and final.production == 1
        reason = {"fails": "over --max-error-rate", "disagrees": "under --min-agreement"}
        assert reason[candidate] in final.rollout["reason"], final.rollout
        assert final.rollout["outcome"] == "aborted"
        serves(server, "1")
