"""What the page for people costs to render (issue 19: 20 models x 10 versions under 50 ms).

Publishes ``--models`` linear models of ``--versions`` versions each into a temporary repository
(never ``artifacts/``), with metadata as full as training writes (a 1000-epoch loss curve,
metrics, a confusion matrix, per-class figures, parity, the training statistics drift is
counted against) and shapes from 4 x 2 to 64 x 10, model-02 with a traffic policy (production
one version behind the latest, the latest on a 10% canary: its page shows both drift tables); starts
the real gunicorn (``serving/gunicorn.conf.py``, 2 workers, metrics on, every version loaded:
``SOFTSERVE_KEEP_VERSIONS`` = ``--versions``) on a free 127.0.0.1 port; sends inference
requests to every version so that the live figures have something to read; then asks each
page ``--repeat`` times over one kept-alive connection and prints, per page, the server's own
figure (``Server-Timing: render``, from the handler's start to the finished HTML: view-model,
telemetry read-back and template) and the client's wall time, as median, p95 and max. The
first request of each page (templates compiled, each version's charts built once) is shown
apart.

    .venv/bin/python -m bench.ui                  # 20 x 10, ~1 min
    .venv/bin/python -m bench.ui --models 5 --versions 3 --repeat 20

A benchmark, not a test: ``make test`` never runs it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
TARGET_MS = 50.0
SHAPES = [(4, 3), (13, 2), (64, 10), (4, 2), (30, 5)]


def rich_metadata(features: int, classes: int, seed: int,
                  statistics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metadata with everything training records, sized like a real run's."""
    import modelrepo
    from tests.support.models import class_labels, feature_names

    inputs, outputs = modelrepo.signature(features, classes)
    labels = class_labels(classes)
    epochs = 1000
    curve = [{"epoch": e, "loss": 1.2 / (1 + e / 30) + 0.001 * seed,
              "validation_loss": 1.25 / (1 + e / 30), "validation_accuracy": min(1, e / 400)}
             for e in range(epochs + 1)]
    matrix = [[20 if i == j else (i + j + seed) % 3 for j in range(classes)]
              for i in range(classes)]
    return {
        "name": None, "version": None,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "feature_names": feature_names(features), "class_labels": labels,
        "inputs": inputs, "outputs": outputs, "missing_values": "refuse",
        "model": {"opset": 17, "exporter": "onnx.helper (bench/ui.py)"},
        "libraries": {"python": sys.version.split()[0]},
        "data": {"source": "bench", "rows": 1500, "sha256": "0" * 64, "train_rows": 1200,
                 "validation_rows": 300, **({"statistics": statistics} if statistics else {})},
        "training": {"epochs": epochs, "lr": 0.1, "seed": seed, "standardize": True,
                     "standardization": {"mean": [0.5] * features, "std": [1.0] * features}},
        "loss_curve": curve,
        "metrics": {"train": {"rows": 1200, "accuracy": 0.95, "loss": 0.14},
                    "validation": {"rows": 300, "accuracy": 0.93 + seed / 1000, "loss": 0.2},
                    "confusion_matrix": {"split": "validation", "labels": labels,
                                         "matrix": matrix},
                    "per_class": {"split": "validation", "classes": [
                        {"label": label, "precision": 0.9, "recall": 0.9, "f1": 0.9,
                         "support": 20} for label in labels]}},
        "parity": {"batch_sizes": [1, 3, 7], "max_abs_diff": 1e-6, "near_ties": 0,
                   "passed": True},
    }


def publish(repository: Path, models: int, versions: int) -> None:
    import numpy as np

    import modelrepo
    from modelrepo import policy
    from modelrepo.drift import feature_statistics
    from tests.support.models import feature_names, linear_model_bytes

    for m in range(models):
        features, classes = SHAPES[m % len(SHAPES)]
        graph = linear_model_bytes(features, classes, seed=m)
        statistics = feature_statistics(np.random.default_rng(m).normal(0.5, 1, (1200, features)),
                                        feature_names(features))
        for v in range(versions):
            modelrepo.publish_version(repository, f"model-{m:02d}", graph,
                                      rich_metadata(features, classes, v, statistics))
        if m == 2:
            with modelrepo.model_lock(repository / "model-02"):
                policy.write_policy(repository / "model-02", policy.Policy(
                    aliases={policy.PRODUCTION: versions - 1, policy.CANDIDATE: versions},
                    canary=policy.Split(versions, 10.0)))
        print(f"\rpublished {m + 1}/{models} models x {versions} versions", end="",
              file=sys.stderr, flush=True)
    print(file=sys.stderr)


def get(connection: http.client.HTTPConnection, path: str) -> tuple[float, float]:
    """(client wall ms, server render ms) of one GET. Raises RuntimeError on a non-200."""
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    wall = (time.perf_counter() - started) * 1e3
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
    timing = response.getheader("Server-Timing") or ""
    render = float(timing.partition("dur=")[2] or "nan")
    return wall, render


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):6.2f}  p95 {p95:6.2f}  max {ordered[-1]:6.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=20, help="models (default 20)")
    parser.add_argument("--versions", type=int, default=10,
                        help="versions per model, all loaded (default 10)")
    parser.add_argument("--repeat", type=int, default=50,
                        help="requests per page after the first (default 50)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.models < 1 or args.versions < 2 or args.repeat < 1:
        parser.error("--models >= 1, --versions >= 2 and --repeat >= 1, please")
    sys.path.insert(0, str(ROOT))
    from tests.support.server import start_server

    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        repository = Path(tmp) / "repository"
        publish(repository, args.models, args.versions)
        print("starting gunicorn (2 workers, every version loaded) ...", file=sys.stderr)
        server = start_server(repository, Path(tmp), workers=2, ready_path="/v2/health/ready",
                              timeout=300, settle=True, poll_seconds=None,
                              env={"SOFTSERVE_KEEP_VERSIONS": str(args.versions),
                                   "SOFTSERVE_ACCESS_LOG": "0"})
        with server:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            for m in range(args.models):  # live figures for every version
                features, _ = SHAPES[m % len(SHAPES)]
                # 8 rows: drift counts something in every bin family
                body = json.dumps({"inputs": [{"name": "input", "shape": [8, features],
                                               "datatype": "FP32",
                                               "data": [0.5 + (i % 7) / 3 - 1
                                                        for i in range(8 * features)]}]})
                for v in range(1, args.versions + 1):
                    connection.request("POST", f"/v2/models/model-{m:02d}/versions/{v}/infer",
                                       body=body)
                    connection.getresponse().read()
            time.sleep(1.5)  # the workers flush their figures every second
            last = args.versions
            pages = {"/ui": "every model",
                     "/ui/models/model-02": f"one model (64 x 10, {args.versions} versions)",
                     f"/ui/models/model-02/compare?a={last - 1}&b={last}": "compare"}
            results: dict[str, Any] = {}
            print(f"\n{args.models} models x {args.versions} versions, 2 workers; ms over "
                  f"{args.repeat} requests after the first (the target: render < "
                  f"{TARGET_MS:g} ms)\n")
            for path, what in pages.items():
                # each worker builds its caches on its own first request: warm both
                first = [get(connection, path) for _ in range(4)]
                walls, renders = zip(*(get(connection, path) for _ in range(args.repeat)))
                results[path] = {"first_render_ms": first[0][1], "render_ms": list(renders),
                                 "wall_ms": list(walls)}
                print(f"{what:<32} {path}")
                print(f"  first request   render {first[0][1]:6.2f}  wall {first[0][0]:6.2f}")
                print(f"  server render   {summary(list(renders))}")
                print(f"  client wall     {summary(list(walls))}")
            connection.close()
        worst = max(statistics.median(r["render_ms"]) for r in results.values())
        verdict = "within" if worst < TARGET_MS else "OVER"
        print(f"\nslowest page's median render: {worst:.2f} ms, {verdict} the "
              f"{TARGET_MS:g} ms target")
        if args.json:
            args.json.write_text(json.dumps({"models": args.models, "versions": args.versions,
                                             "pages": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
