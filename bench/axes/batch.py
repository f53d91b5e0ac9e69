"""Batch size (issue 20): latency, rows/s and peak worker memory per request at 1, 100, 10,000 and
100,000 rows, for V2 binary, V2 JSON and /predict, on the F = 64, K = 10 linear model.

One gunicorn with ONE worker, so every request lands on the worker whose memory is read;
``SOFTSERVE_MAX_BODY_BYTES`` raised to 128 MiB for it (the 100,000-row JSON bodies are ~50 MB),
and ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc gives every large buffer back when it is
freed: with its default (a threshold that grows to the largest buffer freed), one request's
freed buffers stay in the heap and the next request reuses them without its peak showing.

Latency: one kept-alive connection, requests one after another (a timed client loop, not wrk:
a 100,000-row request takes longer than wrk's runs are worth), after one unmeasured request of
each kind. rows/s is rows ÷ the median latency (one request at a time on one worker).

Memory: before each big request the worker's peak RSS is reset (``echo 5 >
/proc/<pid>/clear_refs``, which sets VmHWM to the current VmRSS) and VmRSS read; after the
answer, VmHWM. The peak increase ÷ the request body's size is how many copies of the payload
existed at the peak (the body itself included); the median of a few requests. Needs a Linux
/proc that allows writing clear_refs (root or the same user); else the figures are left out.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.axes import Context, run_alone
from bench.report import Target

TITLE = "Batch size: rows per request"
PANELS = 2

SIZES = (1, 100, 10_000, 100_000)
FEATURES, CLASSES = 64, 10
MODEL = "batch"
MAX_BODY = 128 * 1024 * 1024
COPIES_TARGET = 3.0
MEMORY_FROM = 10_000  # peak memory is measured from this many rows up (below: noise)
FORMATS = ("binary", "json", "predict")
FORMAT_TITLES = {"binary": "V2 binary", "json": "V2 JSON", "predict": "/predict"}


def _rows(n: int) -> np.ndarray:
    return np.random.default_rng(n).normal(0, 1, (n, FEATURES)).round(4).astype(np.float32)


def _text(rows: np.ndarray) -> str:
    return ",".join(np.char.mod("%.4f", rows.reshape(-1)).tolist())


def request(kind: str, rows: np.ndarray) -> tuple[str, bytes, dict[str, str]]:
    """Path, body and headers of a ``kind`` request (binary, json, predict) for ``rows``."""
    from bench.scenarios import v2_binary_body

    n, f = rows.shape
    path = f"/v2/models/{MODEL}/infer"
    if kind == "binary":
        body, headers = v2_binary_body(rows)
        return path, body, headers
    json_headers = {"Content-Type": "application/json"}
    if kind == "json":
        return path, (f'{{"inputs":[{{"name":"input","shape":[{n},{f}],"datatype":"FP32",'
                      f'"data":[{_text(rows)}]}}]}}').encode(), json_headers
    text = "],[".join(_text(row) for row in rows)  # nested: [[...],[...]]
    return "/predict", f'{{"instances":[[{text}]]}}'.encode(), json_headers


def _check(kind: str, n: int, status: int, body: bytes, headers: dict[str, str]) -> None:
    """Raise RuntimeError unless the answer is 200 with n rows of K classes."""
    import json

    if status != 200:
        raise RuntimeError(f"batch {kind} {n} rows: answered {status}: {body[:300]!r}")
    if kind == "binary":
        length = int(headers["inference-header-content-length"])
        ok = len(body) - length == (4 * CLASSES + 8) * n
    elif kind == "json":
        outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
        ok = outputs["probabilities"]["shape"] == [n, CLASSES] and \
            len(outputs["class"]["data"]) == n
    else:
        ok = len(json.loads(body)["predictions"]) == n
    if not ok:
        raise RuntimeError(f"batch {kind} {n} rows: unexpected answer {body[:300]!r}")


def _send(conn: http.client.HTTPConnection, path: str, body: bytes,
          headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    conn.request("POST", path, body, headers)
    reply = conn.getresponse()
    data = reply.read()
    return reply.status, data, {k.lower(): v for k, v in reply.getheaders()}


def settle(pid: int, limit: float = 1.0) -> None:
    """Wait (up to ``limit`` s) until the worker's RSS stops changing: after an answer is sent
    the worker still frees the request's buffers, which must not count in the next peak."""
    from tests.support.processes import proc_status

    deadline = time.monotonic() + limit
    last = proc_status(pid).get("VmRSS")
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = proc_status(pid).get("VmRSS")
        if now == last:
            return
        last = now


def _reset_peak(pid: int) -> bool:
    settle(pid)
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _point(port: int, pid: int, kind: str, n: int, ctx: Context) -> dict[str, Any]:
    path, body, headers = request(kind, _rows(n))
    # A fresh connection once the body is built (building the big ones outlasts keep-alive).
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        return _measure_point(conn, pid, kind, n, path, body, headers, ctx)
    finally:
        conn.close()


def _measure_point(conn: http.client.HTTPConnection, pid: int, kind: str, n: int, path: str,
                   body: bytes, headers: dict[str, str], ctx: Context) -> dict[str, Any]:
    from tests.support.processes import proc_status

    status, answer, answer_headers = _send(conn, path, body, headers)  # warm, and checked
    _check(kind, n, status, answer, answer_headers)
    budget = (0.5 if ctx.quick else 1.5) if n < MEMORY_FROM else 0.0
    most = 3 if n >= 100_000 else 5 if n >= MEMORY_FROM else 2000
    times: list[float] = []
    peaks: list[int] = []
    started = time.perf_counter()
    while len(times) < most and (len(times) < 3 or time.perf_counter() - started < budget):
        measure_memory = n >= MEMORY_FROM and _reset_peak(pid)
        before = proc_status(pid).get("VmRSS", 0) if measure_memory else 0
        t0 = time.perf_counter()
        status, answer, _ = _send(conn, path, body, headers)
        times.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"batch {kind} {n} rows: answered {status}: {answer[:300]!r}")
        if measure_memory:
            peaks.append(proc_status(pid).get("VmHWM", 0) - before)
    times.sort()
    p50 = times[len(times) // 2]
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    point: dict[str, Any] = {"rows": n, "format": kind, "body_bytes": len(body),
                             "requests": len(times), "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3,
                             "rows_per_s": n / p50}
    if peaks:
        peak_kib = sorted(peaks)[len(peaks) // 2]
        point["peak_increase_bytes"] = peak_kib * 1024
        point["copies"] = peak_kib * 1024 / len(body)
    ctx.log(f"batch {kind} {n} rows: p50 {p50 * 1e3:.2f} ms, {n / p50:,.0f} rows/s"
            + (f", peak +{point['peak_increase_bytes'] / 1e6:.1f} MB = "
               f"{point['copies']:.2f} × the {len(body) / 1e6:.1f} MB body" if peaks else ""))
    return point


def measure(ctx: Context) -> dict[str, Any]:
    """Publish the F = 64 model, serve it with one worker, measure every size and format.

    Raises RuntimeError if the server or an answer check fails.
    """
    from bench.measure import start_gunicorn
    from tests.support.models import publish_linear_model

    repository = ctx.tmp / "repository"
    repository.mkdir()
    publish_linear_model(repository, MODEL, FEATURES, CLASSES, seed=FEATURES)
    server = start_gunicorn(repository, 1, [], ctx.tmp, nice=ctx.nice, name="softserve-batch",
                            env={"SOFTSERVE_MAX_BODY_BYTES": str(MAX_BODY),
                                 "MALLOC_MMAP_THRESHOLD_": "65536"})
    points: list[dict[str, Any]] = []
    try:
        (pid,) = server.worker_pids()
        for kind in FORMATS:
            for n in SIZES:
                points.append(_point(server.port, pid, kind, n, ctx))
    finally:
        server.stop()
    return {"features": FEATURES, "classes": CLASSES, "max_body": MAX_BODY, "points": points}


def _find(data: dict[str, Any], kind: str, n: int) -> dict[str, Any] | None:
    return next((p for p in data.get("points", []) if p["format"] == kind and p["rows"] == n),
                None)


def targets(data: dict[str, Any]) -> list[Target]:
    out = []
    for kind in FORMATS:
        what = (f"copies of the payload at the peak, {FORMAT_TITLES[kind]}, {SIZES[-1]:,} rows "
                f"(worker peak RSS increase ÷ body size)")
        p = _find(data, kind, SIZES[-1])
        if p is None or "copies" not in p:
            out.append(Target(what, f"<= {COPIES_TARGET:g}", "", None))
        else:
            out.append(Target(what, f"<= {COPIES_TARGET:g}", f"{p['copies']:.2f}",
                              p["copies"] <= COPIES_TARGET))
    return out


def markdown(data: dict[str, Any]) -> list[str]:
    lines = [
        f"The F = {data['features']}, K = {data['classes']} linear model, one gunicorn with one "
        f"worker (`SOFTSERVE_MAX_BODY_BYTES={data['max_body']}`, `MALLOC_MMAP_THRESHOLD_=65536`"
        " so freed buffers leave the RSS and each request's peak shows). Latency: requests one "
        "at a time over one kept-alive connection, after an unmeasured one; rows/s = rows ÷ "
        "median latency. Copies: the worker's peak RSS increase during one request "
        "(VmHWM reset through /proc/<pid>/clear_refs before it) ÷ the request body's size, "
        f"from {MEMORY_FROM:,} rows up (the median of 3 to 5 requests).",
        "",
        "| format | rows | body | p50 ms | p99 ms | rows/s | peak increase | copies |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in data.get("points", []):
        peak = f"{p['peak_increase_bytes'] / 1e6:.1f} MB" if "copies" in p else ""
        copies = f"{p['copies']:.2f}" if "copies" in p else ""
        lines.append(f"| {FORMAT_TITLES[p['format']]} | {p['rows']:,} "
                     f"| {p['body_bytes'] / 1e6:.3f} MB | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} "
                     f"| {p['rows_per_s']:,.0f} | {peak} | {copies} |")
    lines += ["", "Where the copies are: the worker buffers the body as it arrives (a bytearray, "
              "then the body as bytes: two copies for a moment, then one); binary input is a "
              "view of the body (an aligned copy only when the JSON header's length is not a "
              "multiple of 4); JSON bodies over 256 kB have their one list of numbers (V2 "
              "\"data\", /predict \"instances\") read a chunk of 64 kB at a time straight into "
              "the float32 array (`serving/codecs/checks.py`), so the values never all exist as "
              "Python floats (~32 bytes each, 4 times their text); then the outputs (K + 2 values "
              "a row, small next to F = 64) and the answer. The peak is the worker's buffering."]
    return lines


def plot(axes: Sequence[Any], data: dict[str, Any]) -> None:
    latency, copies = axes[0], axes[1]
    for kind, style in zip(FORMATS, ("o-", "s-", "^-")):
        points = [p for p in data.get("points", []) if p["format"] == kind]
        latency.plot([p["rows"] for p in points], [p["p50_ms"] for p in points], style,
                     label=FORMAT_TITLES[kind])
        mem = [p for p in points if "copies" in p]
        copies.plot([p["rows"] for p in mem], [p["copies"] for p in mem], style,
                    label=FORMAT_TITLES[kind])
    latency.set_xscale("log")
    latency.set_yscale("log")
    latency.set_xlabel(f"rows per request (F = {data.get('features', FEATURES)})")
    latency.set_ylabel("median latency, ms (one request at a time)")
    latency.set_title("Batch size: latency")
    copies.axhline(COPIES_TARGET, color="grey", linestyle=":", label="target")
    copies.set_xscale("log")
    copies.set_ylim(bottom=0)
    copies.set_xlabel("rows per request")
    copies.set_ylabel("peak RSS increase ÷ body size")
    copies.set_title("Batch size: copies of the payload")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")


def main(argv: Sequence[str] | None = None) -> int:
    return run_alone("batch", argv, __doc__.split("\n\n")[0] if __doc__ else "batch axis")


if __name__ == "__main__":
    raise SystemExit(main())
