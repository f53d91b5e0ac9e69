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
    return repository


def run_main(main: Callable[[], int], prog: str) -> NoReturn:
    """Exit with ``main()``'s status; a RuntimeError (a server, wrk or the training failed)
    is printed as ``prog: message`` and exits 1."""
    try:
        sys.exit(main())
    except RuntimeError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        sys.exit(1)
