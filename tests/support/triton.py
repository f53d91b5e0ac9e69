"""The unmodified tritonclient, as the tests ask it: rows in, both outputs back."""

from __future__ import annotations

import numpy as np
import tritonclient.http as triton


def infer_outputs(client: triton.InferenceServerClient, name: str, x: np.ndarray,
                  binary: bool) -> tuple[triton.InferInput, np.ndarray, np.ndarray]:
    """Send float32 rows ``x`` (JSON or binary tensor data) to model ``name``; returns the input
    tensor (to ask again) and the answer's probabilities and classes."""
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    result = client.infer(name, [tensor], outputs=[
        triton.InferRequestedOutput("probabilities", binary_data=binary),
        triton.InferRequestedOutput("class", binary_data=binary)])
    return tensor, result.as_numpy("probabilities"), result.as_numpy("class")
