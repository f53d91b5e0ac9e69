"""The loop closed, end to end, against a real gunicorn: serve v1, send traffic from a shifted
distribution with feedback labels, watch the PSI of the shifted features rise past the
threshold while the others stay low, read the accuracy drop in ``python -m modelrepo report``,
train v2 with ``python -m training --from-log`` and see it serve the shifted data better."""

from __future__ import annotations

import csv
import http.client
import json
import re
from pathlib import Path

import numpy as np
import pytest

from modelrepo.__main__ import main as modelrepo_main
from modelrepo.drift import PSI_MODERATE, PSI_SIGNIFICANT
from tests.support.models import train
from tests.support.net import wait_until
from tests.support.server import start_server

FEATURES = ["a", "b", "c", "d"]
LABELS = ["k0", "k1", "k2"]
SHIFT = np.array([4.0, 4.0, 0.0, 0.0])  # a and b move; c and d do not


def rows_of(rng: np.random.Generator, n: int, shift: np.ndarray) -> tuple[np.ndarray,
                                                                        np.ndarray]:
    """``n`` rows: a and b centred on 3k for class k, c and d noise; plus ``shift``."""
    classes = rng.integers(0, 3, n)
    x = rng.normal(0, 1, (n, 4)) * [0.7, 0.7, 1, 1]
    x[:, 0] += 3 * classes
    x[:, 1] += 3 * classes
    return (x + shift).round(4), classes


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*FEATURES, "label"])
        writer.writerows([*row, LABELS[c]] for row, c in zip(x.tolist(), y.tolist()))


class Client:
    """A keep-alive connection to the server, opened again when the server closed it (it
    does after 5 idle seconds: training v2 takes longer)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None
                ) -> http.client.HTTPResponse:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body)
                return self.conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected):
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post(self, path: str, body: object) -> tuple[int, dict[str, str], object]:
        response = self.request("POST", path, json.dumps(body).encode())
        data = response.read()
        return response.status, dict(response.getheaders()), json.loads(data)

    def get(self, path: str) -> str:
        return self.request("GET", path).read().decode()

    def close(self) -> None:
        self.conn.close()


def predict_all(client: Client, x: np.ndarray, version: str | None = None
                ) -> tuple[list[int], list[tuple[str, int]]]:
    """The classes the server answers for ``x``, and (request id, row) of each row: half as
    single-row /v1 requests and half as 10-row V2 JSON batches (every API logs); all as V2
    batches to ``version`` if given."""
    classes: list[int] = []
    ids: list[tuple[str, int]] = []
    half = len(x) // 2 if version is None else 0
    infer = "/v2/models/shifty" + (f"/versions/{version}" if version else "") + "/infer"
    for row in x[:half].tolist():
        status, headers, answer = client.post("/v1/models/shifty:predict",
                                              {"instances": [row]})
        assert status == 200, answer
        classes.append(answer["predictions"][0]["class"])  # type: ignore[index]
        ids.append((headers["X-Request-ID"], 0))
    for start in range(half, len(x), 10):
        batch = x[start:start + 10]
        status, headers, answer = client.post(infer, {"inputs": [
            {"name": "input", "shape": list(batch.shape), "datatype": "FP32",
             "data": batch.ravel().tolist()}]})
        assert status == 200, answer
        out = next(o for o in answer["outputs"] if o["name"] == "class")  # type: ignore[index]
        classes += out["data"]
        ids += [(headers["X-Request-ID"], i) for i in range(len(batch))]
    return classes, ids


def psi_figures(metrics: str, version: str) -> dict[str, float]:
    found = re.findall(r'softserve_drift_psi\{feature="(\w+)",model="shifty",version="'
                       + version + r'"\} ([0-9.e+-]+)', metrics)
    return {feature: float(value) for feature, value in found}


def report(repository: Path, log_dir: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert modelrepo_main(["report", "shifty", "--artifacts", str(repository), "--log",
                           str(log_dir), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_served_log_and_feedback_detect_drift_and_retrain_a_better_version(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        request: pytest.FixtureRequest) -> None:
    rng = np.random.default_rng(17)
    repository, log_dir = tmp_path / "repository", tmp_path / "log"
    x, y = rows_of(rng, 600, np.zeros(4))
    write_csv(tmp_path / "original.csv", x, y)
    assert train(repository, "--data", str(tmp_path / "original.csv"),
                 "--model-name", "shifty") == 0

    with start_server(repository, tmp_path, workers=2, ready_path="/v2/health/ready",
                      env={"SOFTSERVE_PREDICTION_LOG": str(log_dir)}) as server:
        client = Client(server.port)
        request.addfinalizer(client.close)
        shifted, truth = rows_of(rng, 450, SHIFT)
        served, ids = predict_all(client, shifted)
        feedback = [{"id": request_id, "row": row, "label": LABELS[t], "model_version": "1",
                     "class": c} for (request_id, row), t, c in zip(ids, truth.tolist(), served)]
        feedback.append({"id": "no-such-request", "label": "k0"})  # accepted, unmatched
        for start in range(0, len(feedback), 200):
            status, _, answer = client.post("/v2/models/shifty/feedback",
                                            feedback[start:start + 200])
            assert status == 202, answer
            assert answer["logged"] is True  # type: ignore[index]

        # /metrics: every worker's counts summed into one PSI per feature.
        def drifted() -> dict[str, float]:
            metrics = client.get("/metrics")
            assert 'softserve_drift_rows_total{model="shifty",version="1"} 450.0' in metrics
            assert 'softserve_feedback_total{model="shifty",outcome="wrong",version="1"}' \
                in metrics
            return psi_figures(metrics, "1")

        psi = wait_until(drifted, timeout=10)
        assert psi["a"] > PSI_SIGNIFICANT and psi["b"] > PSI_SIGNIFICANT, psi
        assert psi["c"] < PSI_MODERATE and psi["d"] < PSI_MODERATE, psi

        def warned() -> None:  # each worker warns once per feature, from its own counts
            assert re.search(r'"logger":"softserve.drift".*feature \'a\' has PSI', server.log())

        wait_until(warned, timeout=10)

        # The report: the accuracy drop, the same drift from the logged inputs.
        def logged() -> dict:
            found = report(repository, log_dir, capsys)
            assert found["requests"] == 225 + 23 and found["feedback"] == 451
            return found

        before = wait_until(logged, timeout=10)
        v1 = before["versions"][0]
        assert v1["version"] == "1" and v1["labelled"] == 450 and before["unmatched"] == 1
        assert v1["drift"]["rows"] == 450
        assert v1["training_accuracy"] > 0.9 and v1["accuracy"] < 0.7, v1
        assert sum(map(sum, v1["confusion_matrix"]["matrix"])) == 450
        logged_psi = {f["feature"]: f["psi"] for f in v1["drift"]["features"]}
        assert logged_psi["a"] > PSI_SIGNIFICANT and logged_psi["c"] < PSI_MODERATE
        assert logged_psi == pytest.approx(psi, abs=1e-4)
        assert modelrepo_main(["report", "shifty", "--artifacts", str(repository), "--log",
                               str(log_dir)]) == 0
        text = capsys.readouterr().out
        assert "1 unmatched" in text and "450 labelled, live accuracy 0." in text, text
        assert "drift over 450 logged rows" in text, text
        assert re.search(r"\ba +PSI +\d+\.\d+  significant", text), text
        assert re.search(r"\bc +PSI +0\.0\d+  stable", text), text
        with capsys.disabled():
            print("\n" + text)

        # Retrain from what was served; v2 passes both gates and serves the shift better.
        assert train(repository, "--from-log", str(log_dir), "--model-name", "shifty") == 0
        metadata = json.loads((repository / "shifty" / "2" / "metadata.json").read_text())
        assert metadata["data"]["provenance"]["log"]["rows"] == 450
        assert metadata["promotion"]["passed"] is True
        assert metadata["data"]["statistics"]["features"][0]["name"] == "a"

        def v2_served() -> None:
            status, _, answer = client.post("/v1/models/shifty:predict",
                                            {"instances": [shifted[0].tolist()]})
            assert answer["model_version"] == "2"  # type: ignore[index]

        wait_until(v2_served, timeout=10)
        fresh, fresh_truth = rows_of(rng, 200, SHIFT)
        accuracy = {}
        for version in ("1", "2"):
            classes, _ = predict_all(client, fresh, version)
            accuracy[version] = float(np.mean(np.asarray(classes) == fresh_truth))
        assert accuracy["2"] > 0.9 > accuracy["1"], accuracy
    print(f"PSI from /metrics: {psi}; accuracy on the shift: v1 {v1['accuracy']:.3f} live, "
          f"fresh v1 {accuracy['1']:.3f}, v2 {accuracy['2']:.3f}")
