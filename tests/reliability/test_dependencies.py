"""The serving dependencies: locked (requirements/serve.lock) and audited for known vulnerabilities.

The lock pins the closure of pyproject's base dependencies plus the ``serve`` extra, with hashes
(``make lock`` regenerates it with pip-compile), and the serving image installs exactly it: both
checked here from the files alone.

The audit is requirements/audit.py (``make audit``): pip-audit, then PyPI's project JSON for the
pins pip-audit could not look up. Its verdict depends on the project and on one outside fact
only: a known vulnerability in a pin fails. A pin that cannot be looked up (the index answers
only for a newer release, or does not answer at all) is reported, not failed on — so a project
publishing a release tomorrow does not turn this red. ``judge``, the pure part, is tested on
constructed inputs; the I/O around it against an index on 127.0.0.1 and a proxy that refuses;
and the real lock is audited live, its report printed on every run.
"""

from __future__ import annotations

import importlib.util
import json
import posixpath
import re
import shlex
import socket
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT


def _load_audit() -> ModuleType:
    """requirements/audit.py, a script (not a package of the project), loaded by path."""
    spec = importlib.util.spec_from_file_location("softserve_audit",
                                                  ROOT / "requirements" / "audit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


audit = _load_audit()
LOCK = ROOT / "requirements" / "serve.lock"
HASH = "--hash=sha256:" + "0" * 64


def serving_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]
            + project["optional-dependencies"]["serve"]]


def test_lock_pins_every_serving_dependency_with_hashes() -> None:
    """Every line of the lock is a == pin with hashes (read_lock refuses anything else), and
    every serving requirement of pyproject is pinned within its range."""
    pins = audit.read_lock(LOCK)
    assert pins, f"{LOCK} pins nothing"
    for name, (version, hashes) in pins.items():
        assert hashes, f"{name}=={version} has no --hash"
    for requirement in serving_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {LOCK.name}: run make lock"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), \
            f"{LOCK.name} pins {name}=={version}, outside pyproject's {requirement}: make lock"
    # The serving image must stay free of the training stack.
    assert not {"torch", "onnx", "onnxscript", "matplotlib"} & set(pins), sorted(pins)


@pytest.mark.parametrize("line", ["flask>=3.0", "flask", "-e .", "--index-url https://x/simple",
                                  "https://x/flask-3.1.3-py3-none-any.whl"])
def test_the_lock_reader_refuses_what_is_not_a_pin(tmp_path: Path, line: str) -> None:
    lock = tmp_path / "serve.lock"
    lock.write_text(f"# a comment\nblinker==1.9.0 \\\n    {HASH}\n    # via flask\n{line}\n")
    with pytest.raises(ValueError, match="not a == pin"):
        audit.read_lock(lock)


def test_the_serving_image_installs_exactly_the_lock() -> None:
    """serving/Dockerfile installs the dependencies from requirements/serve.lock alone, with
    --require-hashes (pip then refuses any dependency the lock does not pin with a hash), and
    the project itself with --no-deps: nothing else is resolved at build time."""
    dockerfile = re.sub(r"\\\n", " ", (ROOT / "serving" / "Dockerfile").read_text())
    copies = re.findall(r"^COPY\s+requirements/serve\.lock\s+(\S+)\s*$", dockerfile, re.M)
    assert len(copies) == 1, f"the serving image copies requirements/serve.lock {copies}"
    in_image = posixpath.normpath(copies[0] + "serve.lock" if copies[0].endswith("/")
                                  else copies[0])
    installs = [shlex.split(command.split("pip install", 1)[1])
                for run in re.findall(r"^RUN\s+(.*)$", dockerfile, re.M)
                for command in re.split(r"&&|;", run) if "pip install" in command]
    from_lock = [args for args in installs if "-r" in args or "--requirement" in args]
    assert len(from_lock) == 1, installs
    assert "--require-hashes" in from_lock[0], from_lock
    options = [a for a in from_lock[0] if a not in ("--require-hashes", "-r", "--requirement")]
    assert [posixpath.normpath(a) for a in options] == [in_image], from_lock
    others = [args for args in installs if args not in from_lock]
    assert others == [["--no-deps", "."]], f"pip installs more than the lock: {others}"


# --- judge: the verdict from pip-audit's report and the index's answers, constructed here ------

def _project(latest: str, *vulns: dict[str, Any]) -> dict[str, Any]:
    """PyPI's project JSON (/pypi/<name>/json), the fields the audit reads."""
    return {"info": {"name": "x", "version": latest}, "vulnerabilities": list(vulns)}


FLASK_VULN = {"id": "GHSA-562c-5r94-xh97", "aliases": ["CVE-2018-1000656"],
              "fix_versions": ["0.12.3"], "description": "denial of service via crafted JSON"}


def _skip(name: str, version: str) -> dict[str, str]:
    return {"name": name,
            "skip_reason": f"Dependency not found on PyPI and could not be audited: "
                           f"{name} ({version})"}


def test_a_pin_behind_the_latest_release_is_reported_not_failed() -> None:
    """The index here answers only for the latest release: packaging==26.3 with 26.4 out
    cannot be looked up. Reported with name, pinned, latest and what to do; the run passes."""
    pins = {"flask": "3.1.3", "packaging": "26.3"}
    report = {"dependencies": [_skip("flask", "3.1.3"), _skip("packaging", "26.3")]}
    verdict = audit.judge(pins, report, {"flask": _project("3.1.3"),
                                         "packaging": _project("26.4")})
    assert not verdict.failed
    assert verdict.audited == {"flask==3.1.3": "project JSON"}
    assert verdict.unchecked == [audit.Unchecked("packaging", "26.3", "26.4",
                                                 verdict.unchecked[0].reason)]
    assert "packaging==26.3 (latest 26.4)" in verdict.report()
    assert "run `make lock`" in verdict.report() and "NOT AUDITED: 1" in verdict.report()


def test_a_pin_with_a_known_vulnerability_fails() -> None:
    """flask==0.12 audited by pip-audit with an advisory: the verdict fails and names it,
    whatever else could not be checked."""
    pins = {"flask": "0.12", "packaging": "26.3"}
    report = {"dependencies": [{"name": "flask", "version": "0.12", "vulns": [FLASK_VULN]},
                               _skip("packaging", "26.3")]}
    verdict = audit.judge(pins, report, {"packaging": _project("26.4")})
    assert verdict.failed
    assert verdict.vulnerable == {"flask==0.12": ["GHSA-562c-5r94-xh97 (fixed in 0.12.3)"]}
    assert verdict.audited == {"flask==0.12": "pip-audit"}
    assert [u.name for u in verdict.unchecked] == ["packaging"]
    assert "KNOWN VULNERABILITIES: 1" in verdict.report()


def test_a_vulnerable_latest_release_fails_through_the_project_json() -> None:
    """pip-audit skipped the pin, but it is its project's latest release: the project JSON's
    vulnerabilities are its own, and fail the verdict. Withdrawn ones do not."""
    pins = {"pycrypto": "2.6.1", "jinja2": "3.1.6"}
    vuln = {"id": "PYSEC-2017-94", "aliases": ["CVE-2013-7459"], "fixed_in": [],
            "withdrawn": None}
    withdrawn = {"id": "GHSA-0000-0000-0000", "aliases": [], "fixed_in": ["3.1.7"],
                 "withdrawn": "2025-01-01T00:00:00Z"}
    verdict = audit.judge(pins, {"dependencies": [_skip("pycrypto", "2.6.1"),
                                                  _skip("jinja2", "3.1.6")]},
                          {"pycrypto": _project("2.6.1", vuln),
                           "jinja2": _project("3.1.6", withdrawn)})
    assert verdict.failed and verdict.unchecked == []
    assert verdict.vulnerable == {"pycrypto==2.6.1": ["PYSEC-2017-94 (fixed in no release)"]}
    assert verdict.audited == {"jinja2==3.1.6": "project JSON", "pycrypto==2.6.1": "project JSON"}


def test_an_accepted_vulnerability_is_reported_not_failed(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """An advisory in ACCEPTED (by its id or an alias, e.g. the CVE) is listed with the
    reason and does not fail."""
    monkeypatch.setitem(audit.ACCEPTED, "CVE-2018-1000656", "we never call get_json on input")
    report = {"dependencies": [{"name": "Flask", "version": "0.12", "vulns": [FLASK_VULN]}]}
    verdict = audit.judge({"flask": "0.12"}, report, {})
    assert not verdict.failed
    assert verdict.accepted == {"flask==0.12": [
        "GHSA-562c-5r94-xh97 (fixed in 0.12.3): we never call get_json on input"]}
    assert "we never call get_json on input" in verdict.report()


def test_no_report_and_no_answer_are_reported_not_failed() -> None:
    """pip-audit gave no report (no network) and the index did not answer: everything is
    unchecked, said so, and the run passes."""
    pins = {"flask": "3.1.3", "numpy": "2.4.6"}
    verdict = audit.judge(pins, "exit status 1: ProxyError", {
        "flask": "the index did not answer (refused)",
        "numpy": "not tried: the index did not answer (refused)"})
    assert not verdict.failed and verdict.audited == {}
    assert [(u.name, u.pinned, u.latest) for u in verdict.unchecked] == [
        ("flask", "3.1.3", None), ("numpy", "2.4.6", None)]
    report = verdict.report()
    assert "pip-audit gave no report: exit status 1: ProxyError" in report
    assert "NOT AUDITED: 2" in report and "the index did not answer" in report
    # numpy's pin carries its note, however it went unchecked.
    assert "numpy==2.4.6: not tried" in report and "pypa/advisory-database" in report


def test_only_what_pip_audit_skipped_is_looked_up() -> None:
    pins = {"flask": "3.1.3", "packaging": "26.3", "werkzeug": "3.1.9"}
    report = {"dependencies": [{"name": "Flask", "version": "3.1.3", "vulns": []},
                               _skip("packaging", "26.3")]}
    assert audit.skipped(pins, report) == ["packaging", "werkzeug"]
    assert audit.skipped(pins, "no report") == ["flask", "packaging", "werkzeug"]


# --- the I/O around judge, with no network but 127.0.0.1 ---------------------------------------

@pytest.fixture
def index() -> Iterator[str]:
    """A package index on 127.0.0.1 answering /pypi/<name>/json for flask (its latest release,
    0.12, with an advisory) and packaging (latest 26.4), 404 for anything else."""
    advisory = {"id": FLASK_VULN["id"], "aliases": FLASK_VULN["aliases"], "fixed_in": ["0.12.3"],
                "details": FLASK_VULN["description"], "withdrawn": None}
    projects = {"flask": _project("0.12", advisory),
                "packaging": _project("26.4")}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            match = re.fullmatch(r"/pypi/([^/]+)/json", self.path)
            body = json.dumps(projects[match.group(1)]).encode() \
                if match and match.group(1) in projects else None
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/pypi"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def refused() -> str:
    """http://127.0.0.1:<a port nothing listens on>."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def no_pypi(monkeypatch: pytest.MonkeyPatch, refused: str) -> None:
    """pypi.org only through a proxy that refuses (pip-audit gets no answer); 127.0.0.1 direct."""
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(variable, refused)
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(variable, "127.0.0.1,localhost")


def _lock(tmp_path: Path, *pins: str) -> Path:
    lock = tmp_path / "old.lock"
    lock.write_text("".join(f"{pin} \\\n    {HASH}\n" for pin in pins))
    return lock


@pytest.mark.usefixtures("no_pypi")
def test_the_audit_end_to_end_without_pypi(tmp_path: Path, index: str) -> None:
    """audit() as make audit runs it, pip-audit without PyPI and the index on 127.0.0.1: a pin
    behind the latest release and one the index does not know are reported; the pin with an
    advisory fails the verdict, and main() exits 1 on it, 0 without it."""
    lock = _lock(tmp_path, "flask==0.12", "packaging==23.2", "blinker==1.9.0")
    verdict = audit.audit(lock, index=index, cache_dir=tmp_path / "cache")
    assert verdict.pip_audit_failure is not None  # no PyPI: pip-audit gave no report
    assert verdict.failed
    assert verdict.vulnerable == {"flask==0.12": ["GHSA-562c-5r94-xh97 (fixed in 0.12.3)"]}
    assert [(u.name, u.pinned, u.latest, u.reason) for u in verdict.unchecked] == [
        ("blinker", "1.9.0", None, "not on the index"),
        ("packaging", "23.2", "26.4", verdict.unchecked[1].reason)]
    assert "packaging==23.2 (latest 26.4)" in verdict.report()


@pytest.mark.usefixtures("no_pypi")
def test_the_audit_exits_0_on_what_it_could_not_check(
        tmp_path: Path, refused: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Neither pip-audit nor the index answers: make audit says so for every pin, and exits 0
    (after the first refusal the index is not asked again)."""
    lock = _lock(tmp_path, "flask==0.12", "packaging==23.2")
    verdict = audit.audit(lock, index=refused + "/pypi", cache_dir=tmp_path / "cache")
    assert not verdict.failed and verdict.audited == {}
    reasons = [u.reason for u in verdict.unchecked]
    assert reasons[0].startswith("the index did not answer"), reasons
    assert reasons[1].startswith("not tried: the index did not answer"), reasons
    assert audit.main(["--lock", str(lock), "--index", refused + "/pypi",
                       "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "NOT AUDITED: 2" in out and "KNOWN VULNERABILITIES: 0" in out, out
    assert "flask==0.12: the index did not answer" in out, out


# --- the real lock, live ------------------------------------------------------------------------

def test_pip_audit_of_the_locked_serving_dependencies(capsys: pytest.CaptureFixture[str]) -> None:
    """make audit's verdict on requirements/serve.lock: fails on a known vulnerability only.
    The report (what was audited, what could not be and why) is printed on every run."""
    verdict = audit.audit(LOCK)
    assert verdict.pins == len(audit.read_lock(LOCK))
    assert len(verdict.audited) + len(verdict.unchecked) == verdict.pins
    with capsys.disabled():  # shown in make test's output, passing or not
        print("\n" + verdict.report())
    assert not verdict.failed, verdict.report()
