"""Dependencies shared by the routes, declared once as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from api.security import TokenError, decode_access_token
from config import Settings
from db import users
from db.tables import User

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/login", auto_error=False)
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
TokenDep = Annotated[str | None, Depends(oauth2_scheme)]


def authenticate(token: str | None, *, session: Session, settings: Settings) -> User:
    """The active user a bearer token belongs to; 401/403 HTTPException otherwise."""
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Not authenticated", headers=UNAUTHORIZED_HEADERS)
    try:
        payload = decode_access_token(token, secret=settings.SECRET_KEY)
    except TokenError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers=UNAUTHORIZED_HEADERS) from exc
    user = users.get_user(session=session, user_id=int(payload["sub"]))
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "Could not validate credentials", headers=UNAUTHORIZED_HEADERS
        )
    if not user.is_active:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Inactive user")
    return user


def get_current_user(request: Request, session: SessionDep, settings: SettingsDep, token: TokenDep) -> User:
    user = authenticate(token, session=session, settings=settings)
    request.state.user_id = user.id
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_current_admin(user: CurrentUser) -> User:
    if user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Admin privileges required")
    return user


AdminUser = Annotated[User, Depends(get_current_admin)]
