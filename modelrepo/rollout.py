"""``python -m modelrepo rollout``: a progressive canary that promotes or aborts on its own.

Each step sets the canary's share in the model's traffic policy (servers apply it at their next
poll), waits the interval, then reads the running server's ``/metrics`` over HTTP and compares
the candidate with production over that step (counter deltas):

- error rate: the candidate's failed inference requests (any status >= 400), plus its failed
  shadow runs, over all of them (``softserve_model_requests_total``,
  ``softserve_shadow_requests_total``);
- agreement: rows where the candidate, run as production's shadow, chose production's class
  (``softserve_shadow_rows_total``, ``softserve_shadow_agreed_rows_total``; with
  ``--min-agreement`` the rollout runs the candidate as a shadow too);
- p99 ratio: the candidate's p99 request latency over production's
  (``softserve_model_request_duration_seconds``, interpolated within its buckets).

At 100 it promotes (production -> candidate); at the first breach it aborts: the canary and
shadow end, production stays, and the reason is printed and recorded in the policy's
``rollout``. Exit status: 0 promoted, 1 aborted, 2 could not start. Standard library only.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import modelrepo
from modelrepo import RepositoryError, policy

Sample = tuple[str, frozenset[tuple[str, str]]]
Snapshot = dict[Sample, float]

_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> Snapshot:
    """Prometheus text format -> {(sample name, labels): value}."""
    out: Snapshot = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            out[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
        except ValueError:
            continue
    return out


def fetch_metrics(url: str, timeout: float = 10.0) -> Snapshot:
    """The server's /metrics. Raises OSError (URLError) when it cannot be read."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as response:
        return parse_metrics(response.read().decode("utf-8", "replace"))


def total(snapshot: Snapshot, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in snapshot.items() if n == name and wanted <= ls)


def delta(after: Snapshot, before: Snapshot, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def quantile(after: Snapshot, before: Snapshot, name: str, q: float,
             **labels: str) -> tuple[float, int]:
    """(the ``q`` quantile, the observation count) of histogram ``name`` over the interval
    between two snapshots, interpolated within its buckets; (nan, 0) with no observation."""
    bounds: dict[float, float] = {}
    for (n, ls), _ in after.items():
        if n != f"{name}_bucket" or not set(labels.items()) <= ls:
            continue
        le = dict(ls)["le"]
        bound = math.inf if le == "+Inf" else float(le)
        bounds[bound] = delta(after, before, f"{name}_bucket", le=le, **labels)
    cumulative = sorted(bounds.items())
    count = int(cumulative[-1][1]) if cumulative else 0
    if count <= 0:
        return math.nan, 0
    target = q * count
    lower, below = 0.0, 0.0
    for bound, seen in cumulative:
        if seen >= target:
            if math.isinf(bound):
                return lower, count
            share = (target - below) / (seen - below) if seen > below else 1.0
            return lower + (bound - lower) * share, count
        lower, below = bound, seen
    return lower, count


@dataclass(frozen=True)
class Limits:
    max_error_rate: float | None
    min_agreement: float | None
    max_p99_ratio: float | None
    min_requests: int


def judge(model: str, candidate: int, production: int, before: Snapshot, after: Snapshot,
          limits: Limits) -> tuple[str, str | None]:
    """(what the step measured, the breach or None)."""
    cand, prod = str(candidate), str(production)
    requests = delta(after, before, "softserve_model_requests_total", model=model, version=cand)
    failed = delta(after, before, "softserve_model_requests_total", model=model, version=cand,
                   outcome="fail")
    shadow = {"model": model, "primary": prod, "shadow": cand}
    shadow_runs = delta(after, before, "softserve_shadow_requests_total", **shadow)
    shadow_failed = delta(after, before, "softserve_shadow_requests_total", outcome="fail",
                          **shadow)
    rows = delta(after, before, "softserve_shadow_rows_total", **shadow)
    agreed = delta(after, before, "softserve_shadow_agreed_rows_total", **shadow)
    latency = "softserve_model_request_duration_seconds"
    p99_cand, _ = quantile(after, before, latency, 0.99, model=model, version=cand)
    p99_prod, _ = quantile(after, before, latency, 0.99, model=model, version=prod)
    runs = requests + shadow_runs
    error_rate = (failed + shadow_failed) / runs if runs else math.nan
    agreement = agreed / rows if rows else math.nan
    ratio = p99_cand / p99_prod if p99_prod and p99_prod > 0 else math.nan
    text = (f"candidate v{cand}: {requests:.0f} requests, {shadow_runs:.0f} shadow runs, "
            f"error rate {error_rate:.2%}, p99 {p99_cand * 1e3:.2f} ms vs production "
            f"v{prod} {p99_prod * 1e3:.2f} ms (ratio {ratio:.2f}), agreement {agreement:.2%} "
            f"over {rows:.0f} rows")
    if runs < limits.min_requests:
        return text, (f"only {runs:.0f} requests reached version {cand} in the step (at least "
                      f"{limits.min_requests} needed to judge it: is there traffic, is the "
                      "server at --url polling this repository?)")
    if limits.max_error_rate is not None and error_rate > limits.max_error_rate:
        return text, (f"error rate {error_rate:.2%} over --max-error-rate "
                      f"{limits.max_error_rate:.2%}")
    if limits.min_agreement is not None and not agreement >= limits.min_agreement:
        return text, (f"agreement {agreement:.2%} under --min-agreement "
                      f"{limits.min_agreement:.2%}" + (" (no rows compared)" if not rows else ""))
    if limits.max_p99_ratio is not None and ratio > limits.max_p99_ratio:
        return text, f"p99 ratio {ratio:.2f} over --max-p99-ratio {limits.max_p99_ratio:g}"
    return text, None


def _steps(text: str) -> list[float]:
    try:
        steps = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give percents such as 5,25,50,100") from None
    if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
        raise argparse.ArgumentTypeError(f"{text!r}: increasing percents above 0, at most 100")
    return steps if steps[-1] == 100 else [*steps, 100.0]


def _interval(text: str) -> float:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a duration such as 60s, 5m or 1.5")
    value = float(match.group(1)) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}[
        match.group(2) or "s"]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the interval must be above 0")
    return value


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "rollout", help="canary a version step by step; promote it, or abort on a breach",
        description=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("version", help="the candidate: a version number or an alias")
    p.add_argument("--steps", type=_steps, default=[5.0, 25.0, 50.0, 100.0], metavar="P,P,...",
                   help="canary percents, increasing (default 5,25,50,100; 100 is added)")
    p.add_argument("--interval", type=_interval, default=60.0, metavar="DURATION",
                   help="time per step: 60s, 5m, 500ms (default 60s)")
    p.add_argument("--url", default="http://127.0.0.1:8080",
                   help="the running server whose /metrics are read "
                        "(default http://127.0.0.1:8080)")
    p.add_argument("--max-error-rate", type=float, metavar="R",
                   help="abort when the candidate's failed share exceeds R (e.g. 0.01)")
    p.add_argument("--min-agreement", type=float, metavar="A",
                   help="abort when the candidate, replaying production's requests as a "
                        "shadow, agrees on the class of fewer than A of the rows (e.g. 0.9)")
    p.add_argument("--max-p99-ratio", type=float, metavar="X",
                   help="abort when the candidate's p99 latency exceeds X times production's")
    p.add_argument("--min-requests", type=int, default=10, metavar="N",
                   help="abort when fewer than N requests reach the candidate in a step "
                        "(nothing to judge; default 10)")
    return p


def _canary_at(candidate: int, percent: float) -> Callable[[policy.Policy], policy.Policy]:
    def change(current: policy.Policy) -> policy.Policy:
        sticky = current.canary.sticky_header if current.canary else None
        return replace(current, canary=policy.Split(candidate, percent, sticky))
    return change


def main(repository: Path, args: argparse.Namespace,
         sleep: Callable[[float], None] = time.sleep) -> int:
    model = args.model
    model_dir = repository / modelrepo.check_model_name(model, publishing=False)
    if not model_dir.is_dir():
        raise RepositoryError(f"no model {model!r} in {repository}")
    limits = Limits(args.max_error_rate, args.min_agreement, args.max_p99_ratio,
                    args.min_requests)
    found: dict[str, int] = {}

    def start(current: policy.Policy) -> policy.Policy:
        candidate = found["candidate"] = policy.resolve(model_dir, model, current, args.version)
        pinned = policy.pin_production(model_dir, current, exclude=candidate)
        if pinned.production is None or pinned.production == candidate:
            raise RepositoryError(f"{model} version {candidate} is what serves now: roll out a "
                                  "version other than production (see: list)")
        found["production"] = pinned.production
        sticky = current.canary.sticky_header if current.canary else None
        return replace(pinned, canary=policy.Split(candidate, args.steps[0], sticky),
                       shadow=policy.Split(candidate, 100.0) if limits.min_agreement is not None
                       else pinned.shadow,
                       rollout={"version": candidate, "outcome": "running",
                                "steps": args.steps, "at": policy.now()})

    try:
        policy.update_policy(model_dir, start)
    except policy.PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    candidate, production = found["candidate"], found["production"]
    print(f"rollout of {model} version {candidate} against production version {production}: "
          f"steps {', '.join(f'{s:g}%' for s in args.steps)}, {args.interval:g} s each, "
          f"metrics from {args.url}", flush=True)

    def finish(outcome: str, step: float, reason: str | None) -> None:
        record = {"version": candidate, "outcome": outcome, "step": step, "reason": reason,
                  "at": policy.now()}

        def change(current: policy.Policy) -> policy.Policy:
            if outcome == "promoted":
                current = policy.set_production(current, candidate)
            else:
                current = replace(current, aliases={**current.aliases,
                                                    policy.PRODUCTION: production})
            return replace(current, canary=None, shadow=None if current.shadow and
                           current.shadow.version == candidate else current.shadow,
                           rollout=record)

        policy.update_policy(model_dir, change)

    step = args.steps[0]
    try:
        for index, step in enumerate(args.steps, 1):
            if step >= 100:
                break
            if index > 1:
                policy.update_policy(model_dir, _canary_at(candidate, step))
            print(f"step {index}/{len(args.steps)}: canary {step:g}% for {args.interval:g} s",
                  flush=True)
            before = fetch_metrics(args.url)
            sleep(args.interval)
            after = fetch_metrics(args.url)
            text, breach = judge(model, candidate, production, before, after, limits)
            print(f"  {text}", flush=True)
            if breach is not None:
                finish("aborted", step, breach)
                print(f"ABORTED at {step:g}%: {breach}; {model} traffic is back on production "
                      f"version {production}", flush=True)
                return 1
    except (OSError, KeyboardInterrupt) as exc:
        reason = ("interrupted" if isinstance(exc, KeyboardInterrupt)
                  else f"cannot read {args.url}/metrics: {exc}")
        finish("aborted", step, reason)
        print(f"ABORTED at {step:g}%: {reason}; {model} traffic is back on production version "
              f"{production}", flush=True)
        return 1
    finish("promoted", 100.0, None)
    print(f"PROMOTED: {model} production is version {candidate} (was {production})", flush=True)
    return 0
