"""The serving dependencies: locked (requirements/serve.lock) and audited for known vulnerabilities.

The lock pins the closure of pyproject's base dependencies plus the ``serve`` extra, with hashes
(``make lock`` regenerates it with pip-compile). The audit runs pip-audit over it against PyPI's
vulnerability data. pip-audit asks PyPI for each pinned release (``/pypi/<name>/<version>/json``);
where that answer is missing (some PyPI mirrors and proxies serve only ``/pypi/<name>/json``),
the same data is read from the project's JSON, whose ``vulnerabilities`` are those of its
latest release — so a pin that is not the latest release and cannot be looked up fails the test
rather than pass unaudited. No network: the test fails, loudly; it never skips.

Known vulnerabilities that are accepted are listed in ACCEPTED with the reason (and in
docs/reliability.md); anything else fails. A pin PyPI cannot answer for here is listed in
NOT_AUDITABLE_HERE with how it was checked instead, printed on every run; any other fails.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

LOCK = ROOT / "requirements" / "serve.lock"
PYPI = "https://pypi.org/pypi"
# Vulnerability id -> why it does not affect softserve (keep docs/reliability.md in step).
ACCEPTED: dict[str, str] = {}
# Pins PyPI cannot answer for on these machines (see the module's docstring), with how they
# were checked instead. Only the exact pin: a new version must be audited (or listed) again.
NOT_AUDITABLE_HERE: dict[str, str] = {
    "numpy==2.4.6": "the newest numpy for Python 3.11 (2.5 needs >= 3.12), so not PyPI's latest "
                    "release; checked by hand against pypa/advisory-database (2026-11): its 16 "
                    "numpy advisories all concern releases before 1.22",
}


def locked() -> dict[str, tuple[str, list[str]]]:
    """canonical name -> (version, hashes) from the lock file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in LOCK.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\;]+)", line):
            current = canonicalize_name(match.group(1).split("[")[0])
            pins[current] = (match.group(2), [])
        elif current and (match := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[current][1].append(match.group(1))
        elif line and not line.startswith((" ", "#")):
            raise AssertionError(f"unexpected line in {LOCK.name}: {line!r}")
    return pins


def serving_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]
            + project["optional-dependencies"]["serve"]]


def test_lock_pins_every_serving_dependency_with_hashes() -> None:
    pins = locked()
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


def _get_json(url: str) -> Any | None:
    """The JSON at url; None for a 404. Raises on anything else: no network is a failure."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _project_vulnerabilities(name: str, version: str) -> list[dict[str, Any]]:
    """PyPI's vulnerabilities of name==version, read from the project's JSON. Raises
    AssertionError if PyPI cannot say (the release is not the latest and has no JSON)."""
    release = _get_json(f"{PYPI}/{name}/{version}/json")
    if release is None:
        project = _get_json(f"{PYPI}/{name}/json")
        assert project is not None, f"{name} is not on PyPI"
        latest = project["info"]["version"]
        assert latest == version, \
            f"cannot audit {name}=={version}: PyPI answers only for its latest release " \
            f"({latest}) here; update the lock (make lock) or audit where PyPI answers fully"
        release = project
    return [v for v in release.get("vulnerabilities") or [] if not v.get("withdrawn")]


def test_pip_audit_of_the_locked_serving_dependencies() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip_audit", "--requirement", str(LOCK), "--no-deps",
         "--disable-pip", "--progress-spinner", "off", "--format", "json",
         *[arg for vuln in ACCEPTED for arg in ("--ignore-vuln", vuln)]],
        capture_output=True, text=True, timeout=600)
    # 0: nothing found, 1: vulnerabilities found; anything else (no network, ...) is a failure.
    assert result.returncode in (0, 1) and result.stdout.strip(), \
        f"pip-audit failed ({result.returncode}):\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    pins = locked()
    found: dict[str, list[str]] = {}
    audited_by_pip_audit: list[str] = []
    looked_up: list[str] = []
    not_auditable: list[str] = []
    for dependency in report["dependencies"]:
        name = canonicalize_name(dependency["name"])
        if "skip_reason" in dependency and f"{name}=={pins[name][0]}" in NOT_AUDITABLE_HERE:
            not_auditable.append(f"{name}=={pins[name][0]}")
            continue
        if "skip_reason" in dependency:
            vulns = _project_vulnerabilities(name, pins[name][0])
            ids = [v["id"] for v in vulns]
            looked_up.append(name)
        else:
            ids = [v["id"] for v in dependency.get("vulns", [])]
            audited_by_pip_audit.append(name)
        if unexpected := [i for i in ids if i not in ACCEPTED]:
            found[f"{name}=={pins[name][0]}"] = unexpected
    assert {canonicalize_name(d["name"]) for d in report["dependencies"]} == set(pins)
    print(f"\n{len(pins)} locked packages: {len(audited_by_pip_audit)} audited by pip-audit, "
          f"{len(looked_up)} from PyPI's project JSON; NOT AUDITED here: "
          f"{', '.join(f'{p} ({NOT_AUDITABLE_HERE[p]})' for p in not_auditable) or 'none'}; "
          f"known vulnerabilities: {found or 'none'}")
    assert not found, f"known vulnerabilities (fix the pin, or accept with a reason): {found}"
