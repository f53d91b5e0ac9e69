"""``python -m training``: fit, export, check and publish one model version."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from modelrepo import (REPOSITORY_ENV, RepositoryError, check_model_name, default_repository,
                       version_dirs)

EXIT_BAD_DATA = 2
EXIT_GATE = 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the tutorial softmax classifier (nn.Linear(4, 3), cross-entropy, "
        "full-batch SGD), export it to one self-contained ONNX file with softmax and argmax "
        "inside the graph, check torch/onnxruntime parity, and publish it as the next version "
        "in the model repository, only if every check passes.",
        epilog="Exit status: 0 published (or nothing to do), 1 a gate refused the candidate, "
        "2 bad arguments or a bad data file.",
    )
    p.add_argument("--data", default="iris", metavar="iris|toy|PATH.csv",
                   help="dataset: the bundled Iris data (default), the tutorial's 8 toy rows, or "
                   "a CSV with a header, 4 numeric feature columns and 1 label column")
    p.add_argument("--label-column", metavar="NAME",
                   help="the CSV's label column (default: the last column)")
    p.add_argument("--model-name", metavar="NAME",
                   help="model name in the repository (default: iris, toy, or the CSV's stem)")
    p.add_argument("--epochs", type=int, default=1000, help="training epochs (default 1000)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    p.add_argument("--seed", type=int, default=1,
                   help="seed for the initial weights and the split (default 1)")
    p.add_argument("--val-fraction", type=float, metavar="F",
                   help="stratified validation fraction (default 0.2; 0 for toy)")
    p.add_argument("--standardize", action="store_true",
                   help="standardize features with the training split's mean/std, baked into "
                   "the exported graph (clients still send raw features)")
    p.add_argument("--log-every", type=int, default=100, metavar="N",
                   help="print the cost every N epochs (default 100; 0 for quiet)")
    p.add_argument("--min-accuracy", type=float, metavar="A",
                   help="accuracy gate: validation accuracy must reach A (default 0.9 when there "
                   "is a validation split; without one, training accuracy, no default gate)")
    p.add_argument("--max-regression", type=float, default=0.02, metavar="D",
                   help="promotion gate: refuse a candidate whose accuracy on its validation "
                   "split is worse than the served version's by more than D (default 0.02), or "
                   "whose feature names or class labels differ from it")
    p.add_argument("--force", action="store_true",
                   help="publish even when the promotion gate refuses (recorded in metadata)")
    p.add_argument("--artifacts", type=Path, metavar="DIR",
                   help=f"model repository (default: ${REPOSITORY_ENV}, else ./artifacts)")
    p.add_argument("--if-empty", action="store_true",
                   help="publish only if the model has no version yet; otherwise exit 0 doing "
                   "nothing (for a first start)")
    p.add_argument("--dry-run", action="store_true",
                   help="train, export and check everything, publish nothing")
    return p


def default_model_name(data: str) -> str:
    if data in ("iris", "toy"):
        return data
    return Path(data).stem


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.epochs < 0 or args.lr <= 0 or args.log_every < 0:
        parser.error("--epochs and --log-every must be >= 0, --lr > 0")
    val_fraction = args.val_fraction
    if val_fraction is None:
        val_fraction = 0.0 if args.data == "toy" else 0.2
    if not 0 <= val_fraction < 1:
        parser.error("--val-fraction must be in [0, 1)")
    repository = args.artifacts or default_repository()
    model_name = args.model_name or default_model_name(args.data)
    try:
        check_model_name(model_name)
    except RepositoryError as exc:
        parser.error(f"{exc} (choose one with --model-name)")

    if args.if_empty and version_dirs(repository / model_name):
        print(f"{repository / model_name} already has a version; --if-empty: nothing to do")
        return 0

    started = time.perf_counter()
    # onnxruntime (parity and promotion checks) sends usage telemetry unless told not to.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    say = lambda line: print(line, flush=True)  # noqa: E731

    # Heavy imports only once the arguments are known to be good: --help stays instant.
    from training.data import DataError, load

    try:
        dataset = load(args.data, args.label_column)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA
    say(f"Data: {dataset.source}: {dataset.rows} rows, features {dataset.feature_names}, "
        f"classes {dataset.class_labels}")

    from training.export import ExportError, ParityError, check_parity, export_onnx, onnx_opset
    from training.plots import loss_curve_png
    from training.publish import Candidate, GateFailed, check_accuracy, check_promotion, publish
    from training.train import TrainConfig, fit

    config = TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed,
                         val_fraction=val_fraction, standardize=args.standardize,
                         log_every=args.log_every)
    result = fit(config, dataset, progress=say)
    m = result.metrics
    say(f"Training accuracy {m['train']['accuracy']:.4f}"
        + (f", validation accuracy {m['validation']['accuracy']:.4f} on "
           f"{m['validation']['rows']} rows" if m["validation"] else " (no validation split)"))
    try:
        say("Exporting to ONNX (torch.onnx.export, dynamo) ...")
        model_bytes = export_onnx(result.model)
        say("Checking torch/onnxruntime parity ...")
        parity = check_parity(result.model, model_bytes, dataset.features, seed=args.seed)
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
    if promotion:
        current = promotion["current_accuracy"]
        say(f"Promotion gate vs version {promotion['against_version']} on {promotion['rows']}: "
            f"candidate {promotion['candidate_accuracy']:.4f}, current "
            + (f"{current:.4f}" if current is not None else "n/a")
            + (" — FORCED past: " + "; ".join(promotion["problems"]) if promotion["forced"]
               else " — passed"))
    figures = (f"parity: max |p_torch - p_onnx| {parity['max_abs_diff']:.3g} "
               f"(data {parity['rows']['data']['max_abs_diff']:.3g}, "
               f"±1e3 rows {parity['rows']['random_pm1e3']['max_abs_diff']:.3g}), "
               f"near ties {parity['near_ties']}, batch sizes {parity['batch_sizes']}")
    if args.dry_run:
        say(f"Dry run: would publish {model_name} to {repository}; accuracy {accuracy:.4f}; "
            f"{figures}")
        return 0
    png = loss_curve_png(result.history, f"{model_name}: trained on {dataset.source} "
                         f"({dataset.rows} rows, {config.epochs} epochs, lr {config.lr:g})")
    try:
        published = publish(candidate, repository, model_name, png,
                            extra={"promotion": promotion})
    except RepositoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_DATA
    say(f"Published {published.path} (model {published.model}, version {published.version}) "
        f"in {time.perf_counter() - started:.1f} s")
    say("Validation accuracy: " + (f"{m['validation']['accuracy']:.4f}" if m["validation"]
                                    else "n/a (no split); training accuracy "
                                    f"{m['train']['accuracy']:.4f}"))
    say(figures.capitalize())
    return 0


if __name__ == "__main__":
    sys.exit(main())
