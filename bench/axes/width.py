"""Width (issue 20): rows/s of V2 binary and V2 JSON at 1,000 rows per request for linear models
of F = 4, 64, 1,024 and 4,096 features (K = 10), next to onnxruntime's own in-process rate for the
same model and batch.

One repository holds the four models, one gunicorn serves them all (``SOFTSERVE_MAX_BODY_BYTES``
raised to 64 MiB for this server only: a 1,000 × 4,096 float32 body is 16 MiB plus its JSON
header, and the JSON body ~31 MiB, over the default 16 MiB). wrk sends one fixed request per run
(2 threads, 4 connections: enough to keep two workers busy with big requests). onnxruntime's
rate is ``LoadedModel.predict`` (the server's own session options: one intra-op thread,
sequential) on a prepared float32 array in this process, one thread.

Both are also given per CPU second: the server's rows per second of its workers' CPU, and
onnxruntime's rows per second of this thread's CPU. The F = 4,096 target compares those two,
so it does not depend on how many cores the server had or what else ran meanwhile.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.axes import Context, run_alone
from bench.report import Target

TITLE = "Width: features per row"
PANELS = 1

WIDTHS = (4, 64, 1024, 4096)
CLASSES = 10
ROWS = 1000
MAX_BODY = 64 * 1024 * 1024
BINARY_TARGET = 1_000_000  # rows/s, V2 binary at F = 64
RATIO_TARGET = 2.0  # onnxruntime in-process ÷ V2 binary, at F = 4,096
LOAD = (2, 4)  # wrk threads, connections


def model_name(width: int) -> str:
    return f"w{width}"


def _rows(width: int) -> np.ndarray:
    """The 1,000 rows sent to the F = ``width`` model: standard normal, 4 decimals."""
    return np.random.default_rng(width).normal(0, 1, (ROWS, width)).round(4).astype(np.float32)


def _json_body(rows: np.ndarray) -> bytes:
    """A V2 JSON request of ``rows`` (written without Python lists of floats: fast at 4M)."""
    n, f = rows.shape
    data = ",".join(np.char.mod("%.4f", rows.reshape(-1)).tolist())
    return (f'{{"inputs":[{{"name":"input","shape":[{n},{f}],"datatype":"FP32",'
            f'"data":[{data}]}}]}}').encode()


def body_dir(tmp: Path) -> Path:
    """Where wrk's body files go: memory (/dev/shm) if there is one, the bodies being up to
    ~31 MB each; else ``tmp``. The caller removes it."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="softserve-bench-bodies-", dir=shm))
    path = tmp / "bodies"
    path.mkdir(exist_ok=True)
    return path


def _scenarios(width: int) -> list[Any]:
    from bench.scenarios import Scenario, _check_v2_binary, _check_v2_json, v2_binary_body

    rows = _rows(width)
    path = f"/v2/models/{model_name(width)}/infer"
    body, headers = v2_binary_body(rows)
    return [
        Scenario(f"width-{width}-binary", f"V2 binary, {ROWS} rows, F = {width}", "POST", path,
                 body, headers, ROWS, _check_v2_binary(ROWS, CLASSES)),
        Scenario(f"width-{width}-json", f"V2 JSON, {ROWS} rows, F = {width}", "POST", path,
                 _json_body(rows), {"Content-Type": "application/json"}, ROWS,
                 _check_v2_json(ROWS, CLASSES)),
    ]


def _onnxruntime_rate(version_dir: Path, width: int, seconds: float) -> dict[str, float]:
    """onnxruntime's rows/s (wall and per CPU second) for the 1,000 rows, in this process."""
    import modelrepo
    from serving.model import LoadedModel

    metadata, model_bytes = modelrepo.read_version(version_dir)
    model = LoadedModel(model_name(width), 1, metadata, model_bytes, version_dir)
    rows = np.ascontiguousarray(_rows(width))
    for _ in range(3):
        model.predict(rows)
    calls, wall0, cpu0 = 0, time.perf_counter(), time.thread_time()
    while calls < 5 or time.perf_counter() - wall0 < seconds:
        model.predict(rows)
        calls += 1
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    return {"rows_per_s": calls * ROWS / wall, "rows_per_cpu_s": calls * ROWS / max(cpu, 1e-9),
            "us_per_call": wall / calls * 1e6}


def measure(ctx: Context) -> dict[str, Any]:
    """Publish the four models, measure each width's binary and JSON rate and onnxruntime's.

    Raises RuntimeError if the server, wrk or an answer check fails.
    """
    from bench.measure import Load, measure as measure_scenario, start_gunicorn
    from tests.support.models import publish_linear_model

    repository = ctx.tmp / "repository"
    repository.mkdir()
    versions = {w: publish_linear_model(repository, model_name(w), w, CLASSES, seed=w).path
                for w in WIDTHS}
    args = argparse.Namespace(wrk=ctx.wrk, nice=ctx.nice, warmup=ctx.warmup, repeat=1,
                              quiet_wait=ctx.quiet_wait)
    load = Load(ctx.seconds, *LOAD)
    points: list[dict[str, Any]] = []
    bodies = body_dir(ctx.tmp)
    server = start_gunicorn(repository, ctx.workers, [], ctx.tmp, nice=ctx.nice,
                            name="softserve-width",
                            env={"SOFTSERVE_MAX_BODY_BYTES": str(MAX_BODY)})
    try:
        for width in WIDTHS:
            point: dict[str, Any] = {"features": width}
            for scenario in _scenarios(width):
                kind = scenario.name.rsplit("-", 1)[1]
                result = measure_scenario(server, scenario, load, args,
                                          bodies / f"{scenario.name}.body")
                cpu_us = result.server_cpu_us_per_request
                point[kind] = {
                    "body_bytes": len(scenario.body), "rows_per_s": result.rows_per_s,
                    "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                    "server_cpu_us_per_request": cpu_us,
                    "rows_per_cpu_s": ROWS / (cpu_us / 1e6) if cpu_us > 0 else 0.0,
                    "clean": result.clean, "other_cpu_cores": result.other_cpu_cores}
                ctx.log(f"width F={width} {kind}: {result.rows_per_s:,.0f} rows/s, "
                        f"{cpu_us:,.0f} server CPU µs per request")
            points.append(point)
        # The floor under the widest binary request: the no-op app (same gunicorn, same
        # worker) taking in the same body and discarding it.
        floor = _noop_floor(ctx, _scenarios(WIDTHS[-1])[0], load, args, bodies)
    finally:
        server.stop()
        shutil.rmtree(bodies, ignore_errors=True)
    for point in points:
        width = point["features"]
        point["onnxruntime"] = _onnxruntime_rate(versions[width], width,
                                                 0.3 if ctx.quick else 1.0)
        ctx.log(f"width F={width} onnxruntime: {point['onnxruntime']['rows_per_s']:,.0f} rows/s")
    return {"rows": ROWS, "classes": CLASSES, "workers": ctx.workers, "max_body": MAX_BODY,
            "load": list(LOAD), "seconds": ctx.seconds, "points": points, "noop": floor}


def _noop_floor(ctx: Context, scenario: Any, load: Any, args: argparse.Namespace,
                bodies: Path) -> dict[str, Any]:
    """The no-op app's worker CPU per request and req/s for ``scenario``'s body. Raises
    RuntimeError if it does not start or wrk fails."""
    from bench.measure import NOOP_APP, measure_once, run_wrk, start_gunicorn

    server = start_gunicorn(ctx.tmp, ctx.workers, [], ctx.tmp, nice=ctx.nice, app=NOOP_APP,
                            name="noop-width", env={"SOFTSERVE_MAX_BODY_BYTES": str(MAX_BODY)})
    try:
        body_file = bodies / "noop.body"
        if ctx.warmup > 0:
            run_wrk(ctx.wrk, server.url, scenario, ctx.warmup, load.threads, load.connections,
                    body_file, ctx.nice)
        result = measure_once(server, scenario, load, args, body_file)
    finally:
        server.stop()
    ctx.log(f"width F={WIDTHS[-1]} binary body to the no-op app: "
            f"{result.server_cpu_us_per_request:,.0f} server CPU µs per request")
    return {"features": WIDTHS[-1], "body_bytes": len(scenario.body),
            "server_cpu_us_per_request": result.server_cpu_us_per_request,
            "requests_per_s": result.requests_per_s, "clean": result.clean}


def _point(data: dict[str, Any], width: int) -> dict[str, Any] | None:
    return next((p for p in data.get("points", []) if p["features"] == width), None)


def targets(data: dict[str, Any]) -> list[Target]:
    out = []
    p64 = _point(data, 64)
    if p64 is None:
        out.append(Target("V2 binary rows/s at F = 64, 1,000 rows", f">= {BINARY_TARGET:,}",
                          "", None))
    else:
        rate = p64["binary"]["rows_per_s"]
        out.append(Target("V2 binary rows/s at F = 64, 1,000 rows", f">= {BINARY_TARGET:,}",
                          f"{rate:,.0f}", rate >= BINARY_TARGET))
    p4k = _point(data, 4096)
    what = ("onnxruntime in-process ÷ V2 binary at F = 4,096, rows per CPU second "
            "(V2 JSON's ratio beside it, no target)")
    if p4k is None:
        out.append(Target(what, f"<= {RATIO_TARGET:g}", "", None))
    else:
        ort = p4k["onnxruntime"]["rows_per_cpu_s"]
        binary = ort / max(p4k["binary"]["rows_per_cpu_s"], 1e-9)
        json_ratio = ort / max(p4k["json"]["rows_per_cpu_s"], 1e-9)
        out.append(Target(what, f"<= {RATIO_TARGET:g}",
                          f"{binary:.2f} (JSON {json_ratio:.1f})", binary <= RATIO_TARGET))
    return out


def markdown(data: dict[str, Any]) -> list[str]:
    lines = [
        f"Linear models (MatMul, Add, Softmax, ArgMax) of F features and K = {data['classes']} "
        f"classes, one repository, one gunicorn ({data['workers']} workers, "
        f"`SOFTSERVE_MAX_BODY_BYTES={data['max_body']}` for this server only: the F = 4,096 "
        "bodies are over the default 16 MiB); "
        f"{data['rows']:,} rows per request, wrk -t{data['load'][0]} -c{data['load'][1]} for "
        f"{data['seconds']:g} s. onnxruntime: the server's own session options "
        "(`LoadedModel.predict`, one thread) on a prepared float32 array in the bench process. "
        "\"per CPU s\": rows per second of the workers' CPU time (server) or of the calling "
        "thread's (onnxruntime), the figure that noise from other programs hurts least.",
        "",
        "| F | binary body | binary rows/s | binary rows per CPU s | JSON body | JSON rows/s "
        "| JSON rows per CPU s | onnxruntime rows/s | ort ÷ binary (CPU) | ort ÷ JSON (CPU) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in data.get("points", []):
        b, j, o = p["binary"], p["json"], p["onnxruntime"]
        lines.append(
            f"| {p['features']:,} | {b['body_bytes'] / 1e6:.2f} MB | {b['rows_per_s']:,.0f} "
            f"| {b['rows_per_cpu_s']:,.0f} | {j['body_bytes'] / 1e6:.2f} MB "
            f"| {j['rows_per_s']:,.0f} | {j['rows_per_cpu_s']:,.0f} | {o['rows_per_s']:,.0f} "
            f"| {o['rows_per_cpu_s'] / max(b['rows_per_cpu_s'], 1e-9):.2f} "
            f"| {o['rows_per_cpu_s'] / max(j['rows_per_cpu_s'], 1e-9):.1f} |")
    noop = data.get("noop")
    widest = _point(data, WIDTHS[-1])
    if noop and widest:
        cpu = widest["binary"]["server_cpu_us_per_request"]
        lines += ["", f"The floor under the F = {noop['features']:,} binary request: the no-op "
                  f"app (same gunicorn, same worker) taking in the same "
                  f"{noop['body_bytes'] / 1e6:.1f} MB body and discarding it costs "
                  f"{noop['server_cpu_us_per_request']:,.0f} µs of worker CPU per request, "
                  f"softserve {cpu:,.0f} µs; onnxruntime's own share is "
                  f"{ROWS / widest['onnxruntime']['rows_per_cpu_s'] * 1e6:,.0f} µs."]
    lines += ["", "Binary input is read in place from the request body (no parse, no copy when "
              "the JSON header's length is a multiple of 4), so the handler's own cost per row is "
              "onnxruntime's MatMul plus one range check (in process, F = 4,096: ~1.9 ms a "
              "request, of which onnxruntime ~0.9 and the range check ~0.7). What the server "
              "adds on top is the worker taking in a 16 MB body: the kernel's loopback copy "
              "(system CPU) and the first touch of two fresh 16 MB buffers (the bytearray it "
              "reads into and the body's bytes), ~18 ms of page faults alone in a loop that "
              "does just that. JSON pays for parsing every number, which grows with F."]
    return lines


def plot(axes: Sequence[Any], data: dict[str, Any]) -> None:
    ax = axes[0]
    points = data.get("points", [])
    widths = [p["features"] for p in points]
    for key, label, style in (("binary", "V2 binary", "o-"), ("json", "V2 JSON", "s-"),
                              ("onnxruntime", "onnxruntime in-process (1 thread)", "^--")):
        ax.plot(widths, [p[key]["rows_per_s"] for p in points], style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("features per row (F), K = 10")
    ax.set_ylabel(f"rows/s at {data.get('rows', ROWS):,} rows per request")
    ax.set_title("Width")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")


def main(argv: Sequence[str] | None = None) -> int:
    return run_alone("width", argv, __doc__.split("\n\n")[0] if __doc__ else "width axis")


if __name__ == "__main__":
    raise SystemExit(main())
