"""The page shows the traffic policy and drift as a real gunicorn applies and counts them: a
model whose policy (set with ``python -m modelrepo``) names a production version older than the
latest, a candidate on canary, a shadow and an alias the server ignores; after shifted rows,
the drift table reads the shifted feature as significant and the others as stable, with the
very PSI /metrics reports. Plain HTTP against the server: no browser needed."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelrepo
from modelrepo import policy
from modelrepo.__main__ import main as modelrepo_main
from modelrepo.drift import PSI_MODERATE, PSI_SIGNIFICANT, feature_statistics
from modelrepo.rollout import parse_metrics
from tests.support.models import feature_names, linear_metadata, linear_model_bytes
from tests.support.net import send, wait_until
from tests.support.server import Server, start_server

MODEL = "ab"
F, K = 4, 3
NAMES = feature_names(F)
SHIFT = np.array([3.0, 0.0, 0.0, 0.0])  # the first feature moves by three of its std


def _publish(repository: Path, seed: int, statistics: bool) -> int:
    metadata: dict[str, Any] = linear_metadata(F, K)
    if statistics:
        train = np.random.default_rng(seed).normal(0, 1, (2000, F))
        metadata["data"] = {"source": "normal(0, 1)", "rows": 2000,
                            "statistics": feature_statistics(train, NAMES)}
    return modelrepo.publish_version(repository, MODEL, linear_model_bytes(F, K, seed=seed),
                                     metadata).version


def _cli(repository: Path, *args: str) -> None:
    assert modelrepo_main(["--artifacts", str(repository), *args]) == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Versions 1-4 of ``ab`` (4 x 3); 2 and 3 record training statistics. Policy: "old" names
    1 (then broken: ignored), production 2, candidate 3 on a 20% canary, a 50% shadow on 4, and
    an aborted rollout of 3."""
    repository = tmp_path_factory.mktemp("policy-repository")
    for seed in range(1, 5):
        _publish(repository, seed, statistics=seed in (2, 3))
    _cli(repository, "alias", MODEL, "old", "1")
    _cli(repository, "alias", MODEL, "candidate", "3")
    _cli(repository, "promote", MODEL, "2")
    _cli(repository, "canary", MODEL, "candidate", "--percent", "20")
    _cli(repository, "shadow", MODEL, "4", "--percent", "50")
    # the verdict `python -m modelrepo rollout` records when it aborts
    verdict = {"version": 3, "outcome": "aborted", "step": 25.0,
               "reason": "error rate 0.2 > 0.01", "at": "2026-01-01T00:00:00+00:00"}
    policy.update_policy(repository / MODEL,
                         lambda current: dataclasses.replace(current, rollout=verdict))
    (repository / MODEL / "1" / modelrepo.MODEL_FILE).write_bytes(b"not an onnx graph")
    srv = start_server(repository, tmp_path_factory.mktemp("policy-logs"),
                       ready_path="/v2/health/ready",
                       env={"SOFTSERVE_KEEP_VERSIONS": "3",
                            "SOFTSERVE_METRICS_FLUSH_SECONDS": "0.2"})
    yield srv
    assert srv.stop() == 0, srv.log()


def _page(server: Server) -> str:
    reply = send(server.port, "GET", f"/ui/models/{MODEL}")
    assert reply.status == 200, reply.body[:300]
    return reply.body.decode()


def _row(html: str, version: int) -> tuple[str, list[str]]:
    """(status, labels) of a version's row in the versions table."""
    match = re.search(rf'<tr class="version [^"]*" data-version="{version}" '
                      r'data-status="([^"]+)">(.*?)</tr>', html, re.S)
    assert match, f"no row for version {version}"
    return match.group(1), re.findall(r'<span class="badge label">([^<]*)</span>',
                                      match.group(2))


def test_page_shows_aliases_shares_problems_and_production_as_live(server: Server) -> None:
    html = _page(server)
    assert _row(html, 2) == ("live", ["production"])  # production, not the latest (4)
    assert _row(html, 3) == ("loaded", ["candidate", "canary 20%"])
    assert _row(html, 4) == ("loaded", ["shadow 50%"])
    assert _row(html, 1) == ("broken", ["old (ignored)"])
    assert "live version 2 (production)" in html
    assert "canary: version 3 takes 20% of the requests naming no version" in html
    assert "shadow: version 4 replays 50% of the answers" in html
    assert "Last rollout: version 3 aborted at 25%: error rate 0.2 &gt; 0.01" in html
    problem = re.search(r'<li class="problem bad" data-part="old">([^<]*)</li>', html)
    assert problem and "version 1 is broken" in problem.group(1), html
    # the try-it form targets production by default
    assert re.search(r'<option value="2" selected>2 \(live\)</option>', html)
    index = send(server.port, "GET", "/ui").body.decode()
    assert "live version 2" in index


def test_compare_defaults_to_the_canary_against_production(server: Server) -> None:
    html = send(server.port, "GET", f"/ui/models/{MODEL}/compare").body.decode()
    assert re.findall(r'<h2 id="side\d-h">Version (\d+)</h2>', html) == ["3", "2"], html[:2000]
    # the model page's compare form starts from the same two
    form = re.search(r'<form class="compare".*?</form>', _page(server), re.S)
    assert form and re.findall(r'<option value="(\d+)" selected>', form.group(0)) == ["3", "2"]
    # naming one side keeps the other's default
    html = send(server.port, "GET", f"/ui/models/{MODEL}/compare?a=4").body.decode()
    assert re.findall(r'<h2 id="side\d-h">Version (\d+)</h2>', html) == ["4", "2"]


def _infer(server: Server, version: int, rows: np.ndarray) -> None:
    for start in range(0, len(rows), 50):
        batch = rows[start:start + 50]
        body = json.dumps({"inputs": [{"name": "input", "shape": list(batch.shape),
                                       "datatype": "FP32", "data": batch.ravel().tolist()}]})
        reply = send(server.port, "POST", f"/v2/models/{MODEL}/versions/{version}/infer",
                     body.encode(), {"Content-Type": "application/json"})
        assert reply.status == 200, reply.body[:300]


def _drift_table(html: str, version: int) -> tuple[str, int, dict[str, tuple[float, str, int]]]:
    """(role, rows counted, feature -> (PSI, reading, out of range)) of a version's table."""
    match = re.search(rf'<table class="drift" data-version="{version}" data-role="(\w+)">'
                      r'\s*<caption>[^<]*: (\d+) rows counted</caption>(.*?)</table>', html, re.S)
    assert match, f"no drift table for version {version}"
    rows = re.findall(r'<tr data-feature="([^"]+)" data-psi="([^"]+)" data-reading="(\w+)">'
                      r'.*?<td class="num">(\d+)</td>\s*</tr>', match.group(3), re.S)
    return match.group(1), int(match.group(2)), {
        feature: (float(psi), reading, int(out)) for feature, psi, reading, out in rows}


def test_drift_table_reads_the_shifted_feature_as_significant_with_the_metrics_psi(
        server: Server) -> None:
    rng = np.random.default_rng(7)
    _infer(server, 2, rng.normal(0, 1, (600, F)) + SHIFT)  # production: the first one moved
    _infer(server, 3, rng.normal(0, 1, (300, F)))  # the canary: as trained

    def scrape() -> dict[Any, float]:  # the drift series (a scrape counts itself elsewhere)
        return {key: value for key, value in
                parse_metrics(send(server.port, "GET", "/metrics").body.decode()).items()
                if key[0].startswith("softserve_drift_")}

    def counted() -> dict[Any, float]:
        metrics = scrape()
        rows = {dict(labels)["version"]: value for (name, labels), value in metrics.items()
                if name == "softserve_drift_rows_total" and dict(labels)["model"] == MODEL}
        assert rows == {"2": 600.0, "3": 300.0}, rows
        # A worker's flush writes the row count and the bins one after the other: the figures
        # are whole once two scrapes more than a flush interval (0.2 s) apart agree.
        time.sleep(0.5)
        assert scrape() == metrics
        return metrics

    metrics = wait_until(counted, timeout=20)
    html = _page(server)  # nothing is sent meanwhile: the same counts as /metrics read
    reported = {(dict(labels)["version"], dict(labels)["feature"]): value
                for (name, labels), value in metrics.items()
                if name == "softserve_drift_psi" and dict(labels)["model"] == MODEL}

    role, rows, live = _drift_table(html, 2)
    assert (role, rows) == ("live", 600) and set(live) == set(NAMES)
    shifted, *others = NAMES
    assert live[shifted][1] == "significant" and live[shifted][0] > PSI_SIGNIFICANT
    assert live[shifted][2] > 0  # values above the training maximum
    for feature in others:
        assert live[feature][1] == "stable" and live[feature][0] < PSI_MODERATE, live
    for feature, (psi, _, _) in live.items():
        assert psi == pytest.approx(reported[("2", feature)], abs=1e-6), (feature, reported)

    role, rows, canary = _drift_table(html, 3)
    assert (role, rows) == ("canary", 300)
    assert all(reading == "stable" for _, reading, _ in canary.values()), canary
    for feature, (psi, _, _) in canary.items():
        assert psi == pytest.approx(reported[("3", feature)], abs=1e-6)
    assert 'data-version="4" data-role' not in html  # the shadow records no statistics
