"""torch vs onnxruntime, the way PyTorch's ONNX tests compare: names, shapes/dtypes, values."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.data import iris
from training.export import ParityError, check_parity, export_onnx
from training.train import TrainConfig, fit


@pytest.fixture(scope="module")
def exported() -> tuple[torch.nn.Module, bytes]:
    result = fit(TrainConfig(epochs=300, val_fraction=0.2, standardize=True), iris())
    return result.model, export_onnx(result.model)


@pytest.mark.parametrize("batch", [1, 3, 7, 1000, 100_000])
def test_onnxruntime_matches_torch_on_data_and_wide_rows(exported, batch: int) -> None:
    model, model_bytes = exported
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(batch)
    for rows, atol in ((np.resize(iris().features, (batch, 4)), 1e-5),
                       (rng.uniform(-1e3, 1e3, (batch, 4)).astype(np.float32), 1e-4)):
        x = np.ascontiguousarray(rows, dtype=np.float32)
        probabilities, classes = session.run(["probabilities", "class"], {"input": x})
        with torch.no_grad():
            t_prob, t_cls = (t.numpy() for t in model(torch.from_numpy(x)))
        assert probabilities.shape == (batch, 3) and probabilities.dtype == np.float32
        assert classes.shape == (batch,) and classes.dtype == np.int64
        np.testing.assert_allclose(probabilities, t_prob, rtol=0, atol=atol)
        # Argmax only where the top two are clearly apart: a near tie may round either way.
        top2 = np.sort(t_prob, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 2 * atol
        assert np.array_equal(classes[clear], t_cls[clear])


def test_report_figures(exported) -> None:
    model, model_bytes = exported
    report = check_parity(model, model_bytes, iris().features)
    assert report["passed"] and report["batch_sizes"] == [1, 3, 7, 1000, 100000]
    assert report["rows"]["data"]["max_abs_diff"] < 1e-5
    assert report["rows"]["random_pm1e3"]["max_abs_diff"] < 1e-4
    assert report["rows"]["data"]["rows_compared"] == 1 + 3 + 7 + 1000 + 100000
    assert report["near_ties"] >= 0


def test_a_different_model_fails_parity(exported) -> None:
    model, _ = exported
    other = fit(TrainConfig(epochs=5, seed=9, val_fraction=0.2), iris()).model
    with pytest.raises(ParityError, match="probabilities differ"):
        check_parity(model, export_onnx(other), iris().features)
