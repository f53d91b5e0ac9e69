"""Schema-driven fuzzing: schemathesis against the live server's /openapi.json, every operation.

For each operation three generators run (fixed seed, ``budget(...)`` examples each):
``positive`` (requests the document allows, random model names), ``known`` (the same with the
served model and version as path parameters, so bodies reach the codecs) and ``negative``
(requests the document forbids). Checks: no 5xx (schemathesis' ``not_a_server_error``), and every
4xx is JSON ``{"error": "<text>"}``. V2 binary bodies are fuzzed in test_fuzz_v2.py instead.
The server's log must stay free of tracebacks and worker restarts, its workers the same.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from serving.openapi.document import openapi_document
from tests.reliability.conftest import Audited, budget, count_case

EXAMPLES = budget(12)


def _operations() -> list[tuple[str, bool]]:
    """(label, has path parameters) of every operation the document describes."""
    document = openapi_document("0")
    ops = []
    for path, item in document["paths"].items():
        for method in ("get", "post", "put", "patch", "delete"):
            if method in item and path != "/openapi.json":  # schemathesis skips its own source
                ops.append((f"{method.upper()} {path}", "{" in path))
    return ops


CASES = [(label, mode) for label, has_params in _operations()
         for mode in ("positive", "known", "negative") if has_params or mode != "known"]


def json_error_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx answer of the app is ``application/json`` holding ``{"error": "<text>"}``.

    A request gunicorn cannot parse (a generated ``Content-Length: x~Y1``, say) never reaches
    the app: gunicorn answers 400/414/431 with its own HTML page. Those answers lack the
    ``X-Request-ID`` the app puts on every response; they are checked for their status only
    (docs/reliability.md lists them).
    """
    if 400 <= response.status_code < 500:
        headers = {k.lower(): v for k, v in response.headers.items()}
        if "x-request-id" not in headers:
            assert response.status_code in (400, 414, 431), response.status_code
            count_case("schemathesis requests, of which refused by gunicorn itself")
            return None
        content_type = (headers.get("content-type") or [""])[0]
        assert content_type.startswith("application/json"), \
            f"{response.status_code} with Content-Type {content_type!r}: {response.content[:200]!r}"
        doc = json.loads(response.content)
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], \
            f"{response.status_code} body is not {{\"error\": text}}: {doc!r}"
    return None


@pytest.fixture(scope="module")
def schema(audited: Audited) -> Any:
    return schemathesis.openapi.from_url(audited.server.url + "/openapi.json")


@pytest.fixture(scope="module")
def session() -> Any:
    with requests.Session() as s:
        yield s


# No worker crashed or restarted, and the log holds no traceback or 5xx, across the module.
pytestmark = pytest.mark.usefixtures("same_workers_and_clean_log")


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_operation_never_fails_and_errors_are_json(label: str, mode: str, schema: Any,
                                                   session: Any, audited: Audited) -> None:
    operation = schema[label.split(" ", 1)[1]][label.split(" ", 1)[0]]
    if mode == "known":
        strategy = operation.as_strategy(path_parameters={"name": "iris", "version": "1"},
                                         generation_mode=GenerationMode.POSITIVE)
    else:
        strategy = operation.as_strategy(generation_mode=GenerationMode(mode))
    statuses: dict[int, int] = {}

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=audited.server.url, session=session, timeout=60)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        count_case("schemathesis requests")
        case.validate_response(response, checks=[not_a_server_error, json_error_body])

    run()
    assert statuses, "no case was generated"
