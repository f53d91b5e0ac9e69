"""p99 with and without a shadow version, one server run (issue 16).

Publishes two versions of a linear model (``--features`` x ``--classes``) into a temporary
repository, pins ``production`` to version 1 and starts the real gunicorn (2 workers,
``SOFTSERVE_POLL_SECONDS`` 0.5). Then, ``--rounds`` times, it turns the shadow (version 2, on
every answer) off and on with ``python -m modelrepo shadow``, waits for the workers' next poll,
and drives wrk against ``POST /v2/models/m/infer`` (``--rows`` rows per request, V2 JSON) for
``--seconds``. Off and on alternate within one run, so that whatever else the machine does
falls on both. Prints, for off and on: requests/s, p50 and p99 (wrk's, the median over the
rounds), the workers' CPU per request, and the shadow's own figures from
``GET /v2/models/m/stats``.

    .venv/bin/python -m bench.shadow                     # 4 connections, 1 row, 3 rounds of 5 s
    .venv/bin/python -m bench.shadow --connections 1 --rows 100 --json /tmp/shadow.json

The shadow runs after each answer is sent (serving/telemetry/shadow.py), so a client's own
answer never waits for it; the next request on the same worker may, while the shadow holds it.
With fewer connections than the server can serve at once, p99 shows that; at saturation, the
shadow's CPU shows as fewer requests per second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.measure import LUA_SCRIPT, run_wrk, start_gunicorn
from bench.scenarios import Scenario
from tests.support import ROOT
from tests.support.models import publish_linear_model
from tests.support.net import send
from tests.support.processes import cpu_seconds

MODEL = "m"


def _modelrepo(repository: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "modelrepo", "--artifacts", str(repository), *args],
                   check=True, cwd=ROOT, capture_output=True)


def _check(headers: dict[str, str], body: bytes) -> None:
    assert json.loads(body)["model_version"] == "1", body[:200]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shadow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1, help="rows per request (default: 1)")
    parser.add_argument("--connections", type=int, default=4,
                        help="wrk's connections (default: 4; 1 thread each, up to 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase (default: 5)")
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs (default: 3)")
    parser.add_argument("--wrk", default="wrk", help="the wrk binary (default: on PATH)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    assert LUA_SCRIPT.is_file()
    rng = np.random.default_rng(0)
    body = json.dumps({"inputs": [{
        "name": "input", "shape": [args.rows, args.features], "datatype": "FP32",
        "data": rng.normal(size=args.rows * args.features).round(3).tolist()}]}).encode()
    scenario = Scenario("shadow", "V2 JSON with or without a shadow", "POST",
                        f"/v2/models/{MODEL}/infer", body,
                        {"Content-Type": "application/json"}, args.rows, _check)
    with tempfile.TemporaryDirectory(prefix="softserve-bench-shadow-") as tmp:
        repository = Path(tmp) / "repository"
        for seed in (0, 1):
            publish_linear_model(repository, MODEL, args.features, args.classes, seed=seed)
        _modelrepo(repository, "alias", MODEL, "production", "1")
        server = start_gunicorn(repository, 2, [], Path(tmp), env={
            "SOFTSERVE_POLL_SECONDS": "0.5", "SOFTSERVE_ACCESS_LOG": "0"})
        runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        try:
            pids = server.worker_pids()
            for round_number in range(args.rounds):
                for phase in ("off", "on"):
                    _modelrepo(repository, "shadow", MODEL,
                               *(["2"] if phase == "on" else ["--off"]))
                    time.sleep(1.5)  # every worker's next poll
                    before = cpu_seconds(pids)
                    raw = run_wrk(args.wrk, server.url, scenario, args.seconds,
                                  min(2, args.connections), args.connections,
                                  Path(tmp) / "body")
                    cpu = cpu_seconds(pids) - before
                    requests = int(raw["requests"])
                    errors = sum(int(v) for v in raw["errors"].values())
                    figures = {"requests_per_s": requests / (raw["duration_us"] / 1e6),
                               "p50_ms": raw["latency_us"]["p50"] / 1000,
                               "p99_ms": raw["latency_us"]["p99"] / 1000,
                               "cpu_us_per_request": cpu / max(requests, 1) * 1e6,
                               "errors": errors}
                    runs[phase].append(figures)
                    print(f"round {round_number + 1} shadow {phase:>3}: "
                          f"{figures['requests_per_s']:8.0f} req/s, p50 "
                          f"{figures['p50_ms']:.3f} ms, p99 {figures['p99_ms']:.3f} ms, "
                          f"{figures['cpu_us_per_request']:.0f} µs CPU/request, "
                          f"{errors} errors", flush=True)
            stats = send(server.port, "GET", f"/v2/models/{MODEL}/stats").json()
        finally:
            server.stop()
    summary = {phase: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
               for phase, rows in runs.items()}
    for phase, figures in summary.items():
        print(f"median shadow {phase:>3}: {figures['requests_per_s']:.0f} req/s, p50 "
              f"{figures['p50_ms']:.3f} ms, p99 {figures['p99_ms']:.3f} ms, "
              f"{figures['cpu_us_per_request']:.0f} µs CPU/request")
    shadow_stats = stats.get("shadow_stats")
    print("shadow figures:", json.dumps(shadow_stats))
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)},
                                         "rounds": runs, "median": summary,
                                         "shadow_stats": shadow_stats}, indent=2))
    return 0 if all(r["errors"] == 0 for rows in runs.values() for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
