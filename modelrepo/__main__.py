"""``python -m modelrepo``: list a model's versions, roll it back, restore, report on what was
served (the prediction log) — without torch.

The server picks up a rollback or a restore at its next poll: no restart. Retired versions are
renamed ``retired-<N>`` (Triton ignores such names too), never deleted, and their numbers never
reused: a restore copies a retired version under the next number instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import modelrepo
from modelrepo import BrokenVersion, RepositoryError


def _describe(metadata: dict[str, Any]) -> str:
    metrics = metadata.get("metrics", {})
    held_out = metrics.get("validation") or metrics.get("train") or {}
    which = "val" if metrics.get("validation") else "train"
    parity = metadata.get("parity", {}).get("max_abs_diff")
    restored = metadata.get("restored_from")
    return (f"{metadata.get('created_at', '?'):25}  {which} acc {held_out.get('accuracy', 0):.4f}  "
            f"parity {parity if parity is None else f'{parity:.2g}'}  "
            f"data {metadata.get('data', {}).get('source', '?')}"
            + (f"  (restored from {restored.get('version')})" if isinstance(restored, dict)
               else ""))


def versions(model_dir: Path) -> list[tuple[int, str, dict[str, Any] | None, str]]:
    """(number, state, metadata, note) for every live, broken and retired version, newest first.

    state is "live" (what a server serves: the highest valid version), "valid", "broken" or
    "retired".
    """
    rows: list[tuple[int, str, dict[str, Any] | None, str]] = []
    live_found = False
    for number, path in sorted(modelrepo.version_dirs(model_dir).items(), reverse=True):
        metadata: dict[str, Any] | None
        try:
            metadata, _ = modelrepo.read_version(path)
        except BrokenVersion as exc:
            rows.append((number, "broken", None, exc.reason))
            continue
        rows.append((number, "valid" if live_found else "live", metadata, ""))
        live_found = True
    for number in modelrepo.retired_versions(model_dir):
        path = model_dir / f"{modelrepo.RETIRED_PREFIX}{number}"
        try:
            metadata, _ = modelrepo.read_version(path)
        except BrokenVersion as exc:
            metadata = None
            note = exc.reason
        else:
            note = ""
        rows.append((number, "retired", metadata, note))
    return sorted(rows, key=lambda r: r[0], reverse=True)


def cmd_list(repository: Path, model: str | None) -> int:
    names = [model] if model else modelrepo.model_names(repository)
    if not names:
        print(f"no models in {repository}")
        return 0
    for name in names:
        model_dir = repository / modelrepo.check_model_name(name, publishing=False)
        if not model_dir.is_dir():
            print(f"error: no model {name!r} in {repository}", file=sys.stderr)
            return 2
        print(f"{name}:")
        for number, state, metadata, note in versions(model_dir):
            text = _describe(metadata) if metadata else note
            print(f"  {number:>4}  {state:8} {text}")
    return 0


def cmd_rollback(repository: Path, model: str, to: int | None) -> int:
    model_dir = repository / modelrepo.check_model_name(model, publishing=False)
    if not model_dir.is_dir():
        print(f"error: no model {model!r} in {repository}", file=sys.stderr)
        return 2
    with modelrepo.model_lock(model_dir):
        table = versions(model_dir)
        valid = [n for n, state, _, _ in table if state in ("live", "valid")]
        if not valid:
            print(f"error: {model} has no valid version to roll back from", file=sys.stderr)
            return 1
        live = valid[0]
        if to is None:
            older = [n for n in valid if n < live]
            if not older:
                print(f"error: {model} version {live} is the only valid version; nothing to "
                      "roll back to", file=sys.stderr)
                return 1
            to = older[0]
        elif to not in valid:
            state = next((s for n, s, _, _ in table if n == to), "missing")
            print(f"error: {model} version {to} is {state}; roll back only to a valid version "
                  f"({', '.join(map(str, valid))})", file=sys.stderr)
            return 1
        elif to == live:
            print(f"{model} version {to} is already live; nothing to do")
            return 0
        retire = sorted((n for n in modelrepo.version_dirs(model_dir) if n > to), reverse=True)
        for number in retire:
            target = modelrepo.retire_version(model_dir, number)
            print(f"retired {model} version {number} -> {target}")
    print(f"{model} version {to} is live (servers switch at their next poll)")
    return 0


def cmd_restore(repository: Path, model: str, version: int) -> int:
    model_dir = repository / modelrepo.check_model_name(model)
    if not model_dir.is_dir():
        print(f"error: no model {model!r} in {repository}", file=sys.stderr)
        return 2
    retired = modelrepo.retired_versions(model_dir)
    if version not in retired:
        in_service = version in modelrepo.version_dirs(model_dir)
        state = "in service, not retired" if in_service else "missing"
        print(f"error: {model} version {version} is {state}; restore only a retired version "
              f"({', '.join(map(str, retired)) or 'there is none'})", file=sys.stderr)
        return 1
    try:
        restored = modelrepo.restore_version(repository, model, version)
    except BrokenVersion as exc:
        print(f"error: {model} retired version {version} cannot be restored: {exc.reason}",
              file=sys.stderr)
        return 1
    print(f"restored {model} version {version} ({modelrepo.RETIRED_PREFIX}{version}) as version "
          f"{restored.version} -> {restored.path}")
    print(f"{model} version {restored.version} is live (servers switch at their next poll)")
    return 0


def cmd_report(repository: Path, model: str, log_dir: Path, as_json: bool) -> int:
    from modelrepo.report import LogError, format_report, read_log, version_report

    name = modelrepo.check_model_name(model, publishing=False)
    try:
        data = read_log(log_dir, name)
    except LogError as exc:
        print(f"error: {exc} (give the directory SOFTSERVE_PREDICTION_LOG names, with --log)",
              file=sys.stderr)
        return 2
    model_dir = repository / name
    versions = version_report(data, model_dir if model_dir.is_dir() else None)
    if as_json:
        print(json.dumps({"model": name, "requests": len(data.predictions),
                          "feedback": data.feedback_items, "unmatched": data.unmatched(),
                          "skipped_lines": data.skipped_lines, "versions": versions}))
    else:
        print("\n".join(format_report(data, versions)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modelrepo",
        description="Inspect, roll back or restore the model repository. Needs no torch: runs "
        "in the serving environment too.")
    parser.add_argument("--artifacts", type=Path, metavar="DIR",
                        help=f"model repository (default: ${modelrepo.REPOSITORY_ENV}, "
                        f"else {modelrepo.DEFAULT_REPOSITORY})")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="versions with their metrics, and which is live")
    p_list.add_argument("model", nargs="?", help="one model (default: all)")
    p_back = sub.add_parser(
        "rollback", help="make the previous (or a named) version live by retiring newer ones")
    p_back.add_argument("model")
    p_back.add_argument("--to", type=int, metavar="N", help="the version to go back to "
                        "(default: the newest valid version before the live one)")
    p_restore = sub.add_parser(
        "restore", help="bring a retired version back: copy it under the next version number "
        "(it becomes live; undoes a rollback)",
        description="Copy retired version N (retired-N) under the next version number, which "
        "becomes live. The retired copy stays, its number is never reused; metadata.json "
        "records restored_from. The files are verified (sha256) before anything is written.")
    p_restore.add_argument("model")
    p_restore.add_argument("version", type=int, metavar="N",
                           help="the retired version to restore (see: list)")
    p_report = sub.add_parser(
        "report", help="what was served and how right it was: the prediction log joined with "
        "the feedback, per version (accuracy, confusion matrix, drift)",
        description="Join the prediction log's predictions and feedback by request id and "
        "print, per version: rows logged, labelled rows, live accuracy, confusion matrix, and "
        "each feature's PSI against the version's training statistics (< 0.1 stable, 0.1-0.25 "
        "moderate, > 0.25 significant). Feedback without a logged prediction is counted as "
        "unmatched.")
    p_report.add_argument("model")
    p_report.add_argument("--log", type=Path, metavar="DIR", default=None,
                          help="the prediction log directory (default: "
                          "$SOFTSERVE_PREDICTION_LOG)")
    p_report.add_argument("--json", action="store_true", help="one JSON object instead of text")
    for p in (p_list, p_back, p_restore, p_report):
        p.add_argument("--artifacts", type=Path, metavar="DIR", default=argparse.SUPPRESS,
                       help="model repository (as above)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    repository = args.artifacts or modelrepo.default_repository()
    try:
        if args.command == "list":
            return cmd_list(repository, args.model)
        if args.command == "report":
            log_dir = args.log or os.environ.get("SOFTSERVE_PREDICTION_LOG")
            if not log_dir:
                print("error: no prediction log: give --log DIR (or set "
                      "SOFTSERVE_PREDICTION_LOG)", file=sys.stderr)
                return 2
            return cmd_report(repository, args.model, Path(log_dir), args.json)
        if args.command == "restore":
            return cmd_restore(repository, args.model, args.version)
        return cmd_rollback(repository, args.model, args.to)
    except RepositoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
