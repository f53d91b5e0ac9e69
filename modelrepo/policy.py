"""A model's traffic policy: aliases, canary, shadow — one small JSON file per model.

    <repository>/<model>/traffic.json

Triton ignores it (it reads ``config.pbtxt`` and numeric version directories only), so the
repository stays Triton's layout. Schema 1::

    {"schema": 1,
     "aliases": {"production": 3, "candidate": 4},     # name -> version number
     "canary": {"version": 4, "percent": 20.0, "sticky_header": "X-User-Id"},  # or null
     "shadow": {"version": 4, "percent": 100.0},       # or null
     "history": [2, 3],                                # earlier production versions, oldest first
     "rollout": {"version": 4, "outcome": "aborted", "step": 25.0, "reason": "...",
                 "at": "2026-01-01T00:00:00+00:00"},   # the last rollout's verdict, or null
     "updated_at": "2026-01-01T00:00:00+00:00"}

Requests that name no version go to the ``production`` alias when there is one, else to the
latest version; a canary takes ``percent`` of them; a shadow runs on ``percent`` of the
production answers, after they are sent. Written whole (temporary file, fsync, rename) under
the model's lock, as versions are published, so a server never reads half a policy.

Standard library only, like ``modelrepo`` itself: the server, training and the CLI share it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import modelrepo

POLICY_FILE = "traffic.json"
SCHEMA = 1
PRODUCTION = "production"
CANDIDATE = "candidate"
MAX_POLICY_BYTES = 64 << 10
HISTORY = 20  # production versions remembered for `rollback`
# Aliases are names, never numbers: a version string that is not a number is an alias.
ALIAS_PATTERN = r"[A-Za-z][A-Za-z0-9_.-]{0,31}"
_ALIAS_RE = re.compile(ALIAS_PATTERN)
# A sticky header: an HTTP header name (token characters).
_HEADER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


class PolicyError(Exception):
    """A traffic.json that breaks the schema, or a change that would; the message says why."""


@dataclass(frozen=True)
class Split:
    """A version that takes (canary) or mirrors (shadow) ``percent`` of unversioned requests."""

    version: int
    percent: float
    sticky_header: str | None = None  # canary only: requests carrying it choose stably

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "percent": self.percent}
        if self.sticky_header:
            out["sticky_header"] = self.sticky_header
        return out


@dataclass(frozen=True)
class Policy:
    """One model's traffic policy (empty: no file; requests go to the latest version)."""

    aliases: Mapping[str, int] = field(default_factory=dict)
    canary: Split | None = None
    shadow: Split | None = None
    history: tuple[int, ...] = ()
    rollout: Mapping[str, Any] | None = None
    updated_at: str | None = None

    @property
    def production(self) -> int | None:
        return self.aliases.get(PRODUCTION)

    @property
    def empty(self) -> bool:
        """Whether the policy changes nothing about routing."""
        return not self.aliases and self.canary is None and self.shadow is None

    def named_versions(self) -> set[int]:
        """Every version the policy points to (a server keeps them loaded)."""
        found = set(self.aliases.values())
        for split in (self.canary, self.shadow):
            if split is not None:
                found.add(split.version)
        return found

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "aliases": dict(sorted(self.aliases.items())),
                "canary": self.canary.to_json() if self.canary else None,
                "shadow": self.shadow.to_json() if self.shadow else None,
                "history": list(self.history), "rollout": dict(self.rollout or {}) or None,
                "updated_at": self.updated_at}


def check_alias(name: str) -> str:
    """Return ``name`` if it may be an alias. Raises PolicyError."""
    if not isinstance(name, str) or not _ALIAS_RE.fullmatch(name):
        raise PolicyError(f"invalid alias {name!r}: use 1-32 letters, digits, '_', '.' or '-', "
                          "starting with a letter (a number is a version, not an alias)")
    return name


def _version(value: Any, what: str) -> int:
    if type(value) is not int or not 1 <= value < 10 ** 18:
        raise PolicyError(f"{what} must be a version number (a positive integer), "
                          f"got {value!r}")
    return value


def _percent(value: Any, what: str) -> float:
    if type(value) not in (int, float) or not 0 < value <= 100:
        raise PolicyError(f"{what}.percent must be a number above 0 and at most 100, "
                          f"got {value!r}")
    return float(value)


def _split(data: Any, what: str) -> Split | None:
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) - {"version", "percent", "sticky_header"}:
        raise PolicyError(f"{what} must be null or an object with version, percent "
                          "(and for a canary sticky_header)")
    header = data.get("sticky_header")
    if header is not None and (what != "canary" or not isinstance(header, str)
                               or not _HEADER_RE.fullmatch(header)):
        raise PolicyError(f"{what}.sticky_header must be an HTTP header name, got {header!r}")
    return Split(_version(data.get("version"), f"{what}.version"),
                 _percent(data.get("percent"), what), header)


def parse_policy(data: Any) -> Policy:
    """Check a parsed traffic.json against schema 1. Raises PolicyError."""
    if not isinstance(data, dict):
        raise PolicyError(f"{POLICY_FILE} is not a JSON object")
    if data.get("schema") != SCHEMA:
        raise PolicyError(f"{POLICY_FILE}: schema must be {SCHEMA}, got {data.get('schema')!r}")
    known = {"schema", "aliases", "canary", "shadow", "history", "rollout", "updated_at"}
    if unknown := set(data) - known:
        raise PolicyError(f"{POLICY_FILE}: unknown keys {sorted(unknown)}")
    aliases = data.get("aliases", {})
    if not isinstance(aliases, dict):
        raise PolicyError(f"{POLICY_FILE}: aliases must be an object of name: version")
    checked = {check_alias(k): _version(v, f"alias {k!r}") for k, v in aliases.items()}
    history = data.get("history", [])
    if not isinstance(history, list):
        raise PolicyError(f"{POLICY_FILE}: history must be a list of version numbers")
    rollout = data.get("rollout")
    if rollout is not None and not isinstance(rollout, dict):
        raise PolicyError(f"{POLICY_FILE}: rollout must be null or an object")
    updated = data.get("updated_at")
    return Policy(checked, _split(data.get("canary"), "canary"),
                  _split(data.get("shadow"), "shadow"),
                  tuple(_version(v, "history entry") for v in history), rollout,
                  updated if isinstance(updated, str) else None)


def policy_path(model_dir: Path) -> Path:
    return Path(model_dir) / POLICY_FILE


def read_policy(model_dir: Path) -> Policy:
    """The model's policy; an empty one when it has no traffic.json.

    Raises PolicyError for a file that is not a regular file, too large, not JSON or not
    schema 1.
    """
    try:
        raw = modelrepo._read_regular_file(Path(model_dir), POLICY_FILE, MAX_POLICY_BYTES)
    except modelrepo.BrokenVersion as exc:
        if exc.reason.endswith("is missing"):
            return Policy()
        raise PolicyError(exc.reason) from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise PolicyError(f"{POLICY_FILE} is not valid JSON: {exc}") from None
    return parse_policy(data)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_policy(model_dir: Path, policy: Policy) -> Policy:
    """Write the policy whole: staged, fsynced, renamed over traffic.json. Call with the model
    lock held. Returns the policy as written (``updated_at`` set). Raises OSError."""
    policy = replace(policy, updated_at=now())
    text = json.dumps(policy.to_json(), indent=2).encode() + b"\n"
    parse_policy(json.loads(text))  # what we write, we can read back
    staged = Path(model_dir) / f"{modelrepo.TMP_PREFIX}{os.getpid()}-{POLICY_FILE}"
    modelrepo._write_file(staged, text)
    os.rename(staged, policy_path(model_dir))
    modelrepo._fsync_dir(Path(model_dir))
    if (mirror := modelrepo._mirror_of(Path(model_dir))) is not None:
        mirror.policy_written(Path(model_dir))  # conditional: StoreConflict if it moved
    return policy


def update_policy(model_dir: Path, change: Callable[[Policy], Policy]) -> Policy:
    """Read, change and write the policy under the model's lock; the policy written.

    ``change`` may raise PolicyError (nothing is written). A malformed traffic.json raises
    PolicyError too: it is never overwritten silently (fix or delete it first).
    """
    mirror = modelrepo._mirror_of(Path(model_dir))
    for _ in range(10):
        if mirror is not None:  # object storage: read it afresh; lost a race: read again
            mirror.refresh_policy(Path(model_dir))
        with modelrepo.model_lock(Path(model_dir)):
            try:
                policy = read_policy(model_dir)
            except PolicyError as exc:
                raise PolicyError(f"{exc}; nothing was changed: fix {POLICY_FILE} in the "
                                  "model's directory, or delete it to start afresh (servers "
                                  "keep their last good policy meanwhile)") from None
            try:
                return write_policy(model_dir, change(policy))
            except modelrepo.StoreConflict:
                if mirror is None:
                    raise
    raise PolicyError(f"{POLICY_FILE} kept changing under this command; try again")


# --- the changes the commands make ---------------------------------------------------------


def valid_versions(model_dir: Path) -> list[int]:
    """Numbers of the versions that pass ``read_version`` (what a server can serve), sorted."""
    found = []
    for number, path in modelrepo.version_dirs(Path(model_dir)).items():
        try:
            modelrepo.read_version(path)
        except modelrepo.BrokenVersion:
            continue
        found.append(number)
    return found


def serving_version(policy: Policy, valid: list[int]) -> int | None:
    """The version unversioned requests go to: production when valid, else the latest."""
    if policy.production in valid:
        return policy.production
    return valid[-1] if valid else None


def set_alias(policy: Policy, name: str, version: int) -> Policy:
    """The policy with alias ``name`` on ``version`` (production moves keep a history)."""
    check_alias(name)
    if name == PRODUCTION:
        return set_production(policy, version)
    return replace(policy, aliases={**policy.aliases, name: version})


def set_production(policy: Policy, version: int) -> Policy:
    """Production on ``version``; the previous production joins the history; a canary or
    shadow of that version ends (it now takes all the traffic)."""
    history = policy.history
    if policy.production is not None and policy.production != version:
        history = (*history, policy.production)[-HISTORY:]
    canary = None if policy.canary and policy.canary.version == version else policy.canary
    shadow = None if policy.shadow and policy.shadow.version == version else policy.shadow
    return replace(policy, aliases={**policy.aliases, PRODUCTION: version}, history=history,
                   canary=canary, shadow=shadow)


def remove_alias(policy: Policy, name: str) -> Policy:
    """The policy without alias ``name``. Raises PolicyError if it has no such alias."""
    if name not in policy.aliases:
        raise PolicyError(f"no alias {name!r} (aliases: "
                          f"{', '.join(sorted(policy.aliases)) or 'none'})")
    return replace(policy, aliases={k: v for k, v in policy.aliases.items() if k != name})


def pin_production(model_dir: Path, policy: Policy, *, exclude: int | None = None) -> Policy:
    """``policy`` with production set when it has none: on the highest valid version other than
    ``exclude`` (what serves now), so publishing a new version changes nothing served.
    Unchanged when there is no such version."""
    if policy.production is not None:
        return policy
    valid = [v for v in valid_versions(model_dir) if v != exclude]
    return set_production(policy, valid[-1]) if valid else policy


def publish(repository: Path, model_name: str, model_bytes: bytes, metadata: dict[str, Any],
            extra_files: Mapping[str, bytes] | None = None,
            promote: bool = True) -> modelrepo.Published:
    """``modelrepo.publish_version``, and what it means for the model's traffic.

    ``promote`` moves the model's production alias, if it has one, to the new version (no
    alias: the newest version serves anyway). Without ``promote`` the new version is published
    unserved: production is first pinned to the version serving now (a model's very first
    version becomes production, there being nothing else to serve), and the new version gets
    the ``candidate`` alias. Training and ``python -m modelrepo import`` both publish here.
    Raises RepositoryError (a malformed traffic.json among the reasons: never overwritten),
    BrokenVersion.
    """
    model_dir = Path(repository) / model_name
    try:
        current = read_policy(model_dir)  # refuse early: never publish half a decision
        if not promote and current.production is None and modelrepo.version_dirs(model_dir):
            update_policy(model_dir, lambda p: pin_production(model_dir, p))
        published = modelrepo.publish_version(repository, model_name, model_bytes, metadata,
                                              extra_files)
        if not promote:
            update_policy(model_dir, lambda p: set_alias(
                p if p.production is not None else set_production(p, published.version),
                CANDIDATE, published.version))
        elif current.production is not None:
            update_policy(model_dir, lambda p: set_production(p, published.version))
    except PolicyError as exc:
        raise modelrepo.RepositoryError(
            f"model {model_name}'s traffic policy: {exc} (fix or remove {POLICY_FILE}; see "
            "python -m modelrepo list)") from None
    return published


def check_alias_arg(text: str) -> str:
    """argparse's type for an alias. Raises argparse.ArgumentTypeError."""
    import argparse

    try:
        return check_alias(text)
    except PolicyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_header_arg(text: str) -> str:
    """argparse's type for a sticky header name. Raises argparse.ArgumentTypeError."""
    import argparse

    if not _HEADER_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an HTTP header name")
    return text


def resolve(model_dir: Path, model: str, policy: Policy, target: str) -> int:
    """A version number or alias, checked to be a valid version. Raises PolicyError."""
    number = modelrepo.parse_version(target)
    if number is None:
        if target not in policy.aliases:
            raise PolicyError(f"{model} has no version or alias {target!r} (aliases: "
                              f"{', '.join(sorted(policy.aliases)) or 'none'}; see: list)")
        number = policy.aliases[target]
    valid = valid_versions(model_dir)
    if number not in valid:
        state = "retired" if number in modelrepo.retired_versions(Path(model_dir)) else (
            "broken" if number in modelrepo.version_dirs(Path(model_dir)) else "missing")
        raise PolicyError(f"{model} version {number} is {state}; choose a valid version "
                          f"({', '.join(map(str, valid)) or 'there is none'}; see: list)")
    return number
