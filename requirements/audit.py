"""Audit requirements/serve.lock for known vulnerabilities, and say plainly what it could not check.

    make audit                                  # python requirements/audit.py
    python requirements/audit.py --lock OTHER   # any hash-pinned requirements file

pip-audit looks each pin up in PyPI's vulnerability data (``/pypi/<name>/<version>/json``).
Where that answer is missing (some PyPI mirrors and proxies serve only ``/pypi/<name>/json``)
pip-audit skips the pin, and the audit reads the project's JSON instead, whose
``vulnerabilities`` are those of its latest release: a pin that is its project's latest release
is audited all the same; one that is not cannot be checked here and is reported with the latest
release (``make lock`` moves to it). An index that does not answer at all is reported the same way.

The verdict: a known vulnerability in a pin, not in ACCEPTED, fails (exit status 1); what could
not be checked is reported and never fails (exit status 0), so the verdict does not flip when a
project publishes a release. tests/reliability/test_dependencies.py runs this audit in
``make test``; ``judge`` is the pure part, tested there on constructed inputs.

Not part of the serving image: only requirements/serve.lock is copied into it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

LOCK = Path(__file__).resolve().parent / "serve.lock"
PYPI = "https://pypi.org/pypi"
# Advisory id (or alias, e.g. a CVE) -> why it does not affect softserve. Keep
# docs/reliability.md in step.
ACCEPTED: dict[str, str] = {}
# Exact pin -> what a reader of the report should know about it (why it is behind, how it was
# checked by hand). Only the exact pin: a new version gets no note until it earns one.
NOTES: dict[str, str] = {
    "numpy==2.4.6": "the newest numpy for Python 3.11 (2.5 needs >= 3.12), so make lock keeps "
                    "it; checked by hand against pypa/advisory-database (2026-11): its numpy "
                    "advisories all concern releases before 1.22",
}
# What a pin that is behind its project's latest release is told to do.
REFRESH = "run `make lock`"


@dataclass(frozen=True)
class Unchecked:
    """A pin the audit could not check; latest is None when the index did not say."""

    name: str
    pinned: str
    latest: str | None
    reason: str

    def line(self) -> str:
        """One line of the report: name, pinned, latest, why, what to do."""
        pin = f"{self.name}=={self.pinned}"
        if self.latest is None:
            text = f"{pin}: {self.reason}"
        else:
            text = f"{pin} (latest {self.latest}): {self.reason}; {REFRESH}"
        return f"{text} [{NOTES[pin]}]" if pin in NOTES else text


@dataclass(frozen=True)
class Verdict:
    """What an audit found. Only ``vulnerable`` fails it."""

    pins: int
    # "name==version" -> how it was checked ("pip-audit" or "project JSON")
    audited: dict[str, str] = field(default_factory=dict)
    # "name==version" -> the advisories found, each "ID (fixed in ...)"
    vulnerable: dict[str, list[str]] = field(default_factory=dict)
    # "name==version" -> the advisories found and accepted (ACCEPTED), each with the reason
    accepted: dict[str, list[str]] = field(default_factory=dict)
    unchecked: list[Unchecked] = field(default_factory=list)
    # why pip-audit gave no report, if it gave none
    pip_audit_failure: str | None = None

    @property
    def failed(self) -> bool:
        """True when a pin has a known vulnerability that is not accepted."""
        return bool(self.vulnerable)

    def report(self, lock_name: str = "requirements/serve.lock") -> str:
        """The plain report: audited N, not audited M (each with why), vulnerabilities K."""
        by_pip_audit = sum(how == "pip-audit" for how in self.audited.values())
        lines = [f"audit of {lock_name}: {self.pins} pins"]
        if self.pip_audit_failure is not None:
            lines.append(f"pip-audit gave no report: {self.pip_audit_failure}")
        lines.append(f"audited: {len(self.audited)} ({by_pip_audit} by pip-audit, "
                     f"{len(self.audited) - by_pip_audit} from the project JSON of their "
                     f"latest release)")
        lines.append(f"NOT AUDITED: {len(self.unchecked)}"
                     + (" (reported, not failed on)" if self.unchecked else ""))
        lines += [f"  {u.line()}" for u in self.unchecked]
        lines += [f"accepted: {pin}: {'; '.join(advisories)}"
                  for pin, advisories in self.accepted.items()]
        lines.append(f"KNOWN VULNERABILITIES: {len(self.vulnerable)}"
                     + (" (fix the pin, or accept it with a reason)" if self.vulnerable else ""))
        lines += [f"  {pin}: {', '.join(advisories)}" for pin, advisories in
                  self.vulnerable.items()]
        return "\n".join(lines)


def read_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """canonical name -> (pinned version, sha256 hashes), read from a pip-compile lock.

    Raises ValueError on a line that is neither a ``name==version`` pin, its hashes, nor a
    comment: the lock holds nothing unpinned.
    """
    pins: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\;]+)", line):
            current = canonicalize_name(match.group(1).split("[")[0])
            if current in pins:
                raise ValueError(f"{current} is pinned twice in {path.name}")
            pins[current] = (match.group(2), [])
        elif current and (match := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[current][1].append(match.group(1))
        elif line.strip() and not line.lstrip().startswith("#"):
            raise ValueError(f"unexpected line in {path.name} (not a == pin): {line!r}")
    return pins


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def _advisories(vulns: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(not accepted, accepted) advisories of a vulnerability list of pip-audit's report or of
    PyPI's JSON, each as "ID (fixed in ...)", an accepted one with its reason. Withdrawn
    advisories are dropped."""
    found: list[str] = []
    accepted: list[str] = []
    for vuln in vulns:
        if vuln.get("withdrawn"):
            continue
        fixed = vuln.get("fix_versions", vuln.get("fixed_in")) or []
        advisory = str(vuln.get("id") or "an advisory without id")
        text = f"{advisory} (fixed in {', '.join(map(str, fixed)) or 'no release'})"
        reasons = [ACCEPTED[i] for i in (advisory, *(vuln.get("aliases") or []))
                   if i in ACCEPTED]
        if reasons:
            accepted.append(f"{text}: {reasons[0]}")
        else:
            found.append(text)
    return found, accepted


def skipped(pins: Mapping[str, str], report: Mapping[str, Any] | str) -> list[str]:
    """The pins pip-audit did not audit (all of them when it gave no report): the ones to look
    up in the project JSON."""
    if isinstance(report, str):
        return sorted(pins)
    done = {canonicalize_name(d["name"]) for d in report.get("dependencies", [])
            if "skip_reason" not in d and "vulns" in d}
    return sorted(set(pins) - done)


def judge(pins: Mapping[str, str], report: Mapping[str, Any] | str,
          projects: Mapping[str, Mapping[str, Any] | str]) -> Verdict:
    """The verdict on pins (canonical name -> version), no I/O.

    report is pip-audit's JSON report, or why there is none. projects holds, for the pins
    pip-audit skipped, PyPI's project JSON (``/pypi/<name>/json``) or why it could not be had.
    A skipped pin is audited from its project JSON only if it is the project's latest release;
    otherwise it is unchecked, as is a pin with no (usable) project answer. Raises nothing.
    """
    verdict = Verdict(pins=len(pins),
                      pip_audit_failure=report if isinstance(report, str) else None)
    entries = {} if isinstance(report, str) else {
        canonicalize_name(d["name"]): d for d in report.get("dependencies", [])}
    for name in sorted(pins):
        pin = f"{name}=={pins[name]}"
        entry = entries.get(name)
        if entry is not None and "skip_reason" not in entry and "vulns" in entry:
            how, vulns = "pip-audit", entry["vulns"]
        else:
            project = projects.get(name, "not looked up")
            if isinstance(project, str):
                verdict.unchecked.append(Unchecked(name, pins[name], None, project))
                continue
            latest = (project.get("info") or {}).get("version")
            if not isinstance(latest, str):
                verdict.unchecked.append(Unchecked(
                    name, pins[name], None, "the index's answer names no latest release"))
                continue
            if not _same_version(latest, pins[name]):
                verdict.unchecked.append(Unchecked(
                    name, pins[name], latest,
                    "the index gives vulnerability data only for the latest release here"))
                continue
            how, vulns = "project JSON", project.get("vulnerabilities") or []
        verdict.audited[pin] = how
        found, accepted = _advisories(vulns)
        if found:
            verdict.vulnerable[pin] = found
        if accepted:
            verdict.accepted[pin] = accepted
    return verdict


def run_pip_audit(lock: Path, cache_dir: Path | None = None,
                  timeout: float = 600) -> dict[str, Any] | str:
    """pip-audit's JSON report on the lock, or why there is none (no network, ...); cache_dir
    None is pip-audit's own cache. Raises nothing."""
    command = [sys.executable, "-m", "pip_audit", "--requirement", str(lock),
               "--require-hashes", "--disable-pip", "--progress-spinner", "off",
               "--format", "json"]
    if cache_dir is not None:
        command += ["--cache-dir", str(cache_dir)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout:.0f} s"
    # 0: nothing found, 1: vulnerabilities found, or an error (then stdout is empty).
    try:
        report = json.loads(result.stdout) if result.returncode in (0, 1) else None
    except json.JSONDecodeError:
        report = None
    if not isinstance(report, dict):
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"exit status {result.returncode}: {last[-300:]}"
    return report


def fetch_projects(names: Sequence[str], index: str = PYPI,
                   timeout: float = 30) -> dict[str, dict[str, Any] | str]:
    """name -> the index's project JSON, or why it could not be had. After the first name the
    index does not answer for at all, the rest are not tried (each would wait as long).
    Raises nothing."""
    projects: dict[str, dict[str, Any] | str] = {}
    unreachable: str | None = None
    # A fresh opener reads the proxy settings of now; urlopen's shared one keeps its first.
    opener = urllib.request.build_opener()
    for name in names:
        if unreachable is not None:
            projects[name] = f"not tried: {unreachable}"
            continue
        try:
            with opener.open(f"{index}/{name}/json", timeout=timeout) as response:
                projects[name] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            projects[name] = ("not on the index" if exc.code == 404
                              else f"the index answered HTTP {exc.code}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            unreachable = f"the index did not answer ({reason})"
            projects[name] = unreachable
        except ValueError as exc:  # JSON that is not
            projects[name] = f"the index's answer is not JSON ({exc})"
    return projects


def audit(lock: Path = LOCK, index: str = PYPI, cache_dir: Path | None = None) -> Verdict:
    """Run the audit of a lock over the network: pip-audit, then the index's project JSON for
    what it skipped. Raises OSError if the lock cannot be read, ValueError if it holds a line
    that is not a pin (see read_lock); network failures are part of the verdict."""
    pins = {name: version for name, (version, _) in read_lock(lock).items()}
    report = run_pip_audit(lock, cache_dir)
    return judge(pins, report, fetch_projects(skipped(pins, report), index))


def main(argv: Sequence[str] | None = None) -> int:
    """``make audit``: print the report; exit 1 on a known vulnerability, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=LOCK,
                        help="the hash-pinned requirements file (default: %(default)s)")
    parser.add_argument("--index", default=PYPI,
                        help="where /<name>/json is asked for what pip-audit skipped "
                             "(default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="pip-audit's HTTP cache (default: its own)")
    args = parser.parse_args(argv)
    try:
        verdict = audit(args.lock, args.index, args.cache_dir)
    except (OSError, ValueError) as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    print(verdict.report("requirements/serve.lock" if args.lock == LOCK else str(args.lock)))
    return 1 if verdict.failed else 0


if __name__ == "__main__":
    sys.exit(main())
