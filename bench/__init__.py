"""The load benchmark (``python -m bench``): ``scenarios`` (the requests and how their answers
are checked), ``measure`` (the servers, wrk, CPU and memory), ``report`` (targets, markdown
tables, the plot) and ``__main__`` (the command line). ``micro`` and ``profile_requests`` are
tools of their own (``python -m bench.micro``, ``python -m bench.profile_requests``).

Run from the repository root: the servers and the training come from ``tests.support``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from tests.support.models import train_in_subprocess


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def repository_to_serve(given: Path | None, tmp: Path) -> Path:
    """``given``, else iris version 1 trained into ``tmp/repository`` (never ./artifacts).

    Raises RuntimeError if the training fails.
    """
    if given is not None:
        return given
    repository = tmp / "repository"
    log(f"training iris version 1 into {repository}")
    t0 = time.monotonic()
    train_in_subprocess(repository)
    log(f"trained in {time.monotonic() - t0:.1f} s")
    return repository


def run_main(main: Callable[[], int], prog: str) -> NoReturn:
    """Exit with ``main()``'s status; a RuntimeError (a server, wrk or the training failed)
    is printed as ``prog: message`` and exits 1."""
    try:
        sys.exit(main())
    except RuntimeError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        sys.exit(1)
