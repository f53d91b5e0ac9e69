"""The OpenAPI document (``serving/openapi/``) against the real app, and the /docs page.

- The document is valid OpenAPI (openapi-spec-validator).
- It describes exactly the app's routes and methods: every rule of Flask's ``app.url_map`` and
  of the hot path in front of it, and nothing else (HEAD and OPTIONS aside); every route of the
  table is asked by a case below, through the app as it serves.
- Real answers of the app — successes and errors, from apps configured to produce each status —
  have a documented status and content type, and their JSON validates against the documented
  schema (jsonschema, with the document's ``$ref``s resolved). The document's own request
  examples are sent to the app and must succeed.
- ``/docs`` loads its scripts and stylesheets from this server only, and each of them is served.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.routing import Map, Rule
from werkzeug.test import TestResponse

from serving import __version__, create_app
from serving.fastpath import FastPath
from serving.routes import ModelNameConverter
from serving.routes.table import ROUTES
from serving.openapi.document import openapi_document
from tests.support.html import asset_urls

DOCUMENT = openapi_document(__version__)
DOCUMENT_URI = "urn:softserve:openapi"
# OpenAPI 3.0 schema objects are an extended subset of JSON Schema draft 4/5: draft 4 reads them
# (the extra keywords, such as "example", are annotations it ignores).
REGISTRY: Registry = Registry().with_resource(
    DOCUMENT_URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT4))
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
FLASK_METHODS = {"HEAD", "OPTIONS"}  # added to every rule by Flask itself
REQUEST_ID = "X-Request-ID"
HEADER_LENGTH = "Inference-Header-Content-Length"
ROW = [5.1, 3.5, 1.4, 0.2]


# --------------------------------------------------------------------------------- helpers


def pointer(*segments: str) -> str:
    """A JSON pointer (RFC 6901) to the document location made of ``segments``."""
    return "".join("/" + s.replace("~", "~0").replace("/", "~1") for s in segments)


def validate_at(instance: Any, location: str) -> None:
    """Validate ``instance`` against the schema at JSON pointer ``location`` of the document."""
    validator = jsonschema.Draft4Validator({"$ref": f"{DOCUMENT_URI}#{location}"},
                                           registry=REGISTRY)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"{location}:\n" + "\n".join(
        f"- at {list(e.absolute_path)}: {e.message}" for e in errors[:10])


def template(rule: str) -> str:
    """A Werkzeug rule (``/v2/models/<name>``, ``<int:n>``) as an OpenAPI path (``{name}``)."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule)


def app_routes(app: Flask) -> set[tuple[str, str]]:
    """What the app routes: Flask's URL map, plus the hot path's routes in front of it."""
    hot = app.wsgi_app.app  # type: ignore[attr-defined]  # ObservedApp -> FastPath
    assert isinstance(hot, FastPath)
    flask_rules = {
        (template(rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"  # Flask's default static route, if the app has one
        for method in (rule.methods or set()) - FLASK_METHODS
    }
    hot_rules = {(template(r.rule), m) for r in hot.routes for m in r.methods}
    assert not flask_rules & hot_rules, "a hot route must be answered by the hot path alone"
    return flask_rules | hot_rules


# Every rule the app answers, for matching a request to its documented operation.
TABLE_MAP = Map([Rule(r.rule, endpoint=r.endpoint, methods=list(r.methods)) for r in ROUTES],
                converters={"model": ModelNameConverter}, merge_slashes=False)


def documented_routes() -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def documented_operation(app: Flask, method: str, path: str) -> tuple[str, str]:
    """(path template, method) of the documented operation that answers ``method path``.

    The route table's URL map decides, so literal paths win over templates as they do in
    routing. For a method the path does not allow (405), it is one of the path's allowed
    operations: each of them documents the 405.
    """
    adapter = TABLE_MAP.bind("localhost")
    path = path.partition("?")[0]  # a query string is no part of the route
    try:
        rule, _ = adapter.match(path, method, return_rule=True)
    except MethodNotAllowed as exc:
        allowed = sorted(set(exc.valid_methods or ()) - FLASK_METHODS)
        method = allowed[0]
        rule, _ = adapter.match(path, method, return_rule=True)
    return template(rule.rule), method.lower()


def check_response(app: Flask, method: str, path: str, response: TestResponse) -> Any:
    """Check a real answer against the document; returns its JSON (the JSON part if binary).

    Its status must be documented for the operation, its media type too, its JSON must validate
    against the documented schema, and the headers documented as required (but X-Request-ID,
    which ``test_request_id_is_echoed_or_generated`` checks) must be present.
    """
    path_template, op = documented_operation(app, method, path)
    responses = DOCUMENT["paths"][path_template][op]["responses"]
    status = str(response.status_code)
    assert status in responses, (
        f"{method} {path} answered {status}, not documented for {op.upper()} {path_template} "
        f"(documented: {sorted(responses)}): {response.data[:300]!r}")
    documented = responses[status]
    content = documented.get("content", {})
    if not content:
        assert not response.data, f"{method} {path} answered {status} with a body"
        return None
    assert response.mimetype in content, (
        f"{method} {path} answered {status} as {response.mimetype}; documented: {sorted(content)}")
    for name, header in documented.get("headers", {}).items():
        if "$ref" in header:
            header = DOCUMENT["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
        if header.get("required") and name != REQUEST_ID:
            assert name in response.headers, f"{method} {path}: no {name} header"
    body: Any = None
    if response.mimetype == "application/json":
        body = json.loads(response.data)
    elif response.mimetype == "application/octet-stream" and HEADER_LENGTH in response.headers:
        # Binary tensor data: the JSON part is what the application/json schema describes.
        body = json.loads(response.data[: int(response.headers[HEADER_LENGTH])])
        assert "application/json" in content
    if body is not None:
        validate_at(body, pointer("paths", path_template, op, "responses", status, "content",
                                  "application/json", "schema"))
    return body


# -------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def small_limits_app(iris_repository: Path) -> Flask:
    """At most 2 rows per request and 1024-byte bodies: the 413s."""
    return create_app({"model_repository": iris_repository, "poll_seconds": 0,
                       "max_batch_rows": 2, "max_body_bytes": 1024})


@pytest.fixture(scope="module")
def empty_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """An empty repository: not ready, no default model."""
    return create_app({"model_repository": tmp_path_factory.mktemp("empty"), "poll_seconds": 0})


@pytest.fixture(scope="module")
def broken_app(iris_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """iris whose only version is broken (model.onnx disagrees with its sha256): 503s."""
    repository = tmp_path_factory.mktemp("broken") / "repository"
    shutil.copytree(iris_repository, repository)
    (repository / "iris" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    return create_app({"model_repository": repository, "poll_seconds": 0})


# --------------------------------------------------------------------- 1. a valid document


def test_document_is_valid_openapi() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["info"]["title"] == "softserve"
    assert DOCUMENT["info"]["version"] == __version__
    assert DOCUMENT["servers"] == [{"url": "/"}]


def test_every_operation_takes_a_request_id_and_documents_json_errors() -> None:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            where = f"{method.upper()} {path}"
            assert {"$ref": "#/components/parameters/RequestId"} in operation["parameters"], where
            for status, response in operation["responses"].items():
                assert REQUEST_ID in response["headers"], (where, status)
                if status.startswith(("4", "5")):
                    media = response["content"]
                    assert list(media) == ["application/json"], (where, status)
                    schema = media["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                    # The ready endpoints' 503s are Error bodies with "ready" (and "name").
                    assert schema == "Error" or "error" in (
                        DOCUMENT["components"]["schemas"][schema]["required"]), (where, status)
            assert "500" in operation["responses"], where
            assert "405" in operation["responses"], where


def media_examples() -> Iterator[tuple[str, Any]]:
    """(JSON pointer of the schema, example) of every example in the document."""
    for name, schema in DOCUMENT["components"]["schemas"].items():
        if "example" in schema:
            yield pointer("components", "schemas", name), schema["example"]
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            bodies = [(("requestBody",), operation.get("requestBody", {}))] + [
                (("responses", status), response)
                for status, response in operation["responses"].items()]
            for where, body in bodies:
                for media_type, media in body.get("content", {}).items():
                    schema = pointer("paths", path, method, *where, "content", media_type,
                                     "schema")
                    if "example" in media:
                        yield schema, media["example"]
                    for example in media.get("examples", {}).values():
                        yield schema, example["value"]


def test_every_example_validates_against_its_schema() -> None:
    examples = list(media_examples())
    assert len(examples) > 50
    for location, example in examples:
        validate_at(example, location)


# ------------------------------------------------------------- 2. exactly the app's routes


def test_document_describes_exactly_the_routes_of_the_app(app: Flask) -> None:
    routed, documented = app_routes(app), documented_routes()
    undocumented = sorted(routed - documented)
    unrouted = sorted(documented - routed)
    assert not undocumented and not unrouted, (
        "the document and the app's routes differ:\n"
        + "".join(f"  routed, not documented: {m} {p}\n" for p, m in undocumented)
        + "".join(f"  documented, not routed: {m} {p}\n" for p, m in unrouted))


# ----------------------------------------------------- 3. real answers match the document


def v2_json(rows: list[list[float]], **extra: Any) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32",
                                   "data": rows}], **extra}).encode()


def v2_binary() -> tuple[bytes, dict[str, str]]:
    header = json.dumps({
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                    "parameters": {"binary_data_size": 16}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    return header + struct.pack("<4f", *ROW), {HEADER_LENGTH: str(len(header))}


@dataclass
class Case:
    id: str
    method: str
    path: str
    status: int
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    app: str = "app"  # the fixture that builds the app to ask

    def send(self, request: pytest.FixtureRequest) -> tuple[Flask, TestResponse]:
        app: Flask = request.getfixturevalue(self.app)
        response = app.test_client().open(self.path, method=self.method, data=self.body,
                                          headers=dict(self.headers))
        return app, response


_binary_body, _binary_headers = v2_binary()
CASES = [
    Case("api-index", "GET", "/", 200),
    Case("server-metadata", "GET", "/v2", 200),
    Case("model-config", "GET", "/v2/models/iris/config", 200),
    Case("version-config", "GET", "/v2/models/iris/versions/1/config", 200),
    Case("repository-index", "POST", "/v2/repository/index", 200),
    Case("repository-index-ready", "POST", "/v2/repository/index", 200, b'{"ready": true}'),
    Case("repository-index-bad", "POST", "/v2/repository/index", 400, b'{"ready": 1}'),
    Case("repository-load-refused", "POST", "/v2/repository/models/iris/load", 403),
    Case("repository-unload-refused", "POST", "/v2/repository/models/iris/unload", 403),
    Case("docs-slash", "GET", "/docs/", 308),
    Case("live", "GET", "/v2/health/live", 200),
    Case("ready", "GET", "/v2/health/ready", 200),
    Case("v1-status", "GET", "/v1/models/iris", 200),
    Case("model-metadata", "GET", "/v2/models/iris", 200),
    Case("version-metadata", "GET", "/v2/models/iris/versions/1", 200),
    Case("model-ready", "GET", "/v2/models/iris/ready", 200),
    Case("version-ready", "GET", "/v2/models/iris/versions/1/ready", 200),
    Case("predict-lists", "POST", "/predict", 200,
         json.dumps({"instances": [ROW, [6.7, 3.0, 5.2, 2.3]]}).encode()),
    Case("v1-predict-objects", "POST", "/v1/models/iris:predict", 200, json.dumps(
        {"instances": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4,
                        "petal_width": 0.2}]}).encode()),
    Case("v1-version-predict", "POST", "/v1/models/iris/versions/1:predict", 200,
         json.dumps({"instances": [ROW]}).encode()),
    Case("v1-label-predict", "POST", "/v1/models/iris/labels/1:predict", 200,
         json.dumps({"instances": [ROW]}).encode()),
    Case("unknown-label-predict", "POST", "/v1/models/iris/labels/nope:predict", 404,
         json.dumps({"instances": [ROW]}).encode()),
    Case("infer-json", "POST", "/v2/models/iris/infer", 200,
         v2_json([ROW, [6.7, 3.0, 5.2, 2.3]], id="42")),
    Case("infer-version-classification", "POST", "/v2/models/iris/versions/1/infer", 200,
         v2_json([ROW], outputs=[{"name": "probabilities", "parameters": {"classification": 2}},
                                 {"name": "class"}])),
    Case("infer-binary", "POST", "/v2/models/iris/infer", 200, _binary_body, _binary_headers),
    Case("stats", "GET", "/v2/models/stats", 200),
    Case("model-stats", "GET", "/v2/models/iris/stats", 200),
    Case("version-stats", "GET", "/v2/models/iris/versions/1/stats", 200),
    Case("metrics", "GET", "/metrics", 200),
    Case("feedback", "POST", "/v2/models/iris/feedback", 202,
         b'[{"id": "r1", "label": "setosa", "model_version": "1", "class": 0}]'),
    Case("feedback-unknown-label", "POST", "/v2/models/iris/feedback", 400,
         b'{"id": "r1", "label": "rose"}'),
    Case("openapi-json", "GET", "/openapi.json", 200),
    Case("docs", "GET", "/docs", 200),
    Case("docs-asset", "GET", "/docs/swagger-ui.css", 200),
    Case("docs-asset-cached", "GET", "/docs/swagger-ui.css", 304,
         headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}),
    Case("docs-asset-range-ignored", "GET", "/docs/favicon-32x32.png", 200,
         headers={"Range": "bytes=0-9"}),
    Case("api-index-browser", "GET", "/", 303,
         headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}),
    Case("ui", "GET", "/ui", 200),
    Case("ui-model", "GET", "/ui/models/iris", 200),
    Case("ui-compare", "GET", "/ui/models/iris/compare?a=1&b=1", 200),
    Case("ui-asset", "GET", "/ui/static/ui.css", 200),
    Case("ui-asset-cached", "GET", "/ui/static/ui.js", 304,
         headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}),
    Case("ui-compare-not-a-version", "GET", "/ui/models/iris/compare?a=x", 400),
    Case("ui-compare-one-version", "GET", "/ui/models/iris/compare", 404),
    Case("ui-unknown-model", "GET", "/ui/models/nope", 404),
    Case("ui-unknown-asset", "GET", "/ui/static/nope.js", 404),
    Case("ui-compare-broken", "GET", "/ui/models/iris/compare?a=1&b=1", 503, app="broken_app"),
    Case("ui-broken", "GET", "/ui", 200, app="broken_app"),
    Case("ui-empty", "GET", "/ui", 200, app="empty_app"),
    # 400
    Case("predict-not-json", "POST", "/predict", 400, b"{"),
    Case("infer-unsupported-datatype", "POST", "/v2/models/iris/infer", 400,
         json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BOOL",
                                 "data": [True, False, True, False]}]}).encode()),
    Case("infer-bad-header-length", "POST", "/v2/models/iris/infer", 400, v2_json([ROW]),
         {HEADER_LENGTH: "x"}),
    # 404
    Case("unknown-model-metadata", "GET", "/v2/models/nope", 404),
    Case("unknown-model-predict", "POST", "/v1/models/nope:predict", 404,
         json.dumps({"instances": [ROW]}).encode()),
    Case("unknown-model-infer", "POST", "/v2/models/nope/infer", 404, v2_json([ROW])),
    Case("unknown-version-ready", "GET", "/v2/models/iris/versions/7/ready", 404),
    Case("unknown-model-v1-status", "GET", "/v1/models/nope", 404),
    Case("unknown-model-stats", "GET", "/v2/models/nope/stats", 404),
    Case("unknown-asset", "GET", "/docs/index.html", 404),
    Case("unserved-package-file", "GET", "/docs/swagger-initializer.js", 404),
    # 405
    Case("get-predict", "GET", "/predict", 405),
    Case("post-server-metadata", "POST", "/v2", 405, b"{}"),
    Case("delete-infer", "DELETE", "/v2/models/iris/infer", 405),
    # 413
    Case("too-many-instances", "POST", "/predict", 413,
         json.dumps({"instances": [ROW] * 3}).encode(), app="small_limits_app"),
    Case("too-many-rows", "POST", "/v2/models/iris/infer", 413, v2_json([ROW] * 3),
         app="small_limits_app"),
    Case("body-too-large", "POST", "/v2/models/iris/infer", 413, b" " * 2000,
         app="small_limits_app"),
    # 503, and the not-ready answers of the other routes
    Case("empty-not-ready", "GET", "/v2/health/ready", 503, app="empty_app"),
    Case("empty-predict", "POST", "/predict", 404, json.dumps({"instances": [ROW]}).encode(),
         app="empty_app"),
    Case("broken-not-ready", "GET", "/v2/health/ready", 503, app="broken_app"),
    Case("broken-model-ready", "GET", "/v2/models/iris/ready", 503, app="broken_app"),
    Case("broken-version-ready", "GET", "/v2/models/iris/versions/1/ready", 503,
         app="broken_app"),
    Case("broken-metadata", "GET", "/v2/models/iris", 503, app="broken_app"),
    Case("broken-infer", "POST", "/v2/models/iris/infer", 503, v2_json([ROW]), app="broken_app"),
    Case("broken-predict", "POST", "/predict", 503, json.dumps({"instances": [ROW]}).encode(),
         app="broken_app"),
    Case("broken-v1-status", "GET", "/v1/models/iris", 503, app="broken_app"),
    Case("broken-config", "GET", "/v2/models/iris/config", 503, app="broken_app"),
    Case("broken-version-stats", "GET", "/v2/models/iris/versions/1/stats", 503,
         app="broken_app"),
    Case("broken-index", "POST", "/v2/repository/index", 200, app="broken_app"),
    Case("empty-index", "POST", "/v2/repository/index", 200, app="empty_app"),
    Case("empty-api-index", "GET", "/", 200, app="empty_app"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_real_answers_match_the_document(case: Case, request: pytest.FixtureRequest) -> None:
    app, response = case.send(request)
    assert response.status_code == case.status, response.data[:500]
    check_response(app, case.method, case.path, response)


def test_binary_answer_is_documented_as_octet_stream(request: pytest.FixtureRequest) -> None:
    case = next(c for c in CASES if c.id == "infer-binary")
    app, response = case.send(request)
    assert response.mimetype == "application/octet-stream"
    body = check_response(app, case.method, case.path, response)
    sizes = [o["parameters"]["binary_data_size"] for o in body["outputs"]]
    assert len(response.data) == int(response.headers[HEADER_LENGTH]) + sum(sizes)


def request_examples() -> Iterator[tuple[str, str, str, Any]]:
    """(path template, method, example name, value) of every JSON request example."""
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS or "requestBody" not in operation:
                continue
            media = operation["requestBody"]["content"]["application/json"]
            for name, example in media.get("examples", {}).items():
                yield path, method, name, example["value"]


EXAMPLES = list(request_examples())


@pytest.mark.parametrize("path, method, name, value", EXAMPLES,
                         ids=[f"{m.upper()} {p} {n}" for p, m, n, _ in EXAMPLES])
def test_request_examples_validate_and_are_answered(app: Flask, path: str, method: str,
                                                    name: str, value: Any) -> None:
    validate_at(value, pointer("paths", path, method, "requestBody", "content",
                               "application/json", "schema"))
    concrete = path.replace("{name}", "iris").replace("{version}", "1")
    response = app.test_client().open(concrete, method=method.upper(),
                                      data=json.dumps(value).encode())
    assert response.status_code == 200, response.data[:500]
    check_response(app, method.upper(), concrete, response)


REQUEST_ID_CASES = [c for c in CASES if c.id in {
    "server-metadata", "infer-json", "infer-binary", "predict-not-json", "unknown-model-metadata",
    "get-predict", "body-too-large", "broken-model-ready", "docs-asset"}]


@pytest.mark.parametrize("case", REQUEST_ID_CASES, ids=[c.id for c in REQUEST_ID_CASES])
def test_request_id_is_echoed_or_generated(case: Case, request: pytest.FixtureRequest) -> None:
    """The X-Request-ID response header every operation documents: echoed, or generated."""
    app, response = case.send(request)
    assert response.headers.get(REQUEST_ID), f"no {REQUEST_ID} on {case.method} {case.path}"
    echoed = Case(**{**case.__dict__, "headers": {**case.headers, REQUEST_ID: "abc-123"}})
    _, response = echoed.send(request)
    assert response.headers.get(REQUEST_ID) == "abc-123"


# ---------------------------------------------------------------------- 4. the docs page


EXPECTED_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def test_docs_page_loads_everything_from_this_server(client: FlaskClient) -> None:
    base = "http://localhost/docs"
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert not re.search(r"https?://", html), "the page names another server"
    urls = asset_urls(html)
    suffixes = {Path(urlsplit(u).path).suffix for u in urls}
    assert {".js", ".css"} <= suffixes, urls
    for url in urls:
        absolute = urlsplit(urljoin(base, url))
        assert (absolute.scheme, absolute.netloc) == ("http", "localhost"), url
        asset = client.get(absolute.path)
        assert asset.status_code == 200, (url, asset.data[:200])
        assert asset.mimetype == EXPECTED_TYPES[Path(absolute.path).suffix], (url, asset.mimetype)
        assert asset.data, url
        if asset.mimetype == "text/javascript" and len(asset.data) < 10_000:  # our own script
            script = asset.get_data(as_text=True)
            assert not re.search(r"https?://", script), url
            assert "validatorUrl: null" in script  # Swagger UI's default phones home
            assert '"openapi.json"' in script and urljoin(base, "openapi.json") == (
                "http://localhost/openapi.json")


def test_docs_page_forbids_other_origins(client: FlaskClient) -> None:
    policy = client.get("/docs").headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy


def test_openapi_json_is_served_as_json(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert json.loads(response.data) == DOCUMENT


def test_every_route_of_the_table_is_answered_by_a_case() -> None:
    """Each route and method of the route table is asked at least once above, through the app
    as it serves (the hot path in front of Flask), and answers as documented."""
    asked = {documented_operation(None, c.method, c.path)  # type: ignore[arg-type]
             for c in CASES if c.status != 405}
    table = {(template(r.rule), m.lower()) for r in ROUTES for m in r.methods}
    assert not table - asked, sorted(table - asked)
