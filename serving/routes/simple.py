"""``POST /predict``: the default model, TF-Serving-style ``{"instances": [...]}``."""

from __future__ import annotations

from flask import Blueprint, Response

from serving import codecs
from serving.config import PREFIX, Config
from serving.errors import ModelNotFound
from serving.model import LoadedModel
from serving.repository import ModelRepository
from serving.routes import answer, request_body, resolve


def default_model_name(config: Config, repository: ModelRepository) -> str:
    """The model behind /predict. Raises ModelNotFound when there is none or no single one."""
    if config.default_model:
        return config.default_model
    names = list(repository.models)
    if len(names) == 1:
        return names[0]
    if not names:
        raise ModelNotFound(f"no model in the repository {config.model_repository}")
    raise ModelNotFound(f"several models are served ({', '.join(names)}): set "
                        f"{PREFIX}DEFAULT_MODEL to choose the one behind /predict, or use "
                        "/v1/models/<name>:predict")


def predict_response(model: LoadedModel, body: bytes, max_rows: int) -> Response:
    """The simple/V1 answer for a body of instances. Raises BadRequest, PayloadTooLarge."""
    return answer(
        model,
        lambda: (codecs.decode_instances(body, model.feature_names, max_rows), None),
        lambda probabilities, classes, _: Response(
            codecs.encode_predictions(model.name, model.version, probabilities, classes,
                                      model.class_labels),
            mimetype=codecs.JSON_CONTENT_TYPE))


def blueprint(config: Config, repository: ModelRepository) -> Blueprint:
    bp = Blueprint("simple", __name__)

    @bp.post("/predict")
    def predict() -> Response:
        model = resolve(repository, default_model_name(config, repository))
        return predict_response(model, request_body(config.max_body_bytes), config.max_batch_rows)

    return bp
