"""The page for people through the app in-process (no browser): only this server's files, a
policy that forbids any other origin, any model shape, metrics off, the form's prefill, and
nothing written anywhere (the traffic policy and drift: test_traffic_drift.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import numpy as np
import pytest
from flask.testing import FlaskClient

from modelrepo.drift import feature_statistics
from serving import create_app
from serving.ui import ASSET_TYPES, PAGE_CSP
from serving.ui.charts import MOST_MATRIX_CLASSES, confusion_matrix, loss_curve_svg
from serving.ui.views import training_means
from tests.support.html import asset_urls
from tests.support.models import SHAPES

PAGES = ["/ui", "/ui/models/iris", "/ui/models/iris/compare?a=1&b=1"]


@pytest.mark.parametrize("path", PAGES)
def test_page_loads_only_files_of_this_server(client: FlaskClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.headers["Content-Security-Policy"] == PAGE_CSP
    assert "default-src 'none'" in PAGE_CSP and "script-src 'self'" in PAGE_CSP
    html = page.get_data(as_text=True)
    assert not re.search(r"https?://", html), "the page names another server"
    assert " style=" not in html and "<script>" not in html  # the policy forbids both
    urls = asset_urls(html)
    assert {Path(urlsplit(u).path).suffix for u in urls} == {".css", ".js", ".svg"}
    for url in urls:
        absolute = urlsplit(urljoin("http://localhost" + path, url))
        assert absolute.netloc == "localhost", url
        asset = client.get(absolute.path)
        assert asset.status_code == 200, url
        assert asset.mimetype == ASSET_TYPES[Path(absolute.path).suffix]
        assert not re.search(rb"https?://(?!www\.w3\.org/2000/svg)", asset.data), url


def test_every_model_shape_gets_its_page(shapes_repository: Path) -> None:
    app = create_app({"model_repository": shapes_repository, "poll_seconds": 0})
    client = app.test_client()
    index = client.get("/ui").get_data(as_text=True)
    for name, (features, classes, imputes) in SHAPES.items():
        assert f'data-model="{name}"' in index
        html = client.get(f"/ui/models/{name}").get_data(as_text=True)
        assert html.count('type="number"') == features, name
        assert html.count(" required") == (0 if imputes else features), name
        plural = "s" if features != 1 else ""
        assert f"{features} feature{plural} → {classes} classes" in html


def test_page_without_metrics(iris_repository: Path) -> None:
    app = create_app({"model_repository": iris_repository, "poll_seconds": 0,
                      "metrics": False})
    html = app.test_client().get("/ui").get_data(as_text=True)
    assert "Live figures are off" in html and "Requests" not in html


def test_pages_write_nothing(repository: Path, tmp_path: Path) -> None:
    def tree() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in sorted(repository.rglob("*"))}

    before = tree()
    app = create_app({"model_repository": repository, "poll_seconds": 0})
    after_start = tree()
    client = app.test_client()
    for path in [*PAGES, "/ui/models/iris/compare", "/ui/static/ui.js"]:
        client.get(path)
    assert tree() == after_start == before


def test_large_confusion_matrices_are_summarized() -> None:
    k = MOST_MATRIX_CLASSES + 1
    matrix = [[5 if i == j else 1 for j in range(k)] for i in range(k)]
    big = confusion_matrix({"confusion_matrix": {"split": "validation",
                                                 "labels": [str(i) for i in range(k)],
                                                 "matrix": matrix}})
    assert big is not None and not big.drawn and big.correct == 5 * k and big.rows == []
    assert confusion_matrix({"confusion_matrix": {"labels": ["a", "b"], "matrix": [[1]]}}) is None
    assert loss_curve_svg([{"epoch": 0, "loss": 1.0}], "one epoch") is None
    svg = loss_curve_svg([{"epoch": e, "loss": 1 / (e + 1)} for e in range(5000)], "long")
    assert svg is not None and svg.count(",") <= 300  # thinned to a few hundred points


def test_form_prefill_comes_from_the_training_data() -> None:
    metadata: dict[str, Any] = {"feature_names": ["a", "b"],
                                "training": {"standardization": {"mean": [1.5, -2.0]}}}
    assert training_means(metadata) == ([1.5, -2.0], "the training data's means")
    metadata["data"] = {"feature_statistics": {"a": {"mean": 3.0}, "b": {"mean": 4.0}}}
    assert training_means(metadata) == ([3.0, 4.0], "the training data's means")
    # issue 17's statistics win: data.statistics.features[i].mean
    rows = np.array([[0.0, 10.0], [2.0, 20.0]])
    metadata["data"]["statistics"] = feature_statistics(rows, ["a", "b"])
    assert training_means(metadata) == ([1.0, 15.0], "the training data's means")
    assert training_means({"feature_names": ["a"], "training": {}}) is None


def test_names_from_metadata_are_escaped(tmp_path: Path) -> None:
    """Feature names and class labels are any strings a metadata.json holds: the page shows
    them as text, never as markup (the script draws labels with textContent)."""
    import modelrepo
    from tests.support.models import linear_metadata, linear_model_bytes

    hostile = ["<script>alert(1)</script>", "a' onmouseover='x", 'b" autofocus="']
    metadata = linear_metadata(3, 3)
    metadata["feature_names"] = hostile
    metadata["class_labels"] = [f"{name}!" for name in hostile]
    modelrepo.publish_version(tmp_path, "odd", linear_model_bytes(3, 3), metadata)
    app = create_app({"model_repository": tmp_path, "poll_seconds": 0})
    html = app.test_client().get("/ui/models/odd").get_data(as_text=True)
    assert "<script>alert" not in html and "' onmouseover='" not in html
    assert '" autofocus="' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, as text


def test_a_policy_part_the_server_drops_is_shown_with_its_reason(tmp_path: Path) -> None:
    """A canary on the version that already answers (no production: the latest) is ignored
    by the server: the page says so. A version with statistics gets its drift table, empty
    until rows come, and none with metrics off."""
    import modelrepo
    from modelrepo import policy
    from tests.support.models import feature_names, linear_metadata, linear_model_bytes

    statistics = feature_statistics(np.random.default_rng(0).normal(0, 1, (100, 2)),
                                    feature_names(2))
    for seed in (1, 2):
        metadata = linear_metadata(2, 2)
        metadata["data"] = {"statistics": statistics}
        modelrepo.publish_version(tmp_path, "pair", linear_model_bytes(2, 2, seed=seed),
                                  metadata)
    with modelrepo.model_lock(tmp_path / "pair"):
        policy.write_policy(tmp_path / "pair", policy.Policy(canary=policy.Split(2, 30.0)))
    app = create_app({"model_repository": tmp_path, "poll_seconds": 0})
    html = app.test_client().get("/ui/models/pair").get_data(as_text=True)
    assert 'data-part="canary">Ignored: canary, version 2 already serves as latest' in html
    assert "live version 2 (latest)" in html and "canary 30%" not in html
    assert '<table class="drift" data-version="2" data-role="live">' in html
    assert "0 rows counted" in html and html.count("no values yet") == 2
    quiet = create_app({"model_repository": tmp_path, "poll_seconds": 0, "metrics": False})
    assert "Drift per feature" not in quiet.test_client().get("/ui/models/pair").get_data(
        as_text=True)
