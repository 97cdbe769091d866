"""The FastAPI application: `create_app()` wires settings, database, stores, models and routes.

Heavy objects (database engine, model runtime, log writer, store clients) are created in the
lifespan and held on `app.state`, never at import time.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from api import model_manager
from api.body_guard import RequestBodyGuard
from api.deps import RateLimitExceededError, database_unavailable
from api.inputs import (
    BODY_TIMEOUT_MESSAGE,
    BodyReadTimeoutError,
    BodyTooLargeError,
    InputError,
    make_decode_limiter,
    max_body_bytes,
)
from api.log_writer import LogWriter
from api.login import refuse_placeholder_admins_in_production
from api.metrics import Metrics
from api.model_manager import LoadedModel, ModelManager
from api.rate_limit import RateLimiter
from api.retention import TitleRetention
from api.routes import (
    auth,
    batch,
    health,
    logs,
    model_versions,
    monitoring,
    predict,
    products,
    stats,
    ui,
    users,
)
from api.schemas import REQUEST_ID_PATTERN
from api.security import password_hasher
from api.shadow import ShadowRunner
from api.user_cache import ActiveUserCache
from config import Settings, get_settings
from db.products import list_categories
from db.seed import ensure_first_admin
from db.session import is_unreachable, make_engine, make_session_factory, session_scope
from store.blob import open_blob_store
from store.model_cache import ModelCache
from store.model_store import open_model_store

logger = logging.getLogger(__name__)
REQUEST_ID = re.compile(REQUEST_ID_PATTERN)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    engine = make_engine(settings.DATABASE_URL, connect_timeout=settings.DB_CONNECT_TIMEOUT_SECONDS)
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    with session_scope(app.state.session_factory) as session:
        ensure_first_admin(
            session=session,
            username=settings.FIRST_ADMIN_USERNAME,
            password=settings.FIRST_ADMIN_PASSWORD,
            hash_password=password_hasher(settings).hash,
        )
        refuse_placeholder_admins_in_production(session=session, settings=settings)
        app.state.categories = list_categories(session=session)
    app.state.image_store = open_blob_store(settings.IMAGE_STORE_URI)

    app.state.user_cache = ActiveUserCache(settings.USER_CACHE_SECONDS)
    app.state.rate_limiter = RateLimiter(
        settings.RATE_LIMIT_STORAGE_URI,
        {"predict": settings.RATE_LIMIT_PREDICT, "products": settings.RATE_LIMIT_PRODUCTS},
    )

    writer = LogWriter(
        app.state.session_factory,
        batch_size=settings.LOG_BATCH_SIZE,
        flush_seconds=settings.LOG_FLUSH_SECONDS,
        max_queue=settings.LOG_QUEUE_MAX,
        spill_dir=settings.LOG_SPILL_DIR,
        drain_seconds=settings.LOG_DRAIN_SECONDS,
        on_dead_letter=metrics.log_dead_letters.inc,
    )
    writer.start()
    app.state.log_writer = writer
    metrics.track_log_writer(writer)
    metrics.track_pipelines(app.state.session_factory)

    def on_change(loaded: LoadedModel) -> None:
        metrics.set_model_version(loaded.version)
        metrics.model_fallback.set(1 if loaded.fallback_reason else 0)

    app.state.model_store = open_model_store(settings.MODEL_STORE_URI)
    manager_cache = ModelCache(app.state.model_store, settings.MODEL_CACHE_DIR)
    manager = ModelManager(
        manager_cache,
        poll_seconds=settings.MODEL_POLL_SECONDS,
        fallback_tries=settings.MODEL_FALLBACK_TRIES,
        on_change=on_change,
        on_reload=lambda result: metrics.model_reloads.labels(result).inc(),
    )
    app.state.models = manager
    manager.start()
    shadow = ShadowRunner(
        manager_cache,
        app.state.session_factory,
        share=settings.SHADOW_SHARE,
        poll_seconds=settings.MODEL_POLL_SECONDS,
        loader=model_manager.load_runtime,
    )
    app.state.shadow = shadow
    shadow.start()
    retention = TitleRetention(app.state.session_factory, settings)
    retention.start()
    try:
        yield
    finally:
        retention.stop()
        shadow.stop()
        manager.stop()
        writer.stop()
        engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; `settings` defaults to the environment's."""
    settings = settings or get_settings()
    docs = settings.API_DOCS_ENABLED
    # Swagger UI and ReDoc from the fastapi-offline package's own copies: /docs works offline.
    app = (FastAPIOffline if docs else FastAPI)(
        title="Rakuten product-type classifier",
        version="1.0.0",
        description="Ranked product-type recommendations for Rakuten France listings.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    app.state.metrics = metrics = Metrics()
    app.state.decode_limiter = make_decode_limiter(settings)

    @app.middleware("http")
    async def request_context(request: Request, call_next):  # type: ignore[no-untyped-def]
        # The client's id is kept only when well-formed: it becomes the log row's unique key.
        sent = request.headers.get("X-Request-ID", "")
        request.state.request_id = sent if REQUEST_ID.fullmatch(sent) else str(uuid.uuid4())
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

    @app.exception_handler(RateLimitExceededError)
    async def rate_limited(request: Request, exc: RateLimitExceededError) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc), "request_id": request.state.request_id},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> JSONResponse:
        # What the client sent cannot be classified (or no model is loaded yet: 503).
        return JSONResponse(
            {"detail": exc.detail, "request_id": request.state.request_id}, status_code=exc.status_code
        )

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # Handled here rather than by the catch-all below, so that the connection is kept
        # alive; the message is SQLAlchemy's first line, parameters hidden (db.session).
        request_id = getattr(request.state, "request_id", None)
        if is_unreachable(exc):
            logger.warning("database unreachable on %s %s: %s", request.method, request.url.path, exc)
            return database_unavailable(settings)
        logger.error(
            "database error on %s %s (request %s): %s", request.method, request.url.path, request_id, exc
        )
        return JSONResponse({"detail": "Internal server error", "request_id": request_id}, status_code=500)

    @app.exception_handler(BodyReadTimeoutError)
    async def body_read_timeout(request: Request, exc: BodyReadTimeoutError) -> JSONResponse:
        return JSONResponse(
            {"detail": BODY_TIMEOUT_MESSAGE}, status_code=408, headers={"Connection": "close"}
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
    def prometheus_metrics(request: Request) -> Response:
        # Public in development; in production only with METRICS_TOKEN (Prometheus sends it
        # as a bearer token), and not found at all while none is configured.
        expected = settings.METRICS_TOKEN
        if expected or settings.APP_ENV == "production":
            sent = request.headers.get("authorization", "")
            if not expected or not hmac.compare_digest(sent.encode(), f"Bearer {expected}".encode()):
                return JSONResponse({"detail": "Not Found"}, status_code=404)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(
        RequestBodyGuard,
        max_bytes=max_body_bytes(settings),
        drain_bytes=settings.BODY_DRAIN_MAX_BYTES,
        idle_timeout=settings.BODY_IDLE_TIMEOUT_SECONDS,
        total_timeout=settings.BODY_READ_TIMEOUT_SECONDS,
    )
    for module in (
        health,
        auth,
        users,
        batch,
        predict,
        logs,
        products,
        model_versions,
        monitoring,
        stats,
        ui,
    ):
        app.include_router(module.router)
    app.mount("/static", ui.static_files(), name="static")
    return app
