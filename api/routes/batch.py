"""`POST /predict/batch`: many listings in one call, the models run once per kind on the batch.

Each item is read and checked like one `/predict` request (same text limits, same image
decoding) and answered in the same shape; an item that cannot be classified gets its own
error (`status_code`, `detail`) without failing the others. Every item is logged as its own
row, with its own `request_id` (a seller confirms a product from it as from `/predict`).

Limits: at most `BATCH_MAX_ITEMS` items per call (422 beyond); the whole body within the
same size limit as one `/predict` request (413); each item counts as one request against
`RATE_LIMIT_PREDICT`, and a batch larger than what is left of the allowance is refused whole
(429 with `Retry-After`), so that bulk use and single requests share one budget.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from api.deps import AuthenticatedUser, check_rate_limit
from api.inputs import (
    DEFAULT_TOP_K,
    MAX_TOP_K,
    MIN_TOP_K,
    InputError,
    PredictInput,
    _validate,
    check_text_length,
    decode_base64_image,
    decode_upload,
    read_fields,
)
from api.model_manager import LoadedModel
from api.prediction_log import PredictionRecord, publish
from api.routes.predict import loaded_model, ranked_answer, typed_title
from api.schemas import BatchItemError, BatchResponse, PredictResponse

router = APIRouter(tags=["predict"])


class BatchItem(BaseModel):
    """One listing of a batch: the fields of a JSON `/predict` request but `top_k`."""

    model_config = ConfigDict(extra="forbid")

    designation: str | None = None
    description: str | None = None
    image_base64: str | None = Field(default=None, description="The image file, base64-encoded")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[BatchItem] = Field(min_length=1, description="At most BATCH_MAX_ITEMS (default 100)")
    top_k: int = Field(default=DEFAULT_TOP_K, ge=MIN_TOP_K, le=MAX_TOP_K)


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` references inlined (OpenAPI has no `$defs`)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.removeprefix("#/$defs/")]))
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(schema)


BATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, expired or invalid token"},
    413: {"description": "Body over the size limit of one /predict request"},
    415: {"description": "Not application/json"},
    422: {"description": "Malformed batch, no items, or more than BATCH_MAX_ITEMS"},
    429: {"description": "The items exceed what is left of RATE_LIMIT_PREDICT; see Retry-After"},
    503: {"description": "No model loaded yet"},
}


@dataclass
class _Item:
    request_id: str
    fields: dict[str, Any]
    inputs: PredictInput | None = None
    error: InputError | None = None
    log: dict[str, Any] = field(default_factory=dict)


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    responses=BATCH_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inlined(BatchRequest.model_json_schema())}},
        }
    },
)
async def predict_batch(request: Request, user: AuthenticatedUser) -> BatchResponse:
    """Recommend product types for many listings at once (each answered as by /predict)."""
    state = request.app.state
    settings = state.settings
    started = time.perf_counter()
    content_type, fields = await read_fields(request, settings, BatchRequest, set())
    if content_type != "application/json":
        raise InputError(415, "Send the batch as application/json", "unsupported_media_type")
    items = fields.get("items") or []
    if len(items) > settings.BATCH_MAX_ITEMS:
        raise InputError(422, f"items: at most {settings.BATCH_MAX_ITEMS} items per batch")
    check_rate_limit(request, "predict", user, cost=len(items))
    loaded = loaded_model(state)

    top_k = fields["top_k"]
    batch = [_Item(str(uuid.uuid4()), item) for item in items]
    for item in batch:
        await _read_item(item, request, top_k)

    model_started = time.perf_counter()
    answers = await run_in_threadpool(_run_models, loaded, [i for i in batch if i.inputs is not None])
    per_item_ms = round((time.perf_counter() - model_started) * 1000 / max(1, len(answers)), 3)
    out: list[PredictResponse | BatchItemError] = []
    for item in batch:
        record = PredictionRecord(
            item.request_id,
            user_id=user.id,
            inputs=item.inputs.summary if item.inputs else {"batch": True},
            designation=typed_title(item.fields.get("designation"), settings),
        )
        if item.error is not None:
            exc = item.error
            record.failed(exc.status_code, exc.outcome, exc.detail)
            out.append(
                BatchItemError(request_id=item.request_id, status_code=exc.status_code, detail=exc.detail)
            )
        else:
            kind, probs, suggestion_idx = answers[item.request_id]
            answer, logged = ranked_answer(
                loaded, kind, probs, suggestion_idx, top_k=top_k, names=state.categories
            )
            record.answered(logged)
            record.latency_ms = per_item_ms
            out.append(PredictResponse(request_id=item.request_id, **answer, latency_ms=per_item_ms))
        publish(state, record)
    failed = sum(1 for item in batch if item.error is not None)
    return BatchResponse(
        items=out,
        answered=len(batch) - failed,
        failed=failed,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
    )


async def _read_item(item: _Item, request: Request, top_k: int) -> None:
    """Check and decode one item as `/predict` would; an InputError is kept on the item."""
    settings = request.app.state.settings
    fields = {
        "designation": item.fields.get("designation") or "",
        "description": item.fields.get("description") or "",
        "top_k": top_k,
    }
    try:
        for name in ("designation", "description"):
            check_text_length(name, fields[name], settings)
        encoded = (item.fields.get("image_base64") or "").strip()
        image = None
        if encoded:
            fields["image_bytes"] = decode_base64_image(encoded, settings)
            image = await decode_upload(fields["image_bytes"], settings, request.app.state.decode_limiter)
        item.inputs = _validate(fields, settings, "application/json", image)
    except InputError as exc:
        item.error = exc


def _run_models(loaded: LoadedModel, items: list[_Item]) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """One model call per kind for the whole batch; kind, probabilities and set per request id."""
    runtime = loaded.runtime
    answers: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    for kind in ("text", "image", "fusion"):
        group = [item for item in items if item.inputs is not None and item.inputs.kind == kind]
        if not group:
            continue
        texts = None if kind == "image" else [item.inputs.text for item in group]  # type: ignore[union-attr]
        images = None if kind == "text" else [item.inputs.image for item in group]  # type: ignore[union-attr]
        probs = runtime.predict_batch(kind, texts, images)
        for item, row in zip(group, probs, strict=True):
            answers[item.request_id] = (kind, row, runtime.suggestion_set(kind, row))
    return answers
