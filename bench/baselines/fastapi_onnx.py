"""The common alternative, for comparison: the same model behind FastAPI + uvicorn + onnxruntime.

Written the way such a service usually is — pydantic request models, a module-level
onnxruntime session, dicts returned for FastAPI to serialize — with the same endpoints and
bodies as softserve's (``/predict`` and V2 JSON ``/v2/models/<name>/infer``), so ``make bench``
can send both servers identical requests. ``make bench`` installs it (the ``bench`` extra:
fastapi, uvicorn[standard]) and runs it, from the repository root, as

    BASELINE_MODEL=<repository>/iris/<version> uvicorn bench.baselines.fastapi_onnx:app \
        --host 127.0.0.1 --port <free port> --workers 2 --log-level warning
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

VERSION_DIR = Path(os.environ.get("BASELINE_MODEL", "artifacts/iris/1"))
metadata = json.loads((VERSION_DIR / "metadata.json").read_text())
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(str(VERSION_DIR / "model.onnx"), options,
                               providers=["CPUExecutionProvider"])
labels = metadata["class_labels"]
app = FastAPI()


class Instances(BaseModel):
    instances: list[list[float]]


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferInput]


@app.post("/predict")
def predict(request: Instances) -> dict:
    x = np.asarray(request.instances, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != 4:
        raise HTTPException(400, "rows must have 4 features")
    probabilities, classes = session.run(None, {"input": x})
    return {"model_name": metadata["name"], "model_version": str(metadata["version"]),
            "predictions": [{"class": int(c), "label": labels[c], "probabilities": p.tolist()}
                            for c, p in zip(classes, probabilities)]}


@app.post("/v2/models/{name}/infer")
def infer(name: str, request: InferRequest) -> dict:
    tensor = request.inputs[0]
    x = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    probabilities, classes = session.run(None, {"input": x})
    return {"model_name": name, "model_version": str(metadata["version"]), "id": request.id,
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": list(probabilities.shape),
                 "data": probabilities.ravel().tolist()},
                {"name": "class", "datatype": "INT64", "shape": list(classes.shape),
                 "data": classes.tolist()}]}


@app.get("/v2/health/live")
def live() -> dict:
    return {"live": True}
