"""The FastAPI application: `create_app()` wires settings, database, stores, models and routes.

Heavy objects (database engine, model runtime, log writer, store clients) are created in the
lifespan and held on `app.state`, never at import time.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.inputs import BodyTooLargeError, max_body_bytes
from api.log_writer import LogWriter
from api.metrics import Metrics
from api.model_manager import LoadedModel, ModelManager
from api.routes import auth, health, logs, model_versions, monitoring, predict, products, stats, ui, users
from api.security import hash_password
from config import Settings, get_settings
from db.products import list_categories
from db.seed import ensure_first_admin
from db.session import make_engine, make_session_factory, session_scope
from store.blob import open_blob_store
from store.cache import ModelCache
from store.models import open_model_store

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    engine = make_engine(settings.DATABASE_URL)
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    with session_scope(app.state.session_factory) as session:
        ensure_first_admin(
            session=session,
            username=settings.FIRST_ADMIN_USERNAME,
            password=settings.FIRST_ADMIN_PASSWORD,
            hash_password=hash_password,
        )
        app.state.categories = list_categories(session=session)
    app.state.image_store = open_blob_store(settings.IMAGE_STORE_URI)

    writer = LogWriter(
        app.state.session_factory,
        batch_size=settings.LOG_BATCH_SIZE,
        flush_seconds=settings.LOG_FLUSH_SECONDS,
        max_queue=settings.LOG_QUEUE_MAX,
        spill_path=settings.MODEL_CACHE_DIR.parent / "prediction-logs.spill.jsonl",
    )
    writer.start()
    app.state.log_writer = writer
    metrics.track_log_writer(lambda: writer.depth, lambda: writer.failures)

    def on_change(loaded: LoadedModel) -> None:
        metrics.set_model_version(loaded.version)

    app.state.model_store = open_model_store(settings.MODEL_STORE_URI)
    manager = ModelManager(
        ModelCache(app.state.model_store, settings.MODEL_CACHE_DIR),
        poll_seconds=settings.MODEL_POLL_SECONDS,
        on_change=on_change,
        on_reload=lambda result: metrics.model_reloads.labels(result).inc(),
    )
    app.state.models = manager
    manager.start()
    try:
        yield
    finally:
        manager.stop()
        writer.stop()
        engine.dispose()


class BodySizeLimit:
    """Refuse bodies over a limit: early from Content-Length, or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"detail": f"Request body over {self.max_bytes} bytes"}, status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLargeError
            return message

        await self.app(scope, limited_receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; `settings` defaults to the environment's."""
    settings = settings or get_settings()
    app = FastAPI(
        title="Rakuten product-type classifier",
        version="1.0.0",
        description="Ranked product-type recommendations for Rakuten France listings.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics = Metrics()

    @app.middleware("http")
    async def request_context(request: Request, call_next):  # type: ignore[no-untyped-def]
        request.state.request_id = request.headers.get("X-Request-ID") or str(uuid.uuid4())
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, request.method, str(response.status_code)).inc()
        metrics.request_latency.labels(path, request.method).observe(time.perf_counter() - started)
        response.headers["X-Request-ID"] = request.state.request_id
        return response

    @app.exception_handler(BodyTooLargeError)
    async def body_too_large(request: Request, exc: BodyTooLargeError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"Request body over {max_body_bytes(settings)} bytes"}, status_code=413
        )

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        # A 500 is always a bug: log it with the request id the client saw.
        request_id = getattr(request.state, "request_id", None)
        logger.exception(
            "unhandled error on %s %s (request %s)", request.method, request.url.path, request_id
        )
        return JSONResponse({"detail": "Internal server error", "request_id": request_id}, status_code=500)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes(settings))
    for module in (health, auth, users, predict, logs, products, model_versions, monitoring, stats, ui):
        app.include_router(module.router)
    app.mount("/static", ui.static_files(), name="static")
    return app
