"""``POST /predict``: the default model, TF-Serving-style ``{"instances": [...]}``."""

from __future__ import annotations

from flask import Blueprint, Response, request

from serving import codecs
from serving.config import Config, PREFIX
from serving.errors import ModelNotFound
from serving.model import LoadedModel
from serving.repository import ModelRepository


def default_model(config: Config, repository: ModelRepository) -> LoadedModel:
    """The model behind /predict. Raises ModelNotFound or ModelNotReady."""
    if config.default_model:
        return repository.get(config.default_model)
    names = list(repository.models)
    if len(names) == 1:
        return repository.get(names[0])
    if not names:
        raise ModelNotFound(f"no model in the repository {config.model_repository}")
    raise ModelNotFound(f"several models are served ({', '.join(names)}): set "
                        f"{PREFIX}DEFAULT_MODEL to choose the one behind /predict, or use "
                        "/v1/models/<name>:predict")


def predict_response(model: LoadedModel, body: bytes, max_rows: int) -> Response:
    rows = codecs.decode_instances(body, model.feature_names, max_rows)
    probabilities, classes = model.predict(rows)
    return Response(codecs.encode_predictions(model.name, model.version, probabilities, classes,
                                              model.class_labels),
                    mimetype="application/json")


def blueprint(config: Config, repository: ModelRepository) -> Blueprint:
    bp = Blueprint("simple", __name__)

    @bp.post("/predict")
    def predict() -> Response:
        model = default_model(config, repository)
        return predict_response(model, request.get_data(cache=False), config.max_batch_rows)

    return bp
