"""``python -m modelrepo``: list a model's versions, roll it back, restore, import an ONNX
classifier — without torch (``import`` needs onnx: ``pip install 'softserve[import]'``).

The server picks up a rollback or a restore at its next poll: no restart. Retired versions are
renamed ``retired-<N>`` (Triton ignores such names too), never deleted, and their numbers never
reused: a restore copies a retired version under the next number instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import modelrepo
from modelrepo import BrokenVersion, RepositoryError


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
                                            force=args.force, dry_run=args.dry_run, say=say)
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
        print(f"Dry run: would publish {args.name} to {repository}")
        return 0
    print(f"published {args.name} version {published.version} -> {published.path}")
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
    for p in (p_list, p_back, p_restore, p_import):
        p.add_argument("--artifacts", type=Path, metavar="DIR", default=argparse.SUPPRESS,
                       help="model repository (as above)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    repository = args.artifacts or modelrepo.default_repository()
    try:
        if args.command == "list":
            return cmd_list(repository, args.model)
        if args.command == "restore":
            return cmd_restore(repository, args.model, args.version)
        if args.command == "import":
            return cmd_import(repository, args)
        return cmd_rollback(repository, args.model, args.to)
    except RepositoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
