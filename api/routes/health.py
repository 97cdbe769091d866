"""Liveness and readiness."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

router = APIRouter(tags=["health"])
logger = logging.getLogger(__name__)


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
def ready(request: Request) -> JSONResponse:
    """Readiness: the database answers and a model is loaded (`degraded` if it is a fallback)."""
    checks: dict[str, object] = {}
    ok = True
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready", never a 500
        logger.warning("readiness: database unreachable: %s", exc)
        checks["database"] = "unreachable"
        ok = False
    degraded = False
    manager = getattr(request.app.state, "models", None)
    if manager is not None:
        # Anyone may call /ready: no store URIs or local paths in the error texts.
        status = manager.status(redact=True)
        checks["model"] = status
        ok = ok and status.get("version") is not None
        # A fallback model still answers predictions: ready (pulling the pod would leave no
        # model at all), but flagged so that monitoring sees production is not what is served.
        degraded = bool(status.get("fallback"))
    return JSONResponse(
        {"status": "ready" if ok else "not ready", "degraded": degraded, **checks},
        status_code=200 if ok else 503,
    )
