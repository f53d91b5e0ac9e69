"""The load benchmark (``python -m bench``): ``scenarios`` (the requests and how their answers
are checked), ``measure`` (the servers, wrk, CPU and memory), ``report`` (targets, markdown
tables, the plot) and ``__main__`` (the command line). ``micro``, ``profile_requests`` and
``loop_cost`` (drift counting and the prediction log, per request) are tools of their own
(``python -m bench.micro``, ``python -m bench.profile_requests``, ``python -m bench.loop_cost``).

Run from the repository root: the servers and the training come from ``tests.support``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from tests.support.models import publish_linear_model, train_in_subprocess

# The wide model's name, shape and weights' seed (issue 14); bench.scenarios sends it requests.
WIDE_MODEL = "wide"
WIDE_FEATURES, WIDE_CLASSES = 64, 10
WIDE_SEED = 14
# The imported tree ensemble (issue 15): a scikit-learn RandomForestClassifier of FOREST_TREES
# trees fitted on the bundled iris rows, exported with skl2onnx and published by
# ``python -m modelrepo import``; bench.scenarios sends it the iris rows.
FOREST_MODEL = "forest"
FOREST_TREES = 100


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def repository_to_serve(given: Path | None, tmp: Path) -> Path:
    """``given``, else a repository in ``tmp/repository`` (never ./artifacts) with iris version
    1, trained, and then ``wide`` version 1 (F = 64, K = 10), a linear softmax classifier with
    seeded random weights. Iris is published first, so it is the model behind /predict.

    Raises RuntimeError if the training fails, what ``modelrepo.publish_version`` raises if
    the wide model's publication does.
    """
    if given is not None:
        return given
    repository = tmp / "repository"
    log(f"training iris version 1 into {repository}")
    t0 = time.monotonic()
    train_in_subprocess(repository)
    log(f"trained in {time.monotonic() - t0:.1f} s")
    publish_linear_model(repository, WIDE_MODEL, WIDE_FEATURES, WIDE_CLASSES, seed=WIDE_SEED)
    log(f"published {WIDE_MODEL} version 1 (F = {WIDE_FEATURES}, K = {WIDE_CLASSES})")
    publish_forest(repository, tmp)
    return repository


def publish_forest(repository: Path, tmp: Path) -> bool:
    """Import :data:`FOREST_MODEL`: a random forest of :data:`FOREST_TREES` trees (seed 0) on
    the iris rows, exported by skl2onnx, through ``python -m modelrepo import``'s code. False
    (and a log line) when scikit-learn or skl2onnx is not installed (the test extra has them).

    Raises what ``modelrepo.importer`` raises if the import is refused.
    """
    try:
        from sklearn.ensemble import RandomForestClassifier
        from skl2onnx import to_onnx
    except ImportError as exc:
        log(f"no {FOREST_MODEL} model ({exc.name} is not installed: pip install -e "
            "'.[test]'): leaving out the forest scenarios")
        return False
    import numpy as np

    from modelrepo import importer
    from training.data import iris

    data = iris()
    forest = RandomForestClassifier(n_estimators=FOREST_TREES, random_state=0, n_jobs=1)
    forest.fit(data.features, data.labels)
    path = tmp / f"{FOREST_MODEL}.onnx"
    path.write_bytes(to_onnx(forest, data.features[:1].astype(np.float32),
                             options={id(forest): {"zipmap": False}}).SerializeToString())
    imported = importer.import_model(path, labels=data.class_labels,
                                     features=data.feature_names)
    importer.publish_import(imported, repository, FOREST_MODEL, max_regression=0.0,
                            force=False)
    log(f"imported {FOREST_MODEL} version 1 ({FOREST_TREES} trees, {len(path.read_bytes()):,} "
        "byte ONNX file, iris's 4 features and 3 classes)")
    return True


def run_main(main: Callable[[], int], prog: str) -> NoReturn:
    """Exit with ``main()``'s status; a RuntimeError (a server, wrk or the training failed)
    is printed as ``prog: message`` and exits 1."""
    try:
        sys.exit(main())
    except RuntimeError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        sys.exit(1)
