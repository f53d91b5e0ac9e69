"""The traffic policy's contract (modelrepo/policy.py) and its commands, without a server:
schema checks, atomic writes under the lock, alias/promote/rollback/canary/shadow, the metrics
arithmetic of rollout, and training's --no-promote (issue 16)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import modelrepo
from modelrepo import policy
from modelrepo.__main__ import main as repo_main
from modelrepo.rollout import Limits, judge, parse_metrics, quantile
from serving.errors import ModelNotReady
from serving.repository import ModelRepository
from tests.support import ROOT
from tests.support.models import publish_linear_model, train

MODEL = "lin"


@pytest.fixture
def three(tmp_path: Path) -> Path:
    """``lin`` versions 1-3 (linear models of seeds 0, 1, 2)."""
    repository = tmp_path / "r"
    for seed in range(3):
        publish_linear_model(repository, MODEL, 4, 3, seed=seed)
    return repository


def run(repository: Path, *args: str) -> int:
    return repo_main(["--artifacts", str(repository), *args])


@pytest.mark.parametrize("data, reason", [
    ([], "not a JSON object"),
    ({"aliases": {}}, "schema must be 1"),
    ({"schema": 2}, "schema must be 1"),
    ({"schema": 1, "extra": 1}, "unknown keys"),
    ({"schema": 1, "aliases": {"production": "3"}}, "version number"),
    ({"schema": 1, "aliases": {"production": 0}}, "version number"),
    ({"schema": 1, "aliases": {"production": True}}, "version number"),
    ({"schema": 1, "aliases": {"7": 3}}, "invalid alias"),
    ({"schema": 1, "aliases": {"a/b": 3}}, "invalid alias"),
    ({"schema": 1, "canary": {"version": 2, "percent": 0}}, "percent"),
    ({"schema": 1, "canary": {"version": 2, "percent": 101}}, "percent"),
    ({"schema": 1, "canary": {"version": 2}}, "percent"),
    ({"schema": 1, "canary": {"version": 2, "percent": 5, "sticky_header": "a b"}},
     "sticky_header"),
    ({"schema": 1, "shadow": {"version": 2, "percent": 5, "sticky_header": "X-Id"}},
     "sticky_header"),
    ({"schema": 1, "history": "1"}, "history"),
    ({"schema": 1, "rollout": []}, "rollout"),
])
def test_a_policy_that_breaks_the_schema_is_refused_with_the_reason(data: object,
                                                                    reason: str) -> None:
    with pytest.raises(policy.PolicyError, match=reason):
        policy.parse_policy(data)


def test_a_policy_round_trips_and_is_written_whole_under_the_lock(three: Path) -> None:
    model_dir = three / MODEL
    assert policy.read_policy(model_dir) == policy.Policy()  # no file: empty
    written = policy.update_policy(model_dir, lambda p: policy.set_alias(
        replace_canary(p), "candidate", 3))
    assert policy.read_policy(model_dir) == written
    assert written.named_versions() == {3, 2} and written.updated_at
    leftovers = [n for n in os.listdir(model_dir) if n.startswith(".tmp-")]
    assert leftovers == []
    assert (model_dir / policy.POLICY_FILE).stat().st_mode & 0o777 == 0o644
    # Triton's layout is untouched: the file is not a version directory.
    assert sorted(modelrepo.version_dirs(model_dir)) == [1, 2, 3]
    for bad in (b"{", b"\xff", b"[" * 100000):
        (model_dir / policy.POLICY_FILE).write_bytes(bad)
        with pytest.raises(policy.PolicyError):
            policy.read_policy(model_dir)
        with pytest.raises(policy.PolicyError, match="nothing was changed"):
            policy.update_policy(model_dir, lambda p: p)
        assert (model_dir / policy.POLICY_FILE).read_bytes() == bad


def replace_canary(p: policy.Policy) -> policy.Policy:
    from dataclasses import replace
    return replace(p, canary=policy.Split(2, 12.5, "X-User-Id"))


def test_alias_promote_rollback_canary_shadow_commands(
        three: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = three / MODEL
    assert run(three, "alias", MODEL, "production", "1") == 0
    assert run(three, "alias", MODEL, "candidate", "3") == 0
    assert run(three, "promote", MODEL, "candidate") == 0
    assert policy.read_policy(model_dir).production == 3
    assert run(three, "rollback", MODEL) == 0  # back to the production before: 1, not 2
    assert policy.read_policy(model_dir).production == 1
    assert sorted(modelrepo.version_dirs(model_dir)) == [1, 2, 3], "nothing retired"
    assert run(three, "rollback", MODEL, "--to", "2") == 0
    assert policy.read_policy(model_dir).production == 2
    assert run(three, "canary", MODEL, "3", "--percent", "20", "--sticky-header",
               "X-User-Id") == 0
    assert run(three, "shadow", MODEL, "candidate", "--percent", "50") == 0
    current = policy.read_policy(model_dir)
    assert current.canary == policy.Split(3, 20.0, "X-User-Id")
    assert current.shadow == policy.Split(3, 50.0)
    capsys.readouterr()
    assert run(three, "list", MODEL) == 0
    out = capsys.readouterr().out
    assert "   2  live" in out and "[production]" in out
    assert "[candidate, canary 20%, shadow 50%]" in out
    assert "canary version 3 takes 20% (sticky on X-User-Id)" in out
    assert run(three, "promote", MODEL, "3") == 0  # ends the canary and shadow of 3
    current = policy.read_policy(model_dir)
    assert current.canary is None and current.shadow is None and current.production == 3
    assert run(three, "canary", MODEL, "--off") == 0
    assert run(three, "unalias", MODEL, "candidate") == 0
    assert "candidate" not in policy.read_policy(model_dir).aliases
    capsys.readouterr()
    # refusals, each with the way out
    assert run(three, "alias", MODEL, "production", "9") == 1
    assert "version 9 is missing; choose a valid version (1, 2, 3" in capsys.readouterr().err
    assert run(three, "promote", MODEL, "nope") == 1
    assert "no version or alias 'nope'" in capsys.readouterr().err
    assert run(three, "canary", MODEL, "3") == 2  # 3 is production now
    assert "is what serves now" in capsys.readouterr().err
    assert run(three, "unalias", MODEL, "candidate") == 1
    assert run(three, "canary", MODEL) == 2
    assert run(three, "alias", "nope", "production", "1") == 2
    with pytest.raises(SystemExit):
        run(three, "alias", MODEL, "12", "1")  # a number is a version, never an alias
    with pytest.raises(SystemExit):
        run(three, "canary", MODEL, "2", "--percent", "120")


def test_a_canary_without_production_pins_what_serves_now(three: Path) -> None:
    assert run(three, "canary", MODEL, "3", "--percent", "10") == 0
    current = policy.read_policy(three / MODEL)
    assert current.production == 2 and current.canary == policy.Split(3, 10.0)


def test_rollback_without_aliases_still_retires(three: Path) -> None:
    assert run(three, "rollback", MODEL) == 0
    assert modelrepo.retired_versions(three / MODEL) == [3]


def test_restore_moves_production_as_a_publish_does(three: Path) -> None:
    """A retired version restored under the next number serves: with a production alias, the
    alias moves to it (else it would sit unserved behind the alias)."""
    assert run(three, "promote", MODEL, "2") == 0
    assert run(three, "alias", MODEL, "old", "1") == 0
    # Without aliases rollback retires; here retire 3 by hand as a pre-traffic rollback did.
    modelrepo.retire_version(three / MODEL, 3)
    assert run(three, "restore", MODEL, "3") == 0
    current = policy.read_policy(three / MODEL)
    assert current.production == 4 and current.history == (2,)
    assert current.aliases["old"] == 1


def test_the_server_applies_the_policy_and_keeps_the_versions_it_names(three: Path) -> None:
    publish_linear_model(three, MODEL, 4, 3, seed=3)
    assert run(three, "alias", MODEL, "production", "1") == 0  # older than keep_versions=2
    assert run(three, "shadow", MODEL, "2") == 0
    repo = ModelRepository(three, keep_versions=2)
    repo.scan()
    state = repo.models[MODEL]
    assert sorted(state.loaded) == [1, 2, 3, 4]  # 3, 4 kept; 1 and 2 named by the policy
    assert repo.get(MODEL).version == "1" and repo.get(MODEL, "production").version == "1"
    assert state.traffic is not None and state.traffic.shadow is state.loaded[2]
    (three / MODEL / policy.POLICY_FILE).write_text("{broken")
    repo.scan()
    assert repo.get(MODEL).version == "1", "the last good policy stays in force"
    (three / MODEL / policy.POLICY_FILE).unlink()
    repo.scan()
    assert repo.get(MODEL).version == "4" and sorted(repo.models[MODEL].loaded) == [3, 4]
    assert repo.models[MODEL].traffic is None  # no policy: the request path's one test
    # A part naming a broken version is ignored with the reason; production keeps serving.
    assert run(three, "alias", MODEL, "production", "3") == 0
    assert run(three, "canary", MODEL, "2", "--percent", "100") == 0
    assert run(three, "alias", MODEL, "candidate", "2") == 0
    (three / MODEL / "2" / "model.onnx").write_bytes(b"corrupt")
    repo.scan()
    state = repo.models[MODEL]
    assert state.traffic is not None and state.traffic.canary is None
    assert repo.get(MODEL).version == "3"
    assert "version 2 is broken" in state.alias_problems["candidate"]
    with pytest.raises(ModelNotReady, match="alias 'candidate' is not served: version 2 is "
                                            "broken"):
        repo.get(MODEL, "candidate")


def test_sticky_buckets_are_stable_and_uniform() -> None:
    from serving.repository import _sticky_bucket

    values = [_sticky_bucket(MODEL, f"user-{i}") for i in range(10000)]
    assert values == [_sticky_bucket(MODEL, f"user-{i}") for i in range(10000)]
    share = sum(v < 0.2 for v in values) / len(values)
    assert abs(share - 0.2) <= 5 * math.sqrt(0.2 * 0.8 / len(values))


METRICS_BEFORE = """
softserve_model_requests_total{model="m",outcome="success",version="1"} 100.0
softserve_model_requests_total{model="m",outcome="success",version="2"} 10.0
softserve_model_request_duration_seconds_bucket{le="0.001",model="m",version="1"} 100.0
softserve_model_request_duration_seconds_bucket{le="0.01",model="m",version="1"} 100.0
softserve_model_request_duration_seconds_bucket{le="+Inf",model="m",version="1"} 100.0
softserve_model_request_duration_seconds_bucket{le="0.001",model="m",version="2"} 10.0
softserve_model_request_duration_seconds_bucket{le="0.01",model="m",version="2"} 10.0
softserve_model_request_duration_seconds_bucket{le="+Inf",model="m",version="2"} 10.0
"""
METRICS_AFTER = """
# HELP ignored
softserve_model_requests_total{model="m",outcome="success",version="1"} 1100.0
softserve_model_requests_total{model="m",outcome="success",version="2"} 198.0
softserve_model_requests_total{model="m",outcome="fail",version="2"} 2.0
softserve_model_request_duration_seconds_bucket{le="0.001",model="m",version="1"} 1100.0
softserve_model_request_duration_seconds_bucket{le="0.01",model="m",version="1"} 1100.0
softserve_model_request_duration_seconds_bucket{le="+Inf",model="m",version="1"} 1100.0
softserve_model_request_duration_seconds_bucket{le="0.001",model="m",version="2"} 10.0
softserve_model_request_duration_seconds_bucket{le="0.01",model="m",version="2"} 210.0
softserve_model_request_duration_seconds_bucket{le="+Inf",model="m",version="2"} 210.0
softserve_shadow_requests_total{model="m",outcome="success",primary="1",shadow="2"} 50.0
softserve_shadow_rows_total{model="m",primary="1",shadow="2"} 100.0
softserve_shadow_agreed_rows_total{model="m",primary="1",shadow="2"} 95.0
"""


def test_rollout_judges_a_step_from_metric_deltas() -> None:
    before, after = parse_metrics(METRICS_BEFORE), parse_metrics(METRICS_AFTER)
    p99, count = quantile(after, before, "softserve_model_request_duration_seconds", 0.99,
                          model="m", version="2")
    assert count == 200 and p99 == pytest.approx(0.001 + 0.009 * 0.99)
    assert quantile(after, before, "softserve_model_request_duration_seconds", 0.99,
                    model="m", version="9")[1] == 0
    ok = Limits(0.05, 0.9, 20.0, 10)
    text, breach = judge("m", 2, 1, before, after, ok)
    assert breach is None and "190 requests" in text and "agreement 95.00%" in text
    for limits, reason in ((Limits(0.001, None, None, 10), "over --max-error-rate"),
                           (Limits(None, 0.99, None, 10), "under --min-agreement"),
                           (Limits(None, None, 2.0, 10), "over --max-p99-ratio"),
                           (Limits(None, None, None, 1000), "only 240 requests")):
        assert reason in (judge("m", 2, 1, before, after, limits)[1] or ""), reason


def test_rollout_refuses_what_it_cannot_do(three: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    assert run(three, "alias", MODEL, "production", "3") == 0
    assert run(three, "rollout", MODEL, "3", "--interval", "1ms") == 2
    assert "is what serves now" in capsys.readouterr().err
    # No server at --url: aborted at once, production untouched, the reason recorded.
    assert run(three, "rollout", MODEL, "2", "--interval", "1ms",
               "--url", "http://127.0.0.1:9") == 1
    current = policy.read_policy(three / MODEL)
    assert current.production == 3 and current.canary is None
    assert current.rollout is not None and current.rollout["outcome"] == "aborted"
    assert "cannot read http://127.0.0.1:9/metrics" in current.rollout["reason"]
    for bad in (["--steps", "50,20"], ["--steps", "0,100"], ["--interval", "soon"]):
        with pytest.raises(SystemExit):
            run(three, "rollout", MODEL, "2", *bad)


def test_traffic_commands_run_without_torch(three: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no torch here')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent),
           "SOFTSERVE_MODEL_REPOSITORY": str(three)}
    for args in (["alias", MODEL, "production", "2"], ["promote", MODEL, "3"],
                 ["canary", MODEL, "2", "--percent", "5"], ["shadow", MODEL, "1"],
                 ["list", MODEL], ["rollout", "--help"]):
        done = subprocess.run([sys.executable, "-m", "modelrepo", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_training_no_promote_publishes_without_serving(iris_repository: Path,
                                                       tmp_path: Path) -> None:
    quick = ("--epochs", "50", "--min-accuracy", "0")
    repository = tmp_path / "r"
    shutil.copytree(iris_repository, repository)
    model_dir = repository / "iris"
    assert train(repository, *quick, "--no-promote", "--force") == 0
    current = policy.read_policy(model_dir)
    assert current.production == 1 and current.aliases["candidate"] == 2
    repo = ModelRepository(repository)
    repo.scan()
    assert repo.get("iris").version == "1" and repo.get("iris", "candidate").version == "2"
    # A default publish moves production once the model has one.
    assert train(repository, *quick, "--force") == 0
    assert policy.read_policy(model_dir).production == 3
    # A model's first version with --no-promote: production, there is nothing else to serve.
    assert train(repository, *quick, "--no-promote", "--model-name", "fresh") == 0
    assert json.loads((repository / "fresh" / policy.POLICY_FILE).read_text())["aliases"] == {
        "candidate": 1, "production": 1}
