"""The FastAPI application: `create_app()` wires settings, database and routes.

Heavy objects (database engine, models, log writer) are created in the lifespan and held
on `app.state`, never at import time.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.routes import auth, health, users
from api.security import hash_password
from config import Settings, get_settings
from db.seed import ensure_first_admin
from db.session import make_engine, make_session_factory, session_scope

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
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
    try:
        yield
    finally:
        engine.dispose()


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

    @app.middleware("http")
    async def request_id_header(request: Request, call_next):  # type: ignore[no-untyped-def]
        request.state.request_id = request.headers.get("X-Request-ID") or str(uuid.uuid4())
        response = await call_next(request)
        response.headers["X-Request-ID"] = request.state.request_id
        return response

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        # A 500 is always a bug: log it with the request id the client saw.
        request_id = getattr(request.state, "request_id", None)
        logger.exception(
            "unhandled error on %s %s (request %s)", request.method, request.url.path, request_id
        )
        return JSONResponse({"detail": "Internal server error", "request_id": request_id}, status_code=500)

    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(users.router)
    return app
