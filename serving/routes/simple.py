"""``POST /predict``: the default model, TF-Serving-style ``{"instances": [...]}``."""

from __future__ import annotations

from flask import Blueprint, Response, request

from serving.routes.inference import Inference


def blueprint(inference: Inference) -> Blueprint:
    bp = Blueprint("simple", __name__)

    @bp.post("/predict")
    def predict() -> Response:
        body, headers = inference.predict(request.environ)
        return Response(body, headers=headers)

    return bp
