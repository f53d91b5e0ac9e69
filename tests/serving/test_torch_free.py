"""Serving works where torch cannot be imported: the slim serving image has no torch.

A directory put first on PYTHONPATH holds ``torch`` (and the other training-only packages,
``onnx`` and ``onnxscript``) as packages whose import raises ImportError, as a missing package
would. Each stand-in also records who tried to import it: the tests require that nobody even
tried, which a plain "torch not in sys.modules" could not show (a failed import leaves nothing
in sys.modules).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.support import ROOT
from tests.support.server import start_server

TRAINING_ONLY = ("torch", "onnx", "onnxscript")
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]

STAND_IN = '''\
import os, traceback
with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "import-attempts.log"), "a") as log:
    log.write(">>> import {name}\\n" + "".join(traceback.format_stack()[:-1]) + "\\n")
raise ImportError("{name} is not available in the serving environment")
'''


@pytest.fixture
def no_torch(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """(environment with the stand-ins first on PYTHONPATH, the import-attempts log path)."""
    shadow = tmp_path / "no-torch"
    for name in TRAINING_ONLY:
        (shadow / name).mkdir(parents=True)
        (shadow / name / "__init__.py").write_text(STAND_IN.format(name=name))
    path = os.pathsep.join(p for p in (str(shadow), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path}, shadow / "import-attempts.log"


def attempts(log: Path) -> str:
    return log.read_text() if log.exists() else ""


@pytest.fixture(scope="module")
def expected(iris_repository: Path) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(iris_repository / "iris" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    probabilities, classes = session.run(["probabilities", "class"],
                                         {"input": np.array(ROWS, np.float32)})
    return probabilities, classes


def test_serving_imports_and_answers_without_torch(
        iris_repository: Path, no_torch: tuple[dict[str, str], Path],
        expected: tuple[np.ndarray, np.ndarray]) -> None:
    env, log = no_torch
    script = textwrap.dedent(f"""
        import json, sys
        import serving, serving.routes.v2, modelrepo
        from serving import create_app

        app = create_app({{"model_repository": {str(iris_repository)!r}, "poll_seconds": 0}})
        client = app.test_client()
        reply = client.post("/predict", data=json.dumps({{"instances": {ROWS!r}}}))
        assert reply.status_code == 200, reply.data
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {TRAINING_ONLY!r})
        assert not loaded, loaded
        print(json.dumps(reply.get_json()))
        try:
            import torch
        except ImportError as exc:  # the stand-in works: torch really is unavailable here
            assert "not available in the serving environment" in str(exc), exc
        else:
            raise AssertionError("torch was importable")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, **env}, timeout=120)
    assert result.returncode == 0, result.stderr
    # The script's own probe is the only import attempt: serving never tried.
    assert attempts(log).count(">>> import ") == 1, attempts(log)
    assert ">>> import torch\n" in attempts(log), attempts(log)
    answer = json.loads(result.stdout.splitlines()[-1])
    probabilities, classes = expected
    served = np.array([p["probabilities"] for p in answer["predictions"]], np.float32)
    np.testing.assert_array_equal(served, probabilities)
    assert [p["class"] for p in answer["predictions"]] == classes.tolist()


def test_gunicorn_serves_without_torch(iris_repository: Path, tmp_path: Path,
                                       no_torch: tuple[dict[str, str], Path],
                                       expected: tuple[np.ndarray, np.ndarray]) -> None:
    env, log = no_torch
    srv = start_server(iris_repository, tmp_path, workers=1, env=env,
                       ready_path="/v2/health/ready")
    probabilities, classes = expected
    try:
        request = urllib.request.Request(
            srv.url + "/predict", data=json.dumps({"instances": ROWS}).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        served = np.array([p["probabilities"] for p in answer["predictions"]], np.float32)
        np.testing.assert_array_equal(served, probabilities)
        assert [p["class"] for p in answer["predictions"]] == classes.tolist()

        infer = {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32",
                             "data": ROWS}]}
        request = urllib.request.Request(srv.url + "/v2/models/iris/infer",
                                         data=json.dumps(infer).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        outputs = {o["name"]: o["data"] for o in answer["outputs"]}
        np.testing.assert_array_equal(np.array(outputs["probabilities"], np.float32),
                                      probabilities.reshape(-1))
        assert outputs["class"] == classes.tolist()
    finally:
        assert srv.stop() == 0, srv.log()
    assert attempts(log) == "", attempts(log)
    assert "Traceback" not in srv.log()
