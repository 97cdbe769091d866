"""`POST /predict`: ranked product types and a calibrated suggestion set."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from api.deps import AuthenticatedUser, check_rate_limit
from api.inputs import InputError, PredictInput, PredictJSON, parse_predict_request
from api.model_manager import LoadedModel, NoModelError
from api.prediction_log import LoggedPrediction
from api.schemas import PredictResponse

router = APIRouter(tags=["predict"])


MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {
        "designation": {"type": "string", "description": "Product title"},
        "description": {"type": "string", "description": "Product description (HTML allowed)"},
        "image": {
            "type": "string",
            "format": "binary",
            "description": "Product photo (any format PIL reads)",
        },
        "top_k": {"type": "integer", "minimum": 1, "maximum": 27, "default": 5},
    },
}
OPENAPI_EXTRA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": MULTIPART_SCHEMA},
            "application/json": {"schema": PredictJSON.model_json_schema()},
        },
    }
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, expired or invalid token"},
    403: {"description": "Inactive user"},
    413: {"description": "Image or body over the size limit"},
    415: {"description": "Neither multipart/form-data nor application/json"},
    422: {"description": "Nothing usable sent, text too long, unreadable image, bad base64, bad top_k"},
    429: {"description": "Rate limit (RATE_LIMIT_PREDICT) used up; see Retry-After"},
    503: {"description": "No model loaded yet, or the database is unreachable (see Retry-After)"},
}


def run_model(loaded: LoadedModel, inputs: PredictInput) -> tuple[str, np.ndarray, np.ndarray]:
    """Route to the model that fits the inputs; returns kind, probabilities, suggestion indices."""
    kind = inputs.kind
    probs = loaded.runtime.predict(kind, inputs.text, inputs.image)
    return kind, probs, loaded.runtime.suggestion_set(kind, probs)


def typed_title(value: str | None, settings: Any) -> str | None:
    """The title as typed, cut to LOG_TITLE_MAX_CHARS (None when titles are not kept)."""
    limit = settings.LOG_TITLE_MAX_CHARS
    return (value or "")[:limit] or None if limit else None


def ranked_answer(
    loaded: LoadedModel,
    kind: str,
    probs: np.ndarray,
    suggestion_idx: np.ndarray,
    *,
    top_k: int,
    names: dict[int, str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The answer's model fields (ranking, suggestion set) and the log row's, for one product."""
    labels = loaded.runtime.labels
    order = np.argsort(-probs, kind="stable")[:top_k]
    predictions = _recommendations(order, probs, labels, names)
    suggestions = _recommendations(suggestion_idx, probs, labels, names)
    answer = {
        "model": kind,
        "model_version": loaded.version,
        "predictions": predictions,
        "suggestions": suggestions,
    }
    logged = {
        "model_kind": kind,
        "model_version": loaded.version,
        "predictions": [
            {"prdtypecode": p["prdtypecode"], "probability": p["probability"]} for p in predictions
        ],
        "top_prdtypecode": predictions[0]["prdtypecode"],
        "top_probability": predictions[0]["probability"],
        "suggestion_size": len(suggestions),
    }
    return answer, logged


def _recommendations(indices, probs: np.ndarray, labels: list[int], names: dict[int, str]) -> list[dict]:
    return [
        {
            "prdtypecode": labels[i],
            "category": names.get(labels[i], str(labels[i])),
            "probability": round(float(probs[i]), 6),
        }
        for i in indices
    ]


def loaded_model(state: Any) -> LoadedModel:
    """The model being served; a 503 InputError before the first one has loaded."""
    try:
        return state.models.current
    except NoModelError as exc:
        raise InputError(503, "No model is loaded yet; try again shortly", "no_model") from exc


@router.post(
    "/predict", response_model=PredictResponse, openapi_extra=OPENAPI_EXTRA, responses=ERROR_RESPONSES
)
async def predict(request: Request, record: LoggedPrediction, user: AuthenticatedUser) -> PredictResponse:
    """Recommend product types for a title, a description, an image, or any of these."""
    # `record` comes first: it is open while `user` is authenticated, so a 401 is logged too.
    state = request.app.state
    record.user_id = user.id
    check_rate_limit(request, "predict", user)
    inputs = await parse_predict_request(request, state.settings)
    record.inputs = inputs.summary
    record.designation = typed_title(inputs.designation, state.settings)
    loaded = loaded_model(state)
    record.model_version = loaded.version
    model_started = time.perf_counter()
    kind, probs, suggestion_idx = await run_in_threadpool(run_model, loaded, inputs)
    state.metrics.prediction_latency.labels(kind).observe(time.perf_counter() - model_started)
    answer, logged = ranked_answer(
        loaded, kind, probs, suggestion_idx, top_k=inputs.top_k, names=state.categories
    )
    record.answered(logged)
    # The shadowed version, if any, answers too: later, off the request path (api/shadow.py).
    state.shadow.offer(record.request_id, kind, inputs.text, inputs.image)
    return PredictResponse(request_id=record.request_id, **answer, latency_ms=record.elapsed_ms())
