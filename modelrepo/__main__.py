"""``python -m modelrepo``: list a model's versions, roll it back, restore, import an ONNX
classifier, steer its traffic (alias, unalias, promote, canary, shadow, rollout:
modelrepo/policy.py) and report on what was served (the prediction log) — without torch
(``import`` needs onnx: ``pip install 'softserve[import]'``).

The server picks up a rollback or a restore at its next poll: no restart. Retired versions are
renamed ``retired-<N>`` (Triton ignores such names too), never deleted, and their numbers never
reused: a restore copies a retired version under the next number instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import modelrepo
from modelrepo import BrokenVersion, RepositoryError, policy, rollout, storage


def _describe(metadata: dict[str, Any]) -> str:
    metrics = metadata.get("metrics", {})
    held_out = metrics.get("validation") or metrics.get("train") or metrics.get("sample") or {}
    # An import has the accuracy on its labelled --sample, if it had one.
    which = "val" if metrics.get("validation") else "train" if metrics.get("train") else (
        "sample")
    parity = metadata.get("parity", {}).get("max_abs_diff")
    restored = metadata.get("restored_from")
    accuracy = (f"{which} acc {held_out.get('accuracy', 0):.4f}" if held_out
                else "no accuracy     ")
    return (f"{metadata.get('created_at', '?'):25}  {accuracy}  "
            f"parity {parity if parity is None else f'{parity:.2g}'}  "
            f"data {metadata.get('data', {}).get('source', '?')}"
            + (f"  (imported from {metadata['source'].get('file')})"
               if isinstance(metadata.get("source"), dict) else "")
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
        print(f"no models in {storage.shown(repository)}")
        return 0
    for name in names:
        model_dir = repository / modelrepo.check_model_name(name, publishing=False)
        if not model_dir.is_dir():
            print(f"error: no model {name!r} in {storage.shown(repository)}", file=sys.stderr)
            return 2
        print(f"{name}:")
        try:
            traffic: policy.Policy | None = policy.read_policy(model_dir)
        except policy.PolicyError as exc:
            traffic = None
            print(f"  traffic policy: UNUSABLE ({exc}); servers keep their last good one")
        table = versions(model_dir)
        valid = [n for n, state, _, _ in table if state in ("live", "valid")]
        live = policy.serving_version(traffic or policy.Policy(), sorted(valid))
        for number, state, metadata, note in table:
            text = _describe(metadata) if metadata else note
            if state in ("live", "valid"):
                state = "live" if number == live else "valid"
            print(f"  {number:>4}  {state:8} {text}{_labels(traffic, number)}")
        if traffic is not None and not traffic.empty:
            print("  traffic: " + _traffic_text(traffic, live))
    return 0


def _labels(traffic: policy.Policy | None, number: int) -> str:
    """`` [production, candidate, canary 20%, shadow 100%]``: what points at a version."""
    if traffic is None:
        return ""
    names = [a for a, v in sorted(traffic.aliases.items()) if v == number]
    for part, split in (("canary", traffic.canary), ("shadow", traffic.shadow)):
        if split is not None and split.version == number:
            names.append(f"{part} {split.percent:g}%")
    return f"  [{', '.join(names)}]" if names else ""


def _traffic_text(traffic: policy.Policy, live: int | None) -> str:
    parts = [f"unversioned requests -> version {live}"
             + (" (production)" if traffic.production == live else " (latest)")]
    if traffic.canary:
        sticky = traffic.canary.sticky_header
        parts.append(f"canary version {traffic.canary.version} takes "
                     f"{traffic.canary.percent:g}%" + (f" (sticky on {sticky})" if sticky else ""))
    if traffic.shadow:
        parts.append(f"shadow version {traffic.shadow.version} replays "
                     f"{traffic.shadow.percent:g}% of production answers")
    if traffic.rollout:
        r = traffic.rollout
        parts.append(f"last rollout: version {r.get('version')} {r.get('outcome')}"
                     + (f" ({r['reason']})" if r.get("reason") else ""))
    return "; ".join(parts)


def cmd_rollback(repository: Path, model: str, to: int | None) -> int:
    model_dir = repository / modelrepo.check_model_name(model, publishing=False)
    if not model_dir.is_dir():
        print(f"error: no model {model!r} in {storage.shown(repository)}", file=sys.stderr)
        return 2
    with modelrepo.model_lock(model_dir):
        table = versions(model_dir)
        valid = [n for n, state, _, _ in table if state in ("live", "valid")]
        if not valid:
            print(f"error: {model} has no valid version to roll back from", file=sys.stderr)
            return 1
        current = policy.read_policy(model_dir)
        if current.production is not None:  # aliases: move production, retire nothing
            return _rollback_alias(model_dir, model, current, sorted(valid), to)
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
            print(f"retired {model} version {number} -> {storage.shown(target)}")
    print(f"{model} version {to} is live (servers switch at their next poll)")
    return 0


def _rollback_alias(model_dir: Path, model: str, current: policy.Policy, valid: list[int],
                    to: int | None) -> int:
    """Rollback of a model with a production alias: production moves back (to ``to``, else to
    the production before it, else to the valid version below it). Call with the lock held."""
    production = current.production
    if to is None:
        earlier = [v for v in reversed(current.history) if v in valid and v != production]
        below = [v for v in valid if production is None or v < production]
        to = earlier[0] if earlier else (below[-1] if below else None)
        if to is None:
            print(f"error: {model} production is version {production}, and no earlier valid "
                  f"version is left to roll back to", file=sys.stderr)
            return 1
    elif to not in valid:
        print(f"error: {model} version {to} is not a valid version; roll back only to one of "
              f"{', '.join(map(str, valid))}", file=sys.stderr)
        return 1
    changed = policy.set_production(current, to)
    # a rollback undoes the move: production's history loses the version rolled back to
    history = list(changed.history)
    if to in history:
        history.reverse()
        history.remove(to)
        history.reverse()
    policy.write_policy(model_dir, replace(changed, history=tuple(history)))
    print(f"{model}: production {production} -> {to} (servers switch at their next poll; "
          f"undo with: python -m modelrepo promote {model} {production})")
    return 0


def _model_dir(repository: Path, model: str) -> Path:
    model_dir = repository / modelrepo.check_model_name(model, publishing=False)
    if not model_dir.is_dir():
        raise RepositoryError(f"no model {model!r} in {storage.shown(repository)}")
    return model_dir


def _with_split(current: policy.Policy, part: str, split: policy.Split | None) -> policy.Policy:
    return replace(current, canary=split) if part == "canary" else replace(current, shadow=split)


def cmd_traffic(repository: Path, args: argparse.Namespace) -> int:
    """alias, unalias, promote, canary, shadow: one change to the policy, under the lock."""
    model_dir = _model_dir(repository, args.model)
    model = args.model
    said: list[str] = []

    def change(current: policy.Policy) -> policy.Policy:
        target = getattr(args, "version", None)
        number = None if target is None else policy.resolve(model_dir, model, current, target)
        if args.command == "alias":
            said.append(f"{model}: alias {args.alias} -> version {number}")
            if args.alias == policy.PRODUCTION:
                return policy.set_production(current, cast(int, number))
            return policy.set_alias(current, args.alias, cast(int, number))
        if args.command == "unalias":
            said.append(f"{model}: alias {args.alias} removed")
            return policy.remove_alias(current, args.alias)
        if args.command == "promote":
            said.append(f"{model}: production {current.production or 'latest'} -> {number}")
            return policy.set_production(current, cast(int, number))
        # canary or shadow: pin production first, so the split is of what serves now
        if number is None or args.percent == 0:
            said.append(f"{model}: {args.command} off")
            return _with_split(current, args.command, None)
        pinned = policy.pin_production(model_dir, current, exclude=number)
        if pinned.production is None or pinned.production == number:
            raise RepositoryError(f"{model} version {number} is what serves now; a "
                                  f"{args.command} needs another production version (see: "
                                  "list; set one with: alias <model> production <version>)")
        split = policy.Split(number, args.percent, getattr(args, "sticky_header", None))
        said.append(f"{model}: {args.command} version {number} at {args.percent:g}% "
                    f"(production: version {pinned.production})")
        return _with_split(pinned, args.command, split)

    try:
        policy.update_policy(model_dir, change)
    except policy.PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(said) + " (servers apply it at their next poll)")
    return 0


def cmd_restore(repository: Path, model: str, version: int) -> int:
    model_dir = repository / modelrepo.check_model_name(model)
    if not model_dir.is_dir():
        print(f"error: no model {model!r} in {storage.shown(repository)}", file=sys.stderr)
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
    # As a publish does: a model whose traffic has a production alias has it moved to the
    # restored version (without one, the newest version serves anyway).
    try:
        if policy.read_policy(model_dir).production is not None:
            policy.update_policy(model_dir,
                                 lambda p: policy.set_production(p, restored.version))
    except policy.PolicyError as exc:
        print(f"error: {model} version {restored.version} is restored but not served: {exc}; "
              f"then: python -m modelrepo promote {model} {restored.version}", file=sys.stderr)
        return 1
    print(f"{model} version {restored.version} is live (servers switch at their next poll)")
    return 0


def cmd_import(repository: Path, args: argparse.Namespace) -> int:
    """``import``: check, rewrite and publish an ONNX classifier (see modelrepo/importer.py)."""
    try:  # onnx is the import extra's, not the serving environment's: import it only here
        from modelrepo import importer
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from modelrepo.gate import GateFailed

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        modelrepo.check_model_name(args.name)
        imported = importer.import_model(
            args.model_file, labels=args.labels, features=args.features, sample=args.sample,
            label_column=args.label_column, scores=args.scores,
            probabilities_output=args.probabilities_output, max_bytes=args.max_bytes, say=say)
        for note in imported.notes:
            print(note, file=sys.stderr)
        published = importer.publish_import(imported, repository, args.name,
                                            max_regression=args.max_regression,
                                            force=args.force, dry_run=args.dry_run, say=say,
                                            promote=args.promote)
    except importer.ImportRefused as exc:
        where = "" if str(exc).startswith(args.model_file.name) else f"{args.model_file.name}: "
        print(f"error: {where}{exc}; nothing was published", file=sys.stderr)
        return 2
    except GateFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenVersion as exc:
        print(f"error: the metadata does not satisfy the contract: {exc.reason}; nothing was "
              "published", file=sys.stderr)
        return 2
    if published is None:
        print(f"Dry run: would publish {args.name} to {storage.shown(repository)}")
        return 0
    print(f"published {args.name} version {published.version} -> "
          f"{storage.shown(published.path)}")
    print(f"{args.name} version {published.version} is live (servers switch at their next poll)")
    return 0


IMPORT_DESCRIPTION = """\
Import an ONNX classifier trained anywhere (scikit-learn via skl2onnx, PyTorch via
torch.onnx.export, any exporter) as the next version of NAME, served like a trained one.

Accepted: one numeric input [batch, F] (FP32; FP64/integers are cast inside the graph) and
either one [batch, K] float output of logits or probabilities, or skl2onnx's classifier
outputs (label + probabilities; a ZipMap is unwrapped). The graph is rewritten to the served
signature: input "input" FP32 [-1, F]; outputs "probabilities" FP32 [-1, K] (a Softmax added
for logits) and "class" INT64 [-1] (ArgMax); external data is inlined, onnx.checker's full
check must pass and onnxruntime must load it. The wrapped and the original graph are compared
on the --sample rows (or 64 synthetic rows): parity within 1e-5 or nothing is published.

Logits or probabilities: --scores, else the --sample's values (rows in [0, 1] summing to 1),
else the graph (a Softmax or an ai.onnx.ml classifier makes them), confirmed on synthetic rows.
Class labels: --labels, else those in the graph (skl2onnx), else 0..K-1. Feature names:
--features, else the --sample's header, else x1..xF.

Refused, with nothing published: pickle/joblib files (never unpickled: export to ONNX),
anything not ONNX, several inputs, a non-numeric input, an input whose feature dimension is not
fixed, outputs it cannot interpret, an opset or operator domain onnxruntime cannot run, a file
over --max-bytes, --labels/--features counts that disagree with the model.

Needs the onnx package: pip install 'softserve[import]' (torch is never needed).
Exit status: 0 published, 1 promotion gate refused, 2 refused (or bad arguments)."""


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
        description="Inspect, roll back or restore the model repository, and steer its traffic "
        "(aliases, promote, canary, shadow, rollout). Needs no torch: runs in the serving "
        "environment too.")
    parser.add_argument("--artifacts", type=Path, metavar="DIR",
                        help=f"model repository (default: ${modelrepo.REPOSITORY_ENV}, "
                        f"else {modelrepo.DEFAULT_REPOSITORY})")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="versions with their metrics, and which is live")
    sub.add_parser(
        "init", help="create the repository if it is missing: the bucket of an s3:// one, "
        "the folder of a directory (does nothing when it exists)",
        description="Create the repository if it is missing: for s3://bucket/prefix the bucket "
        "(in AWS_REGION; endpoint and credentials from the AWS settings), for a directory the "
        "folder. Does nothing when it exists, so a deployment may run it before every start.")
    p_list.add_argument("model", nargs="?", help="one model (default: all)")
    p_back = sub.add_parser(
        "rollback", help="make the previous (or a named) version live: by moving production "
        "back when the model has that alias, else by retiring newer versions")
    p_back.add_argument("model")
    p_back.add_argument("--to", type=int, metavar="N", help="the version to go back to "
                        "(default: the newest valid version before the live one)")
    p_restore = sub.add_parser(
        "restore", help="bring a retired version back: copy it under the next version number "
        "(it becomes live; undoes a rollback)",
        description="Copy retired version N (retired-N) under the next version number, which "
        "becomes live (a production alias, if the model has one, moves to it). The retired "
        "copy stays, its number is never reused; metadata.json records restored_from. The "
        "files are verified (sha256) before anything is written.")
    p_restore.add_argument("model")
    p_restore.add_argument("version", type=int, metavar="N",
                           help="the retired version to restore (see: list)")
    p_import = sub.add_parser(
        "import", help="import an ONNX classifier (scikit-learn, PyTorch, ...) as the next "
        "version of a model (needs: pip install 'softserve[import]')",
        description=IMPORT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_import.add_argument("model_file", type=Path, metavar="MODEL.onnx",
                          help="the ONNX file (external data files next to it)")
    p_import.add_argument("--name", required=True, help="the model to publish a version of")
    p_import.add_argument("--labels", metavar="A,B,...",
                          help="class labels in the model's output order (K names)")
    p_import.add_argument("--features", metavar="F1,F2,...",
                          help="feature names in the model's input order (F names); with "
                          "--sample, the columns to read")
    p_import.add_argument("--sample", type=Path, metavar="DATA.csv",
                          help="CSV with a header: F feature columns and optionally a label "
                          "column; parity, accuracy, confusion matrix and the promotion gate "
                          "run on it")
    p_import.add_argument("--label-column", metavar="NAME",
                          help="the --sample's label column (default: the one column that "
                          "is not a feature)")
    p_import.add_argument("--scores", choices=("logits", "probabilities"),
                          help="what the scores output holds (default: detected)")
    p_import.add_argument("--probabilities-output", metavar="NAME",
                          help="the output holding the scores, when several could")
    p_import.add_argument("--max-bytes", type=int, default=modelrepo.MAX_MODEL_BYTES,
                          metavar="N", help="refuse larger files (default: %(default)s, "
                          "protobuf's limit)")
    p_import.add_argument("--max-regression", type=float, default=0.02, metavar="X",
                          help="promotion gate: refuse a version whose accuracy on the "
                          "labelled --sample is worse than the served one's by more than X "
                          "(default: %(default)s)")
    p_import.add_argument("--force", action="store_true",
                          help="publish even when the promotion gate refuses (recorded)")
    p_import.add_argument("--dry-run", action="store_true",
                          help="check and rewrite, publish nothing")
    p_import.add_argument("--no-promote", dest="promote", action="store_false",
                          help="publish without serving it: production stays where it is and "
                          "the new version gets the alias 'candidate' (see: promote, rollout)")
    traffic = _traffic_parsers(sub)
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
    for p in (p_list, p_back, p_restore, p_import, p_report, *traffic):
        p.add_argument("--artifacts", type=Path, metavar="DIR", default=argparse.SUPPRESS,
                       help="model repository (as above)")
    return parser


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 100")
    return value


VERSION_HELP = "a version number or an alias (see: list)"


def _split_parser(sub: Any, name: str, summary: str, description: str, percent: float,
                  percent_help: str) -> argparse.ArgumentParser:
    """A canary's or a shadow's command: MODEL [VERSION] --percent P | --off."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description + " --off (or --percent 0) ends it.")
    parser.add_argument("model")
    parser.add_argument("version", nargs="?", help=VERSION_HELP)
    parser.add_argument("--percent", type=_percent, default=percent, metavar="P",
                        help=f"{percent_help}, 0-100 (default {percent:g})")
    parser.add_argument("--off", action="store_true", help="end it")
    return parser


def _traffic_parsers(sub: Any) -> list[argparse.ArgumentParser]:
    """alias, unalias, promote, canary, shadow and rollout: the traffic policy's commands."""
    version_help = VERSION_HELP
    p_alias = sub.add_parser(
        "alias", help="point an alias (production, candidate, any name) at a version",
        description="Point an alias at a valid version. Unversioned requests go to the "
        "production alias when the model has one; any alias is addressable as "
        "/v2/models/<m>/versions/<alias>/infer and /v1/models/<m>/labels/<alias>:predict.")
    p_alias.add_argument("model")
    p_alias.add_argument("alias", type=policy.check_alias_arg)
    p_alias.add_argument("version", help=version_help)
    p_unalias = sub.add_parser("unalias", help="remove an alias (removing production sends "
                               "unversioned requests to the latest version again)")
    p_unalias.add_argument("model")
    p_unalias.add_argument("alias")
    p_promote = sub.add_parser(
        "promote", help="make a version production (undo: rollback)",
        description="Point production at a version; a canary or shadow of it ends. The "
        "previous production is remembered: `rollback` moves back to it.")
    p_promote.add_argument("model")
    p_promote.add_argument("version", help=version_help + ", e.g. candidate")
    p_canary = _split_parser(
        sub, "canary", "send a share of unversioned requests to a version",
        "Unversioned requests go to VERSION with probability PERCENT/100, the rest "
        "to production (pinned to what serves now if the model has no production alias). "
        "With --sticky-header, requests carrying that header choose by a hash of its value: "
        "one user, one version, in every worker.",
        10.0, "share of unversioned requests")
    p_canary.add_argument("--sticky-header", metavar="NAME", type=policy.check_header_arg,
                          help="a request header (e.g. X-User-Id) whose value picks the version")
    p_shadow = _split_parser(
        sub, "shadow", "replay production's requests on a version, after answering",
        "The client is answered by production only; VERSION then runs on the same "
        "rows and is compared (agreement, probability difference, latency, errors: "
        "softserve_shadow_* metrics).",
        100.0, "share of production answers replayed")
    p_rollout = rollout.add_parser(sub)
    return [p_alias, p_unalias, p_promote, p_canary, p_shadow, p_rollout]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    location = args.artifacts or modelrepo.default_repository()
    try:
        if args.command == "init":  # before a checkout: there may be no bucket to read yet
            created = storage.create_repository(location)
            print(f"{'created' if created else 'exists'}: {storage.shown_location(location)}")
            return 0
        # s3://bucket/prefix: a checkout whose every write goes through (modelrepo.storage)
        with storage.open_repository(location) as repository:
            return _main(args, repository)
    except RepositoryError as exc:  # the store unreachable, refusing, or a lost race
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace, repository: Path) -> int:
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
        if args.command == "import":
            return cmd_import(repository, args)
        if args.command in ("alias", "unalias", "promote", "canary", "shadow"):
            if getattr(args, "off", False) or (args.command in ("canary", "shadow")
                                               and args.version is None):
                if not getattr(args, "off", False):
                    print(f"error: name the version to {args.command}, or --off",
                          file=sys.stderr)
                    return 2
                args.version = None
            return cmd_traffic(repository, args)
        if args.command == "rollout":
            return rollout.main(repository, args)
        return cmd_rollback(repository, args.model, args.to)
    except (RepositoryError, policy.PolicyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
