"""The benchmark's scenarios: one fixed request each, and how to tell its answer is the right
one. Every scenario's request is sent once to each server before it is measured, so a wrong
payload cannot be benchmarked as a fast error."""

from __future__ import annotations

import csv
import http.client
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.support import ROOT
from tests.support.models import MODEL
from tests.support.net import send
from tests.support.server import Server

IRIS_CSV = ROOT / "training" / "data" / "iris.csv"
BATCH_ROWS = 1000
HEADER_LENGTH = "Inference-Header-Content-Length"
# The scenarios the baseline app answers (it has no binary V2 codec).
BASELINE_SCENARIOS = ("predict-1", "v2-json-1", f"predict-{BATCH_ROWS}", f"v2-json-{BATCH_ROWS}")


def iris_rows(n: int) -> list[list[float]]:
    """``n`` feature rows of the bundled iris data, cycled in file order."""
    with open(IRIS_CSV, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        rows = [[float(v) for v in line[:4]] for line in reader if line]
    return [rows[i % len(rows)] for i in range(n)]


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


Check = Callable[[dict[str, str], bytes], None]


@dataclass
class Scenario:
    """One wrk run: a fixed request, and how to tell its answer is the right one."""

    name: str
    title: str
    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    rows: int  # rows per request (0: not an inference)
    check: Check
    server: str = "softserve"  # which server answers it: softserve or noop
    # The predicted classes in an answer, to compare softserve's with the baseline's.
    classes: Callable[[dict[str, str], bytes], list[int]] | None = None


def _check_live(headers: dict[str, str], body: bytes) -> None:
    assert json.loads(body) == {"live": True}, body[:200]


def _check_noop(headers: dict[str, str], body: bytes) -> None:
    assert json.loads(body) == {"ok": True}, body[:200]


def _predict_classes(headers: dict[str, str], body: bytes) -> list[int]:
    return [p["class"] for p in json.loads(body)["predictions"]]


def _v2_json_classes(headers: dict[str, str], body: bytes) -> list[int]:
    return next(o["data"] for o in json.loads(body)["outputs"] if o["name"] == "class")


def _check_predict(rows: int) -> Check:
    def check(headers: dict[str, str], body: bytes) -> None:
        doc = json.loads(body)
        assert len(doc["predictions"]) == rows, f"{len(doc['predictions'])} predictions"
        assert len(doc["predictions"][0]["probabilities"]) == 3
    return check


def _check_v2_json(rows: int) -> Check:
    def check(headers: dict[str, str], body: bytes) -> None:
        outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
        assert outputs["probabilities"]["shape"] == [rows, 3], outputs["probabilities"]["shape"]
        assert len(outputs["probabilities"]["data"]) == 3 * rows
        assert len(outputs["class"]["data"]) == rows
    return check


def _check_v2_binary(rows: int) -> Check:
    def check(headers: dict[str, str], body: bytes) -> None:
        length = int(headers[HEADER_LENGTH.lower()])
        outputs = {o["name"]: o for o in json.loads(body[:length])["outputs"]}
        sizes = {name: o["parameters"]["binary_data_size"] for name, o in outputs.items()}
        assert sizes == {"probabilities": 12 * rows, "class": 8 * rows}, sizes
        assert len(body) - length == 20 * rows, f"{len(body) - length} binary bytes"
    return check


def v2_binary_body(rows: list[list[float]]) -> tuple[bytes, dict[str, str]]:
    """A V2 request with binary input and binary outputs, as tritonclient builds it."""
    n = len(rows)
    raw = struct.pack(f"<{4 * n}f", *(v for row in rows for v in row))
    header = _json({
        "inputs": [{"name": "input", "shape": [n, 4], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                    {"name": "class", "parameters": {"binary_data": True}}],
    })
    return header + raw, {"Content-Type": "application/octet-stream",
                          HEADER_LENGTH: str(len(header))}


SCENARIO_ORDER = ["noop", "live", "predict-1", "v2-json-1", "v2-binary-1",
                  f"predict-{BATCH_ROWS}", f"v2-json-{BATCH_ROWS}", f"v2-binary-{BATCH_ROWS}"]


def scenarios() -> list[Scenario]:
    """Every scenario, in report order; the first two are the ceilings."""
    json_headers = {"Content-Type": "application/json"}
    out = [Scenario("live", "GET /v2/health/live", "GET", "/v2/health/live", b"", {}, 0,
                    _check_live)]
    for n, suffix in ((1, "1"), (BATCH_ROWS, str(BATCH_ROWS))):
        rows = iris_rows(n)
        label = "single row" if n == 1 else f"{n} rows"
        predict_body = _json({"instances": rows})
        if n == 1:
            out.append(Scenario("noop", "POST /predict, single-row body, to a no-op",
                                "POST", "/predict", predict_body, json_headers, 0, _check_noop,
                                server="noop"))
        out.append(Scenario(f"predict-{suffix}", f"POST /predict, {label}", "POST", "/predict",
                            predict_body, json_headers, n, _check_predict(n),
                            classes=_predict_classes))
        out.append(Scenario(
            f"v2-json-{suffix}", f"V2 JSON infer, {label}", "POST", f"/v2/models/{MODEL}/infer",
            _json({"inputs": [{"name": "input", "shape": [n, 4], "datatype": "FP32",
                               "data": [v for row in rows for v in row]}]}),
            json_headers, n, _check_v2_json(n), classes=_v2_json_classes))
        body, headers = v2_binary_body(rows)
        out.append(Scenario(f"v2-binary-{suffix}", f"V2 binary infer, {label}", "POST",
                            f"/v2/models/{MODEL}/infer", body, headers, n, _check_v2_binary(n)))
    return sorted(out, key=lambda s: SCENARIO_ORDER.index(s.name))


SHORT_NAMES = {
    "noop": "no-op app",
    "live": "health/live",
    "predict-1": "/predict, 1 row",
    "v2-json-1": "V2 JSON, 1 row",
    "v2-binary-1": "V2 binary, 1 row",
    f"predict-{BATCH_ROWS}": f"/predict, {BATCH_ROWS} rows",
    f"v2-json-{BATCH_ROWS}": f"V2 JSON, {BATCH_ROWS} rows",
    f"v2-binary-{BATCH_ROWS}": f"V2 binary, {BATCH_ROWS} rows",
}

SCENARIO_GROUPS = {
    "all": None,
    "single": ["noop", "live", "predict-1", "v2-json-1", "v2-binary-1"],
    "batch": ["live", f"predict-{BATCH_ROWS}", f"v2-json-{BATCH_ROWS}", f"v2-binary-{BATCH_ROWS}"],
}


def select_scenarios(spec: str) -> list[Scenario]:
    """Scenarios named by ``spec``: a group (all, single, batch) or a comma-separated list."""
    every = scenarios()
    names = SCENARIO_GROUPS.get(spec, [n.strip() for n in spec.split(",") if n.strip()])
    if names is None:
        return every
    known = {s.name for s in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}: choose from "
                         f"{', '.join(SCENARIO_GROUPS)} or {', '.join(sorted(known))}")
    return [s for s in every if s.name in names]


def check_scenario(server: Server, scenario: Scenario) -> list[int] | None:
    """Send the scenario's request once; return the predicted classes if it has a reader.

    Raises RuntimeError unless the answer is 200 with the expected shape.
    """
    where = f"{scenario.method} {server.url}{scenario.path}"
    try:
        reply = send(server.port, scenario.method, scenario.path,
                     scenario.body if scenario.method != "GET" else None, scenario.headers,
                     timeout=10)
    except (OSError, http.client.HTTPException) as exc:
        raise RuntimeError(f"{scenario.name}: {where}: no answer ({exc!r})") from None
    if reply.status != 200:
        raise RuntimeError(f"{scenario.name}: {where} answered {reply.status}: "
                           f"{reply.body[:300]!r}")
    try:
        scenario.check(reply.headers, reply.body)
        return scenario.classes(reply.headers, reply.body) if scenario.classes else None
    except (AssertionError, KeyError, ValueError, TypeError, StopIteration) as exc:
        raise RuntimeError(f"{scenario.name}: unexpected answer from {server.url} ({exc!r}): "
                           f"{reply.body[:300]!r}") from None


def check_answers(servers: dict[str, Server], chosen: Sequence[Scenario]) -> None:
    """Send every scenario once to each server that runs it; softserve and the baseline must
    predict the same classes. Raises RuntimeError."""
    for scenario in {s.name: s for s in chosen}.values():
        if scenario.server == "noop":
            check_scenario(servers["noop"], scenario)
            continue
        ours = check_scenario(servers["softserve"], scenario)
        if "baseline" in servers and scenario.name in BASELINE_SCENARIOS:
            theirs = check_scenario(servers["baseline"], scenario)
            if ours != theirs:
                differ = sum(a != b for a, b in zip(ours or [], theirs or []))
                raise RuntimeError(f"{scenario.name}: softserve and the baseline disagree on "
                                   f"{differ} of {len(ours or [])} classes")

