"""Dependencies shared by the routes, declared once as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from api.security import PasswordHasher, TokenError, decode_access_token, password_hasher
from api.user_cache import ActiveUserCache
from config import Settings
from db import users
from db.session import is_unreachable
from db.tables import User

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/login", auto_error=False)
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


def get_password_hasher(settings: Annotated[Settings, Depends(get_settings_dep)]) -> PasswordHasher:
    return password_hasher(settings)


def get_client_address(request: Request) -> str:
    # The peer, or the client named by X-Forwarded-For when the peer is a trusted proxy:
    # uvicorn rewrites `client` itself (proxy_headers, FORWARDED_ALLOW_IPS; api/__main__.py).
    return request.client.host if request.client else "unknown"


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
TokenDep = Annotated[str | None, Depends(oauth2_scheme)]
HasherDep = Annotated[PasswordHasher, Depends(get_password_hasher)]
ClientAddress = Annotated[str, Depends(get_client_address)]


def authenticate(
    token: str | None, *, session: Session, settings: Settings, user_cache: ActiveUserCache | None = None
) -> User:
    """The active user a bearer token belongs to; 401/403 HTTPException otherwise.

    With a `user_cache`, a database outage falls back to a user recently seen active (the
    token itself is still verified); without one, or for anyone else, the outage propagates
    (a 503 from the app's handler).
    """
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Not authenticated", headers=UNAUTHORIZED_HEADERS)
    try:
        payload = decode_access_token(
            token, secret=settings.SECRET_KEY, max_minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES
        )
    except TokenError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers=UNAUTHORIZED_HEADERS) from exc
    from_database = True
    try:
        user = users.get_user(session=session, user_id=int(payload["sub"]))
    except Exception as exc:
        user = user_cache.recall(int(payload["sub"])) if user_cache and is_unreachable(exc) else None
        if user is None:
            raise
        from_database = False  # checked below like any other, but its age is not renewed
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "Could not validate credentials", headers=UNAUTHORIZED_HEADERS
        )
    if not user.is_active:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Inactive user")
    # A version behind the user's: the token was revoked (logout, deactivation, new password).
    if payload["ver"] != user.token_version:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "Token has been revoked", headers=UNAUTHORIZED_HEADERS
        )
    if user_cache is not None and from_database:
        user_cache.remember(user)
    return user


def get_current_user(request: Request, session: SessionDep, settings: SettingsDep, token: TokenDep) -> User:
    user = authenticate(token, session=session, settings=settings)
    request.state.user_id = user.id
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_authenticated_user(request: Request, settings: SettingsDep, token: TokenDep) -> User:
    """The current user, read in a session of its own that is closed at once.

    For routes that read a large body after authenticating: `CurrentUser`'s session would
    hold a pooled connection while a slow client uploads, and a hundred stalled uploads
    would exhaust the pool for everyone. The user returned is detached (read-only use).
    During a database outage a user seen active in the last USER_CACHE_SECONDS is recalled
    from the cache, so that predictions go on (a route that writes still answers 503).
    """
    state = request.app.state
    with state.session_factory() as session:
        user = authenticate(token, session=session, settings=settings, user_cache=state.user_cache)
    request.state.user_id = user.id
    return user


AuthenticatedUser = Annotated[User, Depends(get_authenticated_user)]


def get_current_admin(user: CurrentUser) -> User:
    if user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Admin privileges required")
    return user


AdminUser = Annotated[User, Depends(get_current_admin)]


def database_unavailable(settings: Settings) -> JSONResponse:
    """The answer of a route that needs the database while it is unreachable."""
    return JSONResponse(
        {"detail": "The database is unavailable; try again shortly"},
        status_code=503,
        headers={"Retry-After": str(settings.DB_RETRY_AFTER_SECONDS)},
    )


class RateLimitExceededError(Exception):
    """The user has used up a rate limit; `retry_after` seconds until the next request counts."""

    def __init__(self, name: str, retry_after: int) -> None:
        super().__init__(f"Too many requests to {name}; retry in {retry_after} s")
        self.retry_after = retry_after


def check_rate_limit(request: Request, name: str, user: User, cost: int = 1) -> None:
    """Count `cost` requests of `user` against the limit `name` (RateLimitExceededError beyond it)."""
    retry_after = request.app.state.rate_limiter.hit(name, str(user.id), cost=cost)
    if retry_after is not None:
        raise RateLimitExceededError(name, retry_after)


def rate_limited(name: str):  # type: ignore[no-untyped-def]
    """A dependency that counts the current user's request against the limit `name`."""

    def dependency(request: Request, user: AuthenticatedUser) -> User:
        check_rate_limit(request, name, user)
        return user

    return Depends(dependency)
