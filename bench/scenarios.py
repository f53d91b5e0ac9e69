"""The benchmark's scenarios: one fixed request each, and how to tell its answer is the right
one. Every scenario's request is sent once to each server before it is measured, so a wrong
payload cannot be benchmarked as a fast error."""

from __future__ import annotations

import csv
import http.client
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench import FOREST_MODEL, FOREST_TREES, WIDE_CLASSES, WIDE_FEATURES, WIDE_MODEL
from tests.support import ROOT
from tests.support.models import MODEL
from tests.support.net import send
from tests.support.server import Server

IRIS_CSV = ROOT / "training" / "data" / "iris.csv"
IRIS_FEATURES, IRIS_CLASSES = 4, 3
BATCH_ROWS = 1000
WIDE_ROWS_SEED = 1414  # the rows sent to the wide model (bench.repository_to_serve makes it)
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


def random_rows(n: int, n_features: int, seed: int = WIDE_ROWS_SEED) -> list[list[float]]:
    """``n`` rows of ``n_features`` standard normal values, the same for a seed; rounded to 4
    decimals, as a data file would hold them (not 17-digit float reprs that bloat the JSON)."""
    values = np.random.default_rng(seed).normal(0, 1, (n, n_features)).round(4)
    return [[float(v) for v in row] for row in values]


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


def _check_predict(rows: int, classes: int = IRIS_CLASSES) -> Check:
    def check(headers: dict[str, str], body: bytes) -> None:
        doc = json.loads(body)
        assert len(doc["predictions"]) == rows, f"{len(doc['predictions'])} predictions"
        assert len(doc["predictions"][0]["probabilities"]) == classes
    return check


def _check_v2_json(rows: int, classes: int = IRIS_CLASSES) -> Check:
    def check(headers: dict[str, str], body: bytes) -> None:
        outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
        shape = outputs["probabilities"]["shape"]
        assert shape == [rows, classes], shape
        assert len(outputs["probabilities"]["data"]) == classes * rows
        assert len(outputs["class"]["data"]) == rows
    return check


def _check_v2_binary(rows: int, classes: int = IRIS_CLASSES) -> Check:
    def check(headers: dict[str, str], body: bytes) -> None:
        length = int(headers[HEADER_LENGTH.lower()])
        outputs = {o["name"]: o for o in json.loads(body[:length])["outputs"]}
        shapes = {name: o["shape"] for name, o in outputs.items()}
        assert shapes == {"probabilities": [rows, classes], "class": [rows]}, shapes
        sizes = {name: o["parameters"]["binary_data_size"] for name, o in outputs.items()}
        assert sizes == {"probabilities": 4 * classes * rows, "class": 8 * rows}, sizes
        assert len(body) - length == (4 * classes + 8) * rows, f"{len(body) - length} binary bytes"
    return check


def v2_json_body(rows: list[list[float]]) -> bytes:
    """A V2 JSON request: the rows as FP32 ``data``, shape [N, F]."""
    return _json({"inputs": [{"name": "input", "shape": [len(rows), len(rows[0])],
                              "datatype": "FP32", "data": [v for row in rows for v in row]}]})


def v2_binary_body(rows: list[list[float]] | np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A V2 request with binary input and binary outputs, as tritonclient builds it, of rows
    given as lists or as an (N, F) array."""
    values = np.asarray(rows, dtype="<f4")
    n, f = values.shape
    raw = values.tobytes()
    header = _json({
        "inputs": [{"name": "input", "shape": [n, f], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                    {"name": "class", "parameters": {"binary_data": True}}],
    })
    return header + raw, {"Content-Type": "application/octet-stream",
                          HEADER_LENGTH: str(len(header))}


# softserve with every optional feature off (issue 20; see "lean" below).
LEAN_SETTINGS = {"SOFTSERVE_ACCESS_LOG": "0", "SOFTSERVE_METRICS": "0",
                 "SOFTSERVE_DRIFT_SAMPLE": "0"}

# The loop's cost (issue 17): single-row /predict on servers that differ from softserve's
# defaults (prediction log off, drift counting on) in one setting each; bench.__main__ starts
# them, with the prediction log in its temporary directory.
LOOP_SERVERS: dict[str, dict[str, str]] = {
    "loop-nodrift": {"SOFTSERVE_DRIFT_SAMPLE": "0"},
    "loop-log10": {"SOFTSERVE_PREDICTION_LOG_SAMPLE": "0.1"},
    "loop-log100": {"SOFTSERVE_PREDICTION_LOG_SAMPLE": "1"},
    # Issue 20: every optional feature off, the leanest softserve a user can run (the prediction
    # log is off by default). Optional: what can be turned off without changing an answer —
    # the access log, the metrics (/metrics and the V2 statistics) and drift counting (which
    # needs the metrics). Routing by alias and canary stays: without a policy it costs nothing.
    "lean": LEAN_SETTINGS,
}
LOOP_SCENARIOS = tuple(f"{server}-1" for server in LOOP_SERVERS if server.startswith("loop-"))
# The lean server's single-row scenarios (issue 20), next to predict-1 and v2-json-1.
LEAN_SCENARIOS = ("lean-predict-1", "lean-v2-json-1")
WIDE_SCENARIOS = ("wide-v2-json-1", "wide-v2-binary-1", f"wide-v2-json-{BATCH_ROWS}",
                  f"wide-v2-binary-{BATCH_ROWS}")
FOREST_SCENARIOS = ("forest-v2-json-1", "forest-v2-binary-1", f"forest-v2-json-{BATCH_ROWS}",
                    f"forest-v2-binary-{BATCH_ROWS}")
SCENARIO_ORDER = ["noop", "live", "predict-1", "v2-json-1", *LEAN_SCENARIOS, "v2-binary-1",
                  f"predict-{BATCH_ROWS}", f"v2-json-{BATCH_ROWS}", f"v2-binary-{BATCH_ROWS}",
                  *WIDE_SCENARIOS, *FOREST_SCENARIOS, *LOOP_SCENARIOS]


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
        if n == 1:
            for server, title in (("loop-nodrift", "drift counting off"),
                                  ("loop-log10", "prediction log at 10 %"),
                                  ("loop-log100", "prediction log at 100 %")):
                out.append(Scenario(f"{server}-1", f"POST /predict, single row, {title}",
                                    "POST", "/predict", predict_body, json_headers, n,
                                    _check_predict(n), server=server))
        out.append(Scenario(
            f"v2-json-{suffix}", f"V2 JSON infer, {label}", "POST", f"/v2/models/{MODEL}/infer",
            v2_json_body(rows), json_headers, n, _check_v2_json(n), classes=_v2_json_classes))
        if n == 1:  # issue 20: the same two single-row requests, every optional feature off
            out.append(Scenario("lean-predict-1", "POST /predict, single row, optional "
                                "features off", "POST", "/predict", predict_body, json_headers,
                                n, _check_predict(n), server="lean"))
            out.append(Scenario("lean-v2-json-1", "V2 JSON infer, single row, optional "
                                "features off", "POST", f"/v2/models/{MODEL}/infer",
                                v2_json_body(rows), json_headers, n, _check_v2_json(n),
                                server="lean"))
        body, headers = v2_binary_body(rows)
        out.append(Scenario(f"v2-binary-{suffix}", f"V2 binary infer, {label}", "POST",
                            f"/v2/models/{MODEL}/infer", body, headers, n, _check_v2_binary(n)))
        wide_rows = random_rows(n, WIDE_FEATURES)
        wide_path = f"/v2/models/{WIDE_MODEL}/infer"
        shape = f"F = {WIDE_FEATURES}, K = {WIDE_CLASSES}"
        out.append(Scenario(f"wide-v2-json-{suffix}", f"V2 JSON infer, {label}, {shape}",
                            "POST", wide_path, v2_json_body(wide_rows), json_headers, n,
                            _check_v2_json(n, WIDE_CLASSES), classes=_v2_json_classes))
        body, headers = v2_binary_body(wide_rows)
        out.append(Scenario(f"wide-v2-binary-{suffix}", f"V2 binary infer, {label}, {shape}",
                            "POST", wide_path, body, headers, n,
                            _check_v2_binary(n, WIDE_CLASSES)))
        # The imported tree ensemble, sent the iris rows the linear iris model gets.
        forest_path = f"/v2/models/{FOREST_MODEL}/infer"
        forest = f"{FOREST_TREES}-tree forest (imported)"
        out.append(Scenario(f"forest-v2-json-{suffix}", f"V2 JSON infer, {label}, {forest}",
                            "POST", forest_path, v2_json_body(rows), json_headers, n,
                            _check_v2_json(n), classes=_v2_json_classes))
        body, headers = v2_binary_body(rows)
        out.append(Scenario(f"forest-v2-binary-{suffix}", f"V2 binary infer, {label}, {forest}",
                            "POST", forest_path, body, headers, n, _check_v2_binary(n)))
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
    "wide-v2-json-1": f"V2 JSON, 1 row, F = {WIDE_FEATURES}",
    "wide-v2-binary-1": f"V2 binary, 1 row, F = {WIDE_FEATURES}",
    f"wide-v2-json-{BATCH_ROWS}": f"V2 JSON, {BATCH_ROWS} rows, F = {WIDE_FEATURES}",
    f"wide-v2-binary-{BATCH_ROWS}": f"V2 binary, {BATCH_ROWS} rows, F = {WIDE_FEATURES}",
    "forest-v2-json-1": "V2 JSON, 1 row, forest",
    "forest-v2-binary-1": "V2 binary, 1 row, forest",
    f"forest-v2-json-{BATCH_ROWS}": f"V2 JSON, {BATCH_ROWS} rows, forest",
    f"forest-v2-binary-{BATCH_ROWS}": f"V2 binary, {BATCH_ROWS} rows, forest",
    "loop-nodrift-1": "/predict, 1 row, drift off",
    "loop-log10-1": "/predict, 1 row, log 10 %",
    "loop-log100-1": "/predict, 1 row, log 100 %",
    "lean-predict-1": "/predict, 1 row, lean",
    "lean-v2-json-1": "V2 JSON, 1 row, lean",
}

SCENARIO_GROUPS = {
    "all": None,
    "single": ["noop", "live", "predict-1", "v2-json-1", "v2-binary-1", *LEAN_SCENARIOS],
    "batch": ["live", f"predict-{BATCH_ROWS}", f"v2-json-{BATCH_ROWS}", f"v2-binary-{BATCH_ROWS}"],
    "wide": list(WIDE_SCENARIOS),
    "forest": list(FOREST_SCENARIOS),
    # softserve's defaults (log off, drift on) against each loop setting
    "loop": ["predict-1", *LOOP_SCENARIOS],
    # issue 20: single rows with every feature on (the defaults) and with the optional ones off
    "lean": ["noop", "predict-1", "v2-json-1", *LEAN_SCENARIOS],
    "none": [],  # only the axes (--axes)
}


def select_scenarios(spec: str) -> list[Scenario]:
    """Scenarios named by ``spec``: a group (all, single, batch, wide, forest, loop, lean) or a
    comma-separated list. Raises SystemExit for an unknown name."""
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
        if scenario.server != "softserve":  # the no-op app, a loop or the lean server
            check_scenario(servers[scenario.server], scenario)
            continue
        ours = check_scenario(servers["softserve"], scenario)
        if "baseline" in servers and scenario.name in BASELINE_SCENARIOS:
            theirs = check_scenario(servers["baseline"], scenario)
            if ours != theirs:
                differ = sum(a != b for a, b in zip(ours or [], theirs or []))
                raise RuntimeError(f"{scenario.name}: softserve and the baseline disagree on "
                                   f"{differ} of {len(ours or [])} classes")

