"""The model repository on S3-compatible object storage, against a real server (SeaweedFS):
serving follows a bucket, never serves half-uploaded or corrupt versions, keeps serving through
an outage, starts cold from its cache; racing publishers never share a number; bad credentials
are refused with a clear message. The repository contract itself, on both backends:
tests/test_storage_contract.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import modelrepo
from modelrepo import storage
from tests.support import ROOT
from tests.support.models import (linear_metadata, linear_model_bytes, publish_linear_model,
                                  train_in_subprocess)
from tests.support.net import send, wait_until
from tests.support.s3 import S3Server, start_s3
from tests.support.server import start_server


def _bucket(s3: S3Server) -> str:
    return s3.make_bucket(f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The session's S3 server, its AWS settings in this process's environment."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


def _server_env(url: str, s3: S3Server, cache: Path) -> dict[str, str]:
    return s3.env(SOFTSERVE_MODEL_REPOSITORY=url, SOFTSERVE_CACHE_DIR=str(cache))


def _versions(port: int, model: str) -> list[str]:
    reply = send(port, "GET", f"/v2/models/{model}")
    assert reply.status == 200, reply.body
    return list(reply.json()["versions"])


def _index(port: int) -> dict[tuple[str, str], dict[str, str]]:
    reply = send(port, "POST", "/v2/repository/index", b"{}",
                 {"Content-Type": "application/json"})
    assert reply.status == 200, reply.body
    return {(e["name"], e.get("version", "")): e for e in reply.json()}


def test_serving_follows_the_bucket_and_never_serves_half_or_corrupt_versions(
        s3_env: S3Server, tmp_path: Path) -> None:
    url = f"s3://{_bucket(s3_env)}/models"
    bucket = url.split("/")[2]
    with storage.open_repository(url) as repo:
        publish_linear_model(repo, "lin", 3, 2)
    server = start_server(None, tmp_path, workers=2, ready_path="/v2/health/ready",
                          env=_server_env(url, s3_env, tmp_path / "cache"))
    try:
        assert _versions(server.port, "lin") == ["1"]
        client = s3_env.client()
        # Version 2 half-uploaded: claimed, model.onnx there, no metadata.json (the marker).
        client.put_object(Bucket=bucket, Key="models/lin/2/.claim", Body=b"1")  # type: ignore
        client.put_object(Bucket=bucket, Key="models/lin/2/model.onnx",  # type: ignore
                          Body=linear_model_bytes(3, 2, seed=2))
        # Version 3 complete but corrupt: model.onnx is not what metadata.json's sha256 says.
        good, bad = linear_model_bytes(3, 2, seed=3), linear_model_bytes(3, 2, seed=4)
        record = {**linear_metadata(3, 2), "name": "lin", "version": 3,
                  "model": {"file": "model.onnx", "sha256": hashlib.sha256(good).hexdigest(),
                            "bytes": len(good)}}
        for name, body in ((".claim", b"1"), ("model.onnx", bad),
                           ("metadata.json", json.dumps(record).encode())):
            client.put_object(Bucket=bucket, Key=f"models/lin/3/{name}",  # type: ignore
                              Body=body)
        # A publish now claims the next free number, and training publishes to the bucket too.
        with storage.open_repository(url) as repo:
            assert publish_linear_model(repo, "lin", 3, 2, seed=5).version == 4
        train_in_subprocess(url, "--data", "toy", "--epochs", "20")  # type: ignore[arg-type]
        wait_until(lambda: _versions(server.port, "lin") == ["1", "4"] or None)
        wait_until(lambda: _versions(server.port, "toy") == ["1"] or None)
        index = _index(server.port)
        assert ("lin", "2") not in index  # incomplete: not a version at all
        assert index[("lin", "3")]["state"] == "UNAVAILABLE"
        assert "sha256" in index[("lin", "3")]["reason"]
        reply = send(server.port, "POST", "/v2/models/lin/infer",
                     json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                             "shape": [1, 3], "data": [1, 2, 3]}]}).encode(),
                     {"Content-Type": "application/json"})
        assert reply.status == 200 and reply.json()["model_version"] == "4", reply.body
        # Traffic policies live in the bucket too: production moves to version 1.
        from modelrepo.__main__ import main as modelrepo_main

        assert modelrepo_main(["--artifacts", url, "promote", "lin", "1"]) == 0

        def unversioned() -> str:
            reply = send(server.port, "POST", "/v2/models/lin/infer", json.dumps(
                {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3],
                             "data": [1, 2, 3]}]}).encode(),
                {"Content-Type": "application/json"})
            assert reply.status == 200 and reply.json()["model_version"] == "1", reply.body
            return "1"

        wait_until(unversioned)
    finally:
        assert server.stop() == 0, server.log()
    log = server.log()
    assert '"message":"loaded model lin version 2 ' not in log
    assert '"message":"loaded model lin version 3 ' not in log
    assert '"message":"loaded model lin version 4 ' in log
    assert s3_env.env()["AWS_SECRET_ACCESS_KEY"] not in log


def test_cold_start_from_the_cache_and_an_unreachable_store_keeps_serving(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = start_s3(tmp_path / "weed")  # its own server: this test stops it
    try:
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        url = f"s3://{_bucket(s3)}/models"
        with storage.open_repository(url) as repo:
            publish_linear_model(repo, "lin", 3, 2)
        env = _server_env(url, s3, tmp_path / "cache")
        first = start_server(None, tmp_path, workers=1, ready_path="/v2/health/ready", env=env,
                             name="first")
        assert first.stop() == 0, first.log()
        assert "downloaded model lin version 1" in first.log()
        # Cold start: the cache holds the verified version: one listing, no download.
        second = start_server(None, tmp_path, workers=1, ready_path="/v2/health/ready",
                              env=env, name="second")
        try:
            assert "downloaded model" not in second.log()
            assert _versions(second.port, "lin") == ["1"]
            s3.stop()

            def details() -> str:
                reply = send(second.port, "GET", "/v2/health/ready")
                assert reply.status == 200 and "details" in reply.json(), reply.body
                return str(reply.json()["details"])

            assert "model store" in wait_until(details)
            assert _versions(second.port, "lin") == ["1"]  # still serving
            wait_until(lambda: None if second.log().count("keeping the 1 model(s)") < 1
                       else True)
        finally:
            assert second.stop() == 0, second.log()
        assert second.log().count("keeping the 1 model(s) loaded serving") == 1  # once
    finally:
        s3.stop()


_RACER = """
import sys, time
from pathlib import Path
from modelrepo import storage
from tests.support.models import publish_linear_model
go, seed = Path(sys.argv[2]), int(sys.argv[3])
with storage.open_repository(sys.argv[1]) as repo:  # both check out the same state
    while not go.exists():
        time.sleep(0.01)
    for i in range(3):
        print(publish_linear_model(repo, "lin", 3, 2, seed=seed + i).version, flush=True)
"""


def test_racing_publishers_never_share_a_number(s3_env: S3Server, tmp_path: Path) -> None:
    url = f"s3://{_bucket(s3_env)}/models"
    go = tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, url, str(go), str(seed)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for seed in (0, 10)]
    go.touch()
    numbers = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        numbers += [int(line) for line in out.split()]
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]
    listing = storage.S3Store(url).list_objects()
    assert sorted(storage.complete_versions(listing, "lin")) == [1, 2, 3, 4, 5, 6]
    with storage.open_repository(url) as repo:
        for number, path in modelrepo.version_dirs(repo / "lin").items():
            metadata, _ = modelrepo.read_version(path)  # complete, sha256 verified
            assert metadata["version"] == number


def test_bad_credentials_are_refused_with_a_clear_message(s3_env: S3Server) -> None:
    url = f"s3://{_bucket(s3_env)}/models"
    secret = "not-the-secret-0123456789"
    env = {**os.environ, "SOFTSERVE_MODEL_REPOSITORY": url, "AWS_SECRET_ACCESS_KEY": secret}
    done = subprocess.run([sys.executable, "-m", "modelrepo", "list"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refused the credentials" in done.stderr and "AWS_SECRET_ACCESS_KEY" in done.stderr
    assert secret not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_an_s3_url_with_credentials_is_refused() -> None:
    with pytest.raises(modelrepo.RepositoryError, match="never the URL"):
        storage.parse("s3://key:secret@bucket/models")


def _count_calls(repository: object) -> list[str]:
    """The S3 operations a ModelRepository's client makes from now on (botocore's own event
    hooks: the real requests, counted as they are sent)."""
    calls: list[str] = []
    client = repository.store.client  # type: ignore[attr-defined]
    client.meta.events.register("before-call.s3",
                                lambda model, **_: calls.append(model.name))
    return calls


def test_a_cold_start_from_the_cache_is_one_listing(s3_env: S3Server, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.repository import ModelRepository

    url = f"s3://{_bucket(s3_env)}/models"
    with storage.open_repository(url) as repo:
        publish_linear_model(repo, "lin", 3, 2)
        publish_linear_model(repo, "lin", 3, 2, seed=1)
    first = ModelRepository(Path(url), cache_dir=tmp_path / "cache")
    calls = _count_calls(first)
    first.scan()
    assert calls.count("ListObjectsV2") == 1 and calls.count("GetObject") >= 4
    assert first.state("lin").versions == ["1", "2"]
    calls.clear()
    first.scan()  # nothing changed: one listing, no download
    assert calls == ["ListObjectsV2"]
    cold = ModelRepository(Path(url), cache_dir=tmp_path / "cache")  # a restart, cache kept
    calls = _count_calls(cold)
    cold.scan()
    assert calls == ["ListObjectsV2"]
    assert cold.state("lin").versions == ["1", "2"] and cold.ready() == (True, "ready")
    # A restart while the store is down serves what its cache holds, and says so.
    from tests.support.net import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    offline = ModelRepository(Path(url), cache_dir=tmp_path / "cache")
    offline.scan()
    ready, reason = offline.ready()
    assert ready and "does not answer" in reason
    assert offline.state("lin").versions == ["1", "2"]


def test_a_version_deleted_mid_download_is_never_served(s3_env: S3Server,
                                                        tmp_path: Path) -> None:
    from serving.repository import ModelRepository

    url = f"s3://{_bucket(s3_env)}/models"
    bucket = url.split("/")[2]
    with storage.open_repository(url) as repo:
        publish_linear_model(repo, "lin", 3, 2)
    served = ModelRepository(Path(url), cache_dir=tmp_path / "cache")
    served.scan()
    with storage.open_repository(url) as repo:
        publish_linear_model(repo, "lin", 3, 2, seed=1)
    other = s3_env.client()

    def delete_version_2(params: dict[str, object], **_: object) -> None:
        if str(params.get("Key", "")).startswith("models/lin/2/"):  # as its download starts
            for name in ("metadata.json", "model.onnx", ".claim"):
                other.delete_object(Bucket=bucket, Key=f"models/lin/2/{name}")  # type: ignore

    served.store.client.meta.events.register(  # type: ignore[union-attr]
        "before-parameter-build.s3.GetObject", delete_version_2)
    served.scan()
    assert served.state("lin").versions == ["1"]
    assert not (served.root / "lin" / "2").exists()  # nothing half-downloaded placed
    assert served.ready() == (True, "ready")  # a vanished version, not an outage


def test_the_endpoint_setting_of_our_own_and_bucket_locations_in_messages(
        s3_env: S3Server) -> None:
    url = f"s3://{_bucket(s3_env)}/models"
    with storage.open_repository(url) as repo:
        publish_linear_model(repo, "lin", 3, 2)
        publish_linear_model(repo, "lin", 3, 2, seed=1)
    env = {**os.environ, "SOFTSERVE_S3_ENDPOINT_URL": s3_env.endpoint,
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # ours wins over the standard one
    done = subprocess.run([sys.executable, "-m", "modelrepo", "--artifacts", url, "rollback",
                           "lin"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"retired lin version 2 -> {url}/lin/retired-2" in done.stdout  # not a temp path
    done = subprocess.run([sys.executable, "-m", "modelrepo", "--artifacts", url, "list"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "lin:" in done.stdout, done.stderr


def test_a_server_that_never_reached_the_store_is_not_ready_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.repository import ModelRepository
    from tests.support.net import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    repository = ModelRepository(Path("s3://nowhere/models"), cache_dir=tmp_path / "cache")
    repository.scan()
    ready, reason = repository.ready()
    assert not ready and "model store" in reason and "does not answer" in reason


def test_refused_credentials_in_a_server_are_a_clear_reason(s3_env: S3Server, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             ) -> None:
    from serving.repository import ModelRepository

    url = f"s3://{_bucket(s3_env)}/models"
    secret = "wrong-secret-0123456789"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    repository = ModelRepository(Path(url), cache_dir=tmp_path / "cache")
    repository.scan()
    ready, reason = repository.ready()
    assert not ready and "model store" in reason and "refuses the credentials" in reason
    assert secret not in reason


def test_init_creates_the_bucket_once_and_a_missing_bucket_names_the_fix(
        s3_env: S3Server) -> None:
    url = f"s3://n-{uuid.uuid4().hex[:12]}/models"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "modelrepo", "--artifacts", url, *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    missing = run("list")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "python -m modelrepo init" in missing.stderr
    assert run("init").stdout.strip() == f"created: {url}"
    assert run("init").stdout.strip() == f"exists: {url}"
    listed = run("list")
    assert listed.returncode == 0 and "no models in" in listed.stdout, listed.stderr


def test_corrupt_newest_versions_do_not_crowd_out_a_valid_older_one(s3_env: S3Server,
                                                                    tmp_path: Path) -> None:
    from serving.repository import ModelRepository

    url = f"s3://{_bucket(s3_env)}/models"
    bucket = url.split("/")[2]
    with storage.open_repository(url) as repo:
        publish_linear_model(repo, "lin", 3, 2)
    good, bad = linear_model_bytes(3, 2, seed=3), linear_model_bytes(3, 2, seed=4)
    client = s3_env.client()
    for number in (2, 3, 4):  # complete (marker there), each model.onnx not what it says
        record = {**linear_metadata(3, 2), "name": "lin", "version": number,
                  "model": {"file": "model.onnx", "sha256": hashlib.sha256(good).hexdigest(),
                            "bytes": len(good)}}
        for name, body in (("model.onnx", bad), ("metadata.json", json.dumps(record).encode())):
            client.put_object(Bucket=bucket, Key=f"models/lin/{number}/{name}",  # type: ignore
                              Body=body)
    served = ModelRepository(Path(url), keep_versions=1, cache_dir=tmp_path / "cache")
    served.scan()
    state = served.state("lin")
    assert state.versions == ["1"] and sorted(state.broken) == [2, 3, 4]
    assert served.get("lin").version == "1"


def test_traffic_json_is_written_conditionally(s3_env: S3Server) -> None:
    from modelrepo import policy

    url = f"s3://{_bucket(s3_env)}/models"
    with storage.open_repository(url) as repo:
        publish_linear_model(repo, "lin", 3, 2)
    with storage.open_repository(url) as a, storage.open_repository(url) as b:
        policy.update_policy(a / "lin", lambda p: policy.set_alias(p, "first", 1))
        # b read the bucket before a wrote: a blind write from its copy loses the race ...
        with pytest.raises(modelrepo.StoreConflict):
            policy.write_policy(b / "lin", policy.set_alias(policy.read_policy(b / "lin"),
                                                            "blind", 1))
        # ... a read-change-write reads it again and keeps a's change
        policy.update_policy(b / "lin", lambda p: policy.set_alias(p, "second", 1))
        policy.update_policy(a / "lin", lambda p: policy.set_alias(p, "third", 1))
    with storage.open_repository(url) as repo:
        assert dict(policy.read_policy(repo / "lin").aliases) == \
            {"first": 1, "second": 1, "third": 1}
