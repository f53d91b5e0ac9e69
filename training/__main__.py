"""``python -m training``: fit, export, check and publish one model version."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from modelrepo import (DEFAULT_MODEL_ENV, REPOSITORY_ENV, BrokenVersion, RepositoryError,
                       check_model_name, default_repository, model_names, predict_model,
                       version_dirs)
from modelrepo.gate import latest_valid_version
from training.data import (CLASS_WEIGHTS, DEFAULT_BATCH_SIZE, FULL_BATCH_ROWS, IMPUTE_STRATEGIES,
                           MAX_CLASSES, MAX_FEATURES, MIN_ROWS_PER_CLASS, DataError, column_list,
                           delimiter_from_option, from_log, load)

EXIT_BAD_DATA = 2
EXIT_GATE = 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train a softmax classifier on tabular data (the tutorial's "
        "nn.Linear(F, K), or a ReLU MLP with --hidden; cross-entropy, SGD), export it to one "
        "self-contained ONNX file with imputation, standardization, softmax and argmax inside "
        "the graph, check torch/onnxruntime parity, and publish it as the next version in the "
        "model repository, only if every check passes.",
        epilog="Exit status: 0 published (or nothing to do), 1 a gate refused the candidate, "
        "2 bad arguments or a bad data file.",
    )
    p.add_argument("--data", default=None, metavar="iris|toy|PATH.csv",
                   help="dataset: the bundled Iris data (default; none with --from-log), the "
                   "tutorial's 8 toy rows, or "
                   "a CSV (or .csv.gz) with a header, numeric feature columns and one label "
                   f"column: F features (1 to {MAX_FEATURES}) and K distinct labels (2 to "
                   f"{MAX_CLASSES}, strings or integers) make nn.Linear(F, K)")
    p.add_argument("--from-log", type=Path, metavar="DIR",
                   help="train on what was served: the rows of the prediction log "
                   "(SOFTSERVE_PREDICTION_LOG) that have feedback labels, joined by request id, "
                   "after --data's rows if given; needs --model-name (the served model, whose "
                   "features and labels the new version keeps). metadata.json records how many "
                   "rows came from where (data.provenance)")
    p.add_argument("--label-column", metavar="NAME",
                   help="the CSV's label column, at any position (default: the last column)")
    columns = p.add_mutually_exclusive_group()
    columns.add_argument("--features", metavar="A,B,C",
                         help="the feature columns, in this order (default: every column but "
                         "the label); a name holding a comma is quoted: '\"a, b\",c'")
    columns.add_argument("--ignore", metavar="ID,DATE",
                         help="columns that are not features (an id, a date, free text)")
    p.add_argument("--impute", choices=IMPUTE_STRATEGIES,
                   help="fill missing values (empty, NA, NaN, null) with the training split's "
                   "mean or median per feature; the values are stored in the ONNX graph, so "
                   "the served model also accepts a missing feature (JSON null, NaN) and fills "
                   "it the same way. Default: a missing value is refused, naming its row and "
                   "column, and the served model refuses null/NaN")
    p.add_argument("--hidden", metavar="W1,W2",
                   help="hidden layer widths, e.g. 64,32: a ReLU multilayer perceptron for data "
                   "a linear model cannot separate (default: none, nn.Linear(F, K))")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help=f"rows per SGD step (default: full batch up to {FULL_BATCH_ROWS} "
                   f"training rows, mini-batches of {DEFAULT_BATCH_SIZE} above)")
    p.add_argument("--class-weight", choices=CLASS_WEIGHTS, default="none",
                   help="'balanced' weighs each class's loss by rows / (classes * its rows), "
                   "for imbalanced labels (default: none)")
    p.add_argument("--delimiter", metavar="CHAR",
                   help="the CSV's separator: ',', ';', tab, or any one character (default: "
                   "detected among comma, semicolon and tab)")
    p.add_argument("--model-name", metavar="NAME",
                   help="model name in the repository (default: iris, toy, or the CSV's stem)")
    p.add_argument("--epochs", type=int, default=1000, help="training epochs (default 1000)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    p.add_argument("--seed", type=int, default=1,
                   help="seed for the initial weights and the split (default 1)")
    p.add_argument("--val-fraction", type=float, metavar="F",
                   help="stratified validation fraction (default 0.2; 0 for toy). A split needs "
                   f"at least {MIN_ROWS_PER_CLASS} rows of every class and one held-out row of "
                   "each; smaller data is refused unless --no-validation")
    p.add_argument("--no-validation", action="store_true",
                   help="train on every row with no validation split (the same as "
                   "--val-fraction 0; the default for toy): no default accuracy gate")
    p.add_argument("--standardize", action=argparse.BooleanOptionalAction,
                   help="standardize features with the training split's mean/std, baked into "
                   "the exported graph (clients still send raw features). Default: on for "
                   "iris and CSVs (raw Iris features make SGD at lr 0.1 oscillate for ~200 "
                   "epochs); off for toy (the tutorial's exact run)")
    p.add_argument("--log-every", type=int, default=100, metavar="N",
                   help="print the cost every N epochs (default 100; 0 for quiet)")
    p.add_argument("--min-accuracy", type=float, metavar="A",
                   help="accuracy gate: validation accuracy must reach A (default 0.9 when there "
                   "is a validation split; without one, training accuracy, no default gate)")
    p.add_argument("--max-regression", type=float, default=0.02, metavar="D",
                   help="promotion gate: refuse a candidate whose accuracy on its validation "
                   "split is worse than the served version's by more than D (default 0.02), or "
                   "whose feature names or class labels differ from it (clients would break: "
                   "publish under a new --model-name)")
    p.add_argument("--force", action="store_true",
                   help="publish even when the promotion gate refuses (recorded in metadata)")
    p.add_argument("--artifacts", type=Path, metavar="DIR",
                   help=f"model repository (default: ${REPOSITORY_ENV}, else ./artifacts)")
    p.add_argument("--if-empty", action="store_true",
                   help="publish only if the repository has no model with a version yet (any "
                   "model, not only this one); otherwise exit 0 saying which models it has "
                   "(for a first start: make run)")
    p.add_argument("--dry-run", action="store_true",
                   help="train, export and check everything, publish nothing")
    p.add_argument("--no-promote", action="store_true",
                   help="publish without serving it: production stays on the version serving "
                   "now (pinned if the model had no production alias; a model's first version "
                   "becomes production) and the new version gets the alias candidate; serve it "
                   "later with python -m modelrepo promote|canary|shadow|rollout")
    return p


def default_model_name(data: str) -> str:
    if data in ("iris", "toy"):
        return data
    name = Path(data).name
    return Path(name[:-3] if name.endswith(".gz") else name).stem


def hidden_widths(text: str) -> tuple[int, ...]:
    """``--hidden 64,32`` as (64, 32). Raises ValueError."""
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        widths = ()
    if not widths or any(not 1 <= w <= 65536 for w in widths):
        raise ValueError(f"--hidden {text!r}: give layer widths separated by commas, e.g. 64,32")
    return widths


def metrics_summary(metrics: dict[str, Any], most: int = 20) -> list[str]:
    """The per-class table and the confusion matrix, as printed lines (up to ``most`` classes
    in full; beyond, macro F1 and the weakest classes)."""
    classes = metrics["per_class"]["classes"]
    cm = metrics["confusion_matrix"]
    lines = [f"Per-class metrics on the {cm['split']} split (macro F1 "
             f"{metrics['macro_f1']:.4f}):"]
    width = min(30, max(len("class"), *(len(c["label"]) for c in classes)))
    shown = classes if len(classes) <= most else sorted(classes, key=lambda c: c["f1"])[:10]
    if len(classes) > most:
        lines[0] += f" the 10 weakest of {len(classes)} classes"
    lines.append(f"  {'class':<{width}}  precision  recall      f1  support")
    lines += [f"  {c['label'][:width]:<{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  "
              f"{c['f1']:6.4f}  {c['support']:7d}" for c in shown]
    if len(classes) <= most:
        labels = [label[:12] for label in cm["labels"]]
        cell = max(5, *(len(label) for label in labels), len(str(max(map(max, cm["matrix"])))))
        lines.append(f"Confusion matrix ({cm['split']}; rows: true class, columns: predicted):")
        lines.append(f"  {'':<{width}}  " + " ".join(f"{label:>{cell}}" for label in labels))
        lines += [f"  {label[:width]:<{width}}  " + " ".join(f"{n:>{cell}}" for n in row)
                  for label, row in zip(cm["labels"], cm["matrix"])]
    else:
        lines.append("Confusion matrix: in metadata.json and the plot")
    return lines


def _short(names: list[str], most: int = 10) -> str:
    """A list for one line: the first ``most`` names, then how many more."""
    if len(names) <= most:
        return str(names)
    return str(names[:most])[:-1] + f", ... {len(names) - most} more]"


def models_with_versions(repository: Path) -> dict[str, list[int]]:
    """Every model of the repository that has a version directory (valid or not), with them."""
    found = {name: sorted(version_dirs(repository / name)) for name in model_names(repository)}
    return {name: numbers for name, numbers in found.items() if numbers}


def predict_line(repository: Path, published: str | None = None) -> str:
    """Which model ``POST /predict`` serves, and why; how to reach ``published`` otherwise."""
    configured = os.environ.get(DEFAULT_MODEL_ENV)
    served = predict_model(repository, configured)
    if served is None:
        return "POST /predict serves no model yet: the repository has none"
    why = (f"{DEFAULT_MODEL_ENV} as set for this command" if configured else
           f"the first model published; set {DEFAULT_MODEL_ENV} to choose")
    line = f"POST /predict serves model {served} ({why})"
    if published and published != served:
        line += f"; this one answers at POST /v1/models/{published}:predict"
    return line


def served_metadata(model_dir: Path) -> dict[str, Any] | None:
    """The metadata of the version a server serves now (production, else the highest valid),
    or None."""
    served = latest_valid_version(model_dir)
    return served[1] if served is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from modelrepo import storage

    location = args.artifacts or default_repository()
    if not storage.is_remote(location):
        return _main(parser, args)
    try:
        # s3://bucket/prefix: a checkout whose every write goes through (modelrepo.storage);
        # the version number is claimed in the bucket itself, so racing trainings never share one
        with storage.open_repository(location) as checkout:
            args.artifacts = checkout
            return _main(parser, args)
    except RepositoryError as exc:  # the store unreachable, refusing credentials
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from modelrepo import storage

    if args.from_log is not None and not args.model_name:
        parser.error("--from-log needs --model-name: the served model whose log to train on")
    if args.data is None and args.from_log is None:
        args.data = "iris"
    if args.epochs < 0 or args.lr <= 0 or args.log_every < 0:
        parser.error("--epochs and --log-every must be >= 0, --lr > 0")
    val_fraction = args.val_fraction
    if args.no_validation:
        if val_fraction:
            parser.error("--no-validation and --val-fraction above 0 contradict each other")
        val_fraction = 0.0
    if val_fraction is None:
        val_fraction = 0.0 if args.data == "toy" else 0.2
    if not 0 <= val_fraction < 1:
        parser.error("--val-fraction must be in [0, 1)")
    standardize = args.standardize if args.standardize is not None else args.data != "toy"
    delimiter = hidden = features = ignore = None
    try:
        if args.delimiter is not None:
            delimiter = delimiter_from_option(args.delimiter)
        if args.hidden is not None:
            hidden = hidden_widths(args.hidden)
        if args.features is not None:
            features = column_list(args.features, "--features")
        if args.ignore is not None:
            ignore = column_list(args.ignore, "--ignore")
    except ValueError as exc:
        parser.error(str(exc))
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    repository = args.artifacts or default_repository()
    model_name = args.model_name or default_model_name(args.data)
    try:
        check_model_name(model_name)
    except RepositoryError as exc:
        parser.error(f"{exc} (set the name with --model-name)")

    if args.if_empty:
        present = models_with_versions(repository)
        if present:
            listed = ", ".join(f"{name} (version{'s' if len(numbers) > 1 else ''} "
                               f"{', '.join(map(str, numbers))})"
                               for name, numbers in present.items())
            print(f"--if-empty: {storage.shown(repository)} already has {len(present)} model"
                  f"{'s' if len(present) > 1 else ''}: {listed}; nothing to do")
            print(predict_line(repository))
            return 0

    started = time.perf_counter()
    # onnxruntime (parity and promotion checks) sends usage telemetry unless told not to.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    say = lambda line: print(line, flush=True)  # noqa: E731

    stages: dict[str, float] = {}
    clock = [time.perf_counter()]

    def stage(name: str) -> None:
        """Close the stage that just ran, under ``name``."""
        now = time.perf_counter()
        stages[name] = stages.get(name, 0.0) + now - clock[0]
        clock[0] = now

    def stage_times() -> str:
        return "Stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())

    # Heavy imports only once the arguments are known to be good: --help stays instant.
    try:
        if args.from_log is not None:
            original = load(args.data, args.label_column, delimiter, features, ignore,
                            args.impute is not None) if args.data else None
            dataset = from_log(args.from_log, model_name, served_metadata(repository / model_name),
                               original, args.impute is not None)
        else:
            dataset = load(args.data, args.label_column, delimiter, features, ignore,
                           args.impute is not None)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA
    stage("read")
    n_features, n_classes = dataset.features.shape[1], len(dataset.class_labels)
    say(f"Data: {dataset.source}: {dataset.rows} rows, {n_features} features "
        f"{_short(dataset.feature_names)}, {n_classes} classes {_short(dataset.class_labels)}"
        + (f", {dataset.missing} missing values (--impute {args.impute})"
           if dataset.missing else "")
        + (f" (read by {dataset.reader})" if dataset.reader != "builtin" else ""))

    from training.train import TrainConfig, fit, validation_problem

    if val_fraction > 0:
        problem = validation_problem(dataset.labels, dataset.class_labels, val_fraction,
                                     args.seed)
        if problem:
            print(f"error: {dataset.source}: {problem}; give --no-validation to train without "
                  "one", file=sys.stderr)
            return EXIT_BAD_DATA

    from training.export import ExportError, ParityError, check_parity, export_onnx, onnx_opset
    from training.plots import loss_curve_png, loss_curve_title
    from training.publish import Candidate, GateFailed, check_accuracy, check_promotion, publish

    config = TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed,
                         val_fraction=val_fraction, standardize=standardize,
                         log_every=args.log_every, hidden=hidden or (),
                         batch_size=args.batch_size, class_weight=args.class_weight,
                         impute=args.impute)
    stage("setup")
    try:
        result = fit(config, dataset, progress=say)
    except DataError as exc:
        print(f"error: {dataset.source}: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA
    stage("train")
    m = result.metrics
    say(f"Model {result.model.classifier.describe()}, "
        + ("full batch" if result.batch_size >= len(result.split.train)
           else f"mini-batches of {result.batch_size} rows")
        + f"; training accuracy {m['train']['accuracy']:.4f}"
        + (f", validation accuracy {m['validation']['accuracy']:.4f} on "
           f"{m['validation']['rows']} rows" if m["validation"] else " (no validation split)"))
    for line in metrics_summary(m):
        say(line)
    try:
        say("Exporting to ONNX (torch.onnx.export, dynamo) ...")
        model_bytes = export_onnx(result.model)
        stage("export")
        say("Checking torch/onnxruntime parity ...")
        parity = check_parity(result.model, model_bytes, dataset.features, seed=args.seed)
        stage("parity")
    except (ExportError, ParityError) as exc:
        print(f"error: export check failed: {exc}; nothing was published", file=sys.stderr)
        return EXIT_GATE
    candidate = Candidate(model_bytes, dataset, config, result, parity, onnx_opset(model_bytes))
    try:
        accuracy = check_accuracy(candidate, args.min_accuracy)
        promotion = check_promotion(candidate, repository / model_name, args.max_regression,
                                    args.force)
    except GateFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_GATE
    stage("gates")
    if promotion:
        current = promotion["current_accuracy"]
        say(f"Promotion gate vs version {promotion['against_version']} on {promotion['rows']}: "
            f"candidate {promotion['candidate_accuracy']:.4f}, current "
            + (f"{current:.4f}" if current is not None else "n/a")
            + (" — FORCED past: " + "; ".join(promotion["problems"]) if promotion["forced"]
               else " — passed"))
    figures = (f"parity: max |p_torch - p_onnx| {parity['max_abs_diff']:.3g} "
               f"(data {parity['rows']['data']['max_abs_diff']:.3g}, "
               + (f"±1e3 rows {parity['rows']['random_pm1e3']['max_abs_diff']:.3g}, "
                  if "random_pm1e3" in parity["rows"] else "")
               + "rows over the data's range "
               f"{parity['rows']['random_data_range']['max_abs_diff']:.3g}"
               + (f", rows with missing values "
                  f"{parity['rows']['random_missing']['max_abs_diff']:.3g}"
                  if "random_missing" in parity["rows"] else "") + "), "
               f"near ties {parity['near_ties']}, batch sizes {parity['batch_sizes']}")
    if args.dry_run:
        say(f"Dry run: would publish {model_name} to {storage.shown(repository)}; "
            f"accuracy {accuracy:.4f}; "
            f"{figures}")
        say(stage_times())
        return 0
    png = loss_curve_png(result.history, loss_curve_title(
        model_name, dataset.source, len(result.split.train), len(result.split.validation),
        config.epochs, config.lr, config.standardize), m["confusion_matrix"])
    stage("plot")
    try:
        published = publish(candidate, repository, model_name, png,
                            extra={"promotion": promotion}, promote=not args.no_promote)
    except RepositoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA
    except BrokenVersion as exc:  # the repository's contract refused the metadata
        say(stage_times())
        print(f"error: the model repository refused the version: {exc.reason}; nothing was "
              "published", file=sys.stderr)
        return EXIT_BAD_DATA
    stage("publish")
    say(f"Published {storage.shown(published.path)} (model {published.model}, "
        f"version {published.version}) in {time.perf_counter() - started:.1f} s")
    say("Validation accuracy: " + (f"{m['validation']['accuracy']:.4f}" if m["validation"]
                                    else "n/a (no split); training accuracy "
                                    f"{m['train']['accuracy']:.4f}"))
    say(figures.capitalize())
    say(stage_times())
    say(predict_line(repository, published.model))
    if line := promotion_line(repository, published):
        say(line)
    return 0


def promotion_line(repository: Path, published: Any) -> str | None:
    """Whether the new version serves, when the model has a production alias (its traffic
    policy, issue 16); None without one: the latest version serves, as ever."""
    from modelrepo import policy

    try:
        production = policy.read_policy(repository / published.model).production
    except policy.PolicyError:
        production = None
    if production is None:
        return None
    if production == published.version:
        return f"Serving: version {published.version} is production"
    return (f"Not promoted: production stays version {production}; version {published.version} "
            f"is alias candidate (/v2/models/{published.model}/versions/candidate/infer). "
            f"Serve it with: python -m modelrepo promote {published.model} candidate (or canary, "
            "shadow, rollout)")


if __name__ == "__main__":
    sys.exit(main())
