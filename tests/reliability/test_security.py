"""Security properties, checked on the running server's own system calls where possible.

The ``audited`` server's processes carry an audit hook (hooks/sitecustomize.py) that logs every
file opened, listed or changed in the repository, every unpickling, every process spawned, and
any file access anywhere whose path holds a marker that the crafted URLs below all carry.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from serving.openapi.document import openapi_document
from tests.support import ROOT
from tests.reliability.conftest import (AUDIT_MARKER, ROW, V2_ROW, Audited, assert_json_error,
                                        call, http_request, raw_exchange, start, tree_snapshot,
                                        wait_for_workers)

M = AUDIT_MARKER
# Names and versions that try to leave the repository, or to name something else in it.
HOSTILE_NAMES = [f"../{M}", f"../../../../etc/{M}", f"..%2F..%2F{M}", f"%2e%2e%2f{M}",
                 f"{M}%00", f"./{M}", f"/{M}", f"{M}/..", f".{M}", f"iris/../{M}",
                 f"{M}%5c..%5c..", f"~{M}", f"{M}\u2215x", f"{M}%c0%ae%c0%ae", f"{'a' * 300}{M}"]
HOSTILE_VERSIONS = [f"../{M}", f"..%2F{M}", "..", "%2e%2e", "01", "1e0", "-1", "0", "1.0",
                    "\uff11", f"1%00{M}", f"1/../{M}", "99999999999999999999999", " 1", f"{M}"]


def hostile_paths() -> list[tuple[str, str]]:
    """(method, raw request-target) for every route with a name or version in it."""
    paths = []
    for name in HOSTILE_NAMES:
        n = name if "%" in name else quote(name, safe="/%")
        paths += [("GET", f"/v1/models/{n}"), ("POST", f"/v1/models/{n}:predict"),
                  ("GET", f"/v2/models/{n}"), ("GET", f"/v2/models/{n}/ready"),
                  ("POST", f"/v2/models/{n}/infer"), ("GET", f"/v2/models/{n}/stats"),
                  ("GET", f"/docs/{n}")]
    for version in HOSTILE_VERSIONS:
        v = version if "%" in version else quote(version, safe="/%")
        for tail in ("", "/ready", "/stats"):
            paths.append(("GET", f"/v2/models/iris/versions/{v}{tail}"))
        paths.append(("POST", f"/v2/models/iris/versions/{v}/infer"))
    return paths


def test_names_from_urls_never_reach_the_filesystem(audited: Audited) -> None:
    """Path traversal: every crafted name or version is refused (404/405, JSON), or the request
    line itself is refused by gunicorn (400); and the server's processes never touch a file
    whose path holds any part of it."""
    statuses: dict[int, int] = {}
    for method, target in hostile_paths():
        body = V2_ROW if target.endswith("infer") else ROW if method == "POST" else b""
        response = raw_exchange(audited.server.port, http_request(method, target, body))
        assert response.status is not None, (target, response)
        statuses[response.status] = statuses.get(response.status, 0) + 1
        # (308: "//" in a path; see test_no_redirect_is_built_from_the_host_header)
        assert response.status in (308, 400, 404, 405), (target, response.status,
                                                          response.body[:200])
        if response.status == 308:
            continue
        if response.headers.get("content-type", "").startswith("application/json"):
            assert_json_error(response.status, response.body, response.headers)
            assert b"root:" not in response.body
        else:  # gunicorn's own refusal of a request line it cannot parse
            assert response.status == 400, (target, response)
    time.sleep(1.5)  # a few repository polls: any scan that took a name from a URL would show
    touched = [e for e in audited.events() if e["kind"] == "marker"]
    assert not touched, touched[:5]
    assert statuses.get(404), statuses


def test_no_redirect_is_built_from_the_host_header(audited: Audited) -> None:
    """A path with "//" must not be answered by a redirect to an absolute URL made from the
    client's Host header (an open redirect, and a cache-poisoning vector behind a caching
    proxy): werkzeug merges slashes with a 308 unless the URL map says not to."""
    answers = {}
    for method, target in (("GET", "/v2//health/live"), ("GET", "//v2/models/iris"),
                           ("POST", "/v2/models//iris/infer"), ("GET", "/v1/models//iris")):
        request = http_request(method, target, V2_ROW if method == "POST" else b"")
        request = request.replace(b"Host: 127.0.0.1", b"Host: attacker.example")
        response = raw_exchange(audited.server.port, request)
        answers[target] = (response.status, response.headers.get("location"))
        if response.status is not None and response.status < 500 and response.status >= 400:
            assert_json_error(response.status, response.body, response.headers)
    assert not [t for t, (status, location) in answers.items()
                if location or status is None or 300 <= status < 400], answers


def test_only_onnx_and_json_are_read_and_nothing_is_unpickled(audited: Audited) -> None:
    """Whatever every endpoint is asked (and whatever other tests sent this server), the
    repository is only listed and read — model.onnx and metadata.json, nothing else, never
    written — nothing is unpickled and no process is spawned."""
    document = openapi_document("0")
    for path, item in document["paths"].items():
        url = audited.server.url + path.replace("{name}", "iris").replace("{version}", "1") \
            .replace("{asset}", "swagger-ui.css").replace("{ui_asset}", "ui.css")
        if path.endswith("/compare"):  # one version here: compared with itself
            url += "?a=1&b=1"
        if "get" in item:
            assert call(url)[0] in (200, 304), url
        if "post" in item and path.startswith("/v2/repository/models/"):
            assert call(url, b"")[0] == 403, url  # load/unload: refused, read-only
        elif "post" in item and path.endswith("/feedback"):  # accepted, never a write
            assert call(url, b'{"id": "any", "label": "setosa"}')[0] == 202, url
        elif "post" in item:
            body = V2_ROW if path.endswith("infer") else b"{}" if "repository" in path else ROW
            assert call(url, body)[0] == 200, url
    time.sleep(1.5)  # a few polls
    events = audited.events()
    root = str(audited.repository)
    assert events, "the audit hook recorded nothing: it is not installed"
    assert not [e for e in events if e["kind"] == "unpickle"], "something was unpickled"
    assert not [e for e in events if e["kind"] == "spawn"], "a process was spawned"
    assert not [e for e in events if e["kind"] == "mutation"], \
        [e for e in events if e["kind"] == "mutation"][:5]
    opened = {Path(e["path"]).name for e in events if e["event"] == "open"}
    assert opened == {"model.onnx", "metadata.json"}, opened
    listed = {e["path"] for e in events if e["event"] in ("os.scandir", "os.listdir")}
    allowed = re.compile(re.escape(root) + r"(/iris(/[1-9][0-9]*)?)?")
    assert all(allowed.fullmatch(p) for p in listed), listed


def test_no_endpoint_writes_to_the_repository(audited: Audited) -> None:
    """The repository's tree — names, modes, sizes, mtimes — is exactly what it was before the
    server started, after everything the tests sent it."""
    assert tree_snapshot(audited.repository) == audited.snapshot


def test_sources_load_nothing_but_onnx_and_json() -> None:
    """No deserializer that can run code is even imported by the serving side."""
    # Code, not words: the import command names pickles in the messages that refuse them.
    unsafe = r"(pickle|cPickle|dill|cloudpickle|joblib|shelve|marshal)"
    forbidden = re.compile(rf"\b(import\s+{unsafe}\b|from\s+{unsafe}\b|{unsafe}\.|"
                           r"torch\.load|np\.load|numpy\.load|allow_pickle|yaml\.load|"
                           r"yaml\.unsafe_load|eval\(|exec\()")
    hits = []
    for package in ("serving", "modelrepo"):
        for source in sorted((ROOT / package).rglob("*.py")):
            for number, line in enumerate(source.read_text().splitlines(), 1):
                if forbidden.search(line.split("#")[0]):
                    hits.append(f"{source.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, hits


def test_serves_a_repository_it_cannot_write(private_repository: Path, tmp_path: Path) -> None:
    """Every file read-only, every directory without write permission, and a server without
    root's override of them: it loads, serves, and picks up a version published meanwhile
    (by a writer that can write) — it never needs to write."""
    paths = [private_repository, *private_repository.rglob("*")]
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    server = start(private_repository, tmp_path, drop_dac=True)
    try:
        wait_for_workers(server, 2)
        for url, body in (("/predict", ROW), ("/v2/models/iris/infer", V2_ROW),
                          ("/v2/health/ready", None), ("/metrics", None)):
            status, answer, headers = call(server.url + url, body)
            assert status == 200, (url, answer[:200])
        assert "Permission denied" not in server.log()
    finally:
        server.stop()


def test_container_runs_as_non_root_with_a_read_only_repository() -> None:
    """The serving image's last USER is not root; compose mounts the repository read-only
    into the server."""
    dockerfile = (ROOT / "serving" / "Dockerfile").read_text()
    final_stage = dockerfile.split("\nFROM ")[-1]
    users = re.findall(r"^USER\s+(\S+)", final_stage, flags=re.MULTILINE)
    assert users, "the serving image sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    serve = compose["services"]["serve"]
    mounts = [v for v in serve.get("volumes", []) if isinstance(v, str)]
    repository = serve.get("environment", {}).get("SOFTSERVE_MODEL_REPOSITORY", "/models")
    mounted = [v for v in mounts if v.split(":")[1] == repository]
    assert mounted and all(v.endswith(":ro") for v in mounted), mounts
    assert serve.get("user") in (None, *users), "compose overrides the image's user"


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/models/iris", "/docs"])
def test_no_server_internals_in_answers(audited: Audited, path: str) -> None:
    """Errors say what was wrong, never a traceback or a filesystem path of the server."""
    for target in (path, path + "/nope", path + "%00"):
        response = raw_exchange(audited.server.port, http_request("GET", target))
        text = response.body.decode(errors="replace")
        assert "Traceback" not in text and str(audited.repository) not in text, (target, text)
    status, body, _ = call(audited.server.url + "/v2/models/iris/versions/9/ready")
    assert str(audited.repository) not in body.decode()
    assert json.loads(body)["error"]
