"""`POST /predict`: ranked product types and a calibrated suggestion set."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from api.deps import RateLimitExceededError, authenticate, check_rate_limit, database_unavailable
from api.inputs import InputError, PredictInput, PredictJSON, parse_predict_request
from api.model_manager import LoadedModel, NoModelError
from db.session import is_unreachable

router = APIRouter(tags=["predict"])
logger = logging.getLogger(__name__)


class Recommendation(BaseModel):
    prdtypecode: int
    category: str
    probability: float


class PredictResponse(BaseModel):
    request_id: str
    model: Literal["text", "image", "fusion"]
    model_version: str
    predictions: list[Recommendation]
    suggestions: list[Recommendation]
    latency_ms: float


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


@router.post(
    "/predict", response_model=PredictResponse, openapi_extra=OPENAPI_EXTRA, responses=ERROR_RESPONSES
)
async def predict(request: Request) -> JSONResponse:
    """Recommend product types for a title, a description, an image, or any of these."""
    state = request.app.state
    started = time.perf_counter()
    request_id: str = request.state.request_id
    log: dict[str, Any] = {
        "request_id": request_id,
        "user_id": None,
        "created_at": datetime.now(UTC),
        "inputs": {},
        "predictions": [],
        "designation": None,  # the title as typed (LOG_TITLE_MAX_CHARS; api/retention.py clears it)
    }
    status_code, outcome, error = 500, "error", None
    try:
        token = _bearer_token(request)
        user = await run_in_threadpool(_authenticate, state, token)
        log["user_id"] = user.id
        check_rate_limit(request, "predict", user)
        inputs = await parse_predict_request(request, state.settings)
        log["inputs"] = inputs.summary
        log["designation"] = typed_title(inputs.designation, state.settings)
        try:
            loaded = state.models.current
        except NoModelError as exc:
            raise InputError(503, "No model is loaded yet; try again shortly", "no_model") from exc
        log["model_version"] = loaded.version
        model_started = time.perf_counter()
        kind, probs, suggestion_idx = await run_in_threadpool(run_model, loaded, inputs)
        state.metrics.prediction_latency.labels(kind).observe(time.perf_counter() - model_started)
        answer, logged = ranked_answer(
            loaded, kind, probs, suggestion_idx, top_k=inputs.top_k, names=state.categories
        )
        log.update(logged)
        state.metrics.predicted_class.labels(str(logged["top_prdtypecode"])).inc()
        status_code, outcome = 200, "ok"
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return JSONResponse({"request_id": request_id, **answer, "latency_ms": latency_ms})
    except InputError as exc:
        status_code, outcome, error = exc.status_code, exc.outcome, exc.detail
        return JSONResponse({"detail": exc.detail, "request_id": request_id}, status_code=exc.status_code)
    except RateLimitExceededError as exc:
        status_code, outcome, error = 429, "rate_limited", str(exc)
        return JSONResponse(
            {"detail": str(exc), "request_id": request_id},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
        )
    except SQLAlchemyError as exc:
        if not is_unreachable(exc):
            error = f"{type(exc).__name__}"
            raise
        # Only the user lookup touches the database, and no recently seen user matched.
        status_code, outcome, error = 503, "db_unavailable", "database unreachable"
        response = database_unavailable(state.settings)
        response.headers["X-Request-ID"] = request_id
        return response
    except HTTPException as exc:  # from authentication
        status_code, error = exc.status_code, str(exc.detail)
        outcome = "unauthorized" if exc.status_code == 401 else "forbidden"
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        log.update(
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            outcome=outcome,
            status_code=status_code,
            error=error,
        )
        state.metrics.predictions.labels(log.get("model_kind") or "none", outcome).inc()
        state.log_writer.submit(log)


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _authenticate(state: Any, token: str | None) -> Any:
    with state.session_factory() as session:
        return authenticate(token, session=session, settings=state.settings, user_cache=state.user_cache)
