"""How cost grows (issue 20): one module per axis, each measured by ``python -m bench`` after its
scenarios (``--axes``), each runnable alone (``python -m bench.axes.<name> --help``).

An axis module defines:

- ``TITLE``: a short title ("Many models", ...);
- ``PANELS``: how many plot panels it draws in ``docs/benchmarks.png`` (0 to 2);
- ``measure(ctx: Context) -> dict``: start its own servers (in ``ctx.tmp``, never
  ``artifacts/``), measure, stop them; returns JSON-able figures (``--json`` keeps them, so
  ``--render`` writes the report again without measuring). Raises RuntimeError if a server,
  wrk or a check failed;
- ``targets(data) -> list[bench.report.Target]``: the issue's targets, met or not;
- ``markdown(data) -> list[str]``: its section's lines below its ``## TITLE`` heading (what was
  measured and how, the tables, what a reader should take from them);
- ``plot(axes: list[matplotlib Axes], data) -> None``: draw its ``PANELS`` panels.

``--quick`` (``Context.quick``) shortens every measurement but keeps every point of every axis,
so a quick run says the same things, noisier.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import log

# In the order they run and appear in the report and the figure.
AXES = ("models", "width", "batch", "connections")


@dataclass
class Context:
    """What an axis needs from the run that measures it."""

    tmp: Path  # a fresh directory of its own, removed after the run
    quick: bool  # shorter measurements (every point still measured)
    seconds: float  # a wrk run's measured seconds (shorter with quick)
    warmup: float  # a wrk warm-up's seconds before each measured run, 0 for none
    nice: int  # scheduling priority of the servers and wrk (below 0: root only)
    wrk: str  # the wrk executable
    workers: int  # gunicorn workers of the servers it starts (SOFTSERVE_WORKERS)
    quiet_wait: float  # before a run, wait up to this long for other programs to go quiet
    log: Callable[[str], None] = log


def module(name: str) -> ModuleType:
    """The axis module ``bench.axes.<name>``."""
    return importlib.import_module(f"bench.axes.{name}")


def select(text: str) -> list[str]:
    """``all``, ``none`` or a comma-separated list of axes, in :data:`AXES` order. Raises
    ValueError naming the unknown ones."""
    if text == "all":
        return list(AXES)
    if text == "none":
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in AXES]
    if unknown:
        raise ValueError(f"unknown axis {', '.join(unknown)}: choose from all, none, "
                         + ", ".join(AXES))
    return [n for n in AXES if n in names]


def context(args: argparse.Namespace, tmp: Path) -> Context:
    """The axes' context from ``python -m bench``'s options (or an axis's own)."""
    seconds = getattr(args, "axis_seconds", None) or args.seconds
    return Context(tmp=tmp, quick=args.quick, seconds=seconds, warmup=args.warmup,
                   nice=args.nice, wrk=args.wrk, workers=args.workers,
                   quiet_wait=args.quiet_wait)


def add_options(parser: argparse.ArgumentParser, seconds: float = 5) -> None:
    """The options every axis's own command line shares with ``python -m bench``."""
    parser.add_argument("--quick", action="store_true",
                        help="shorter measurements, every point still measured")
    parser.add_argument("--seconds", type=float, default=seconds,
                        help="measured seconds of each wrk run (--quick: 2)")
    parser.add_argument("--warmup", type=float, default=1,
                        help="unmeasured wrk run before each measured one, 0 for none")
    parser.add_argument("--nice", type=int, default=0,
                        help="priority of the servers and wrk (below 0: root only)")
    parser.add_argument("--wrk", default="wrk", help="the wrk executable")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--quiet-wait", type=float, default=10,
                        help="before each run, wait up to this long for other programs to go "
                             "quiet; 0: don't")


def run_alone(name: str, argv: Sequence[str] | None, description: str) -> int:
    """An axis's own command line: measure it into a temporary directory and print its
    targets and markdown (``--json FILE`` keeps the figures)."""
    import json
    import tempfile

    from bench.report import targets_table

    parser = argparse.ArgumentParser(prog=f"python -m bench.axes.{name}",
                                     description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_options(parser)
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = min(args.seconds, 2), min(args.warmup, 0.5)
    axis = module(name)
    with tempfile.TemporaryDirectory(prefix=f"softserve-bench-{name}-") as tmp:
        data: dict[str, Any] = axis.measure(context(args, Path(tmp)))
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    print("\n".join(axis.markdown(data)))
    print()
    print(targets_table(axis.targets(data)))
    return 0
