"""Login, logout and registration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy.orm import Session

from api.deps import AdminUser, ClientAddress, CurrentUser, HasherDep, SessionDep, SettingsDep
from api.login import LoginThrottled, check_password, require_acceptable_password
from api.schemas import Token, UserCreate, UserOut
from api.security import HashBusyError, PasswordHasher, create_access_token
from config import Settings
from db import users
from db.tables import User

router = APIRouter(tags=["auth"])

BAD_CREDENTIALS = "Incorrect username or password"


def throttled(exc: LoginThrottled) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        "Too many failed login attempts; try again later",
        headers={"Retry-After": str(int(exc.retry_after) + 1)},
    )


def hashing_busy(exc: HashBusyError) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "Too many password checks at once; retry shortly",
        headers={"Retry-After": str(exc.retry_after)},
    )


def issue_token(user: User, settings: Settings) -> Token:
    token = create_access_token(
        user_id=user.id,
        username=user.username,
        role=user.role,
        token_version=user.token_version,
        secret=settings.SECRET_KEY,
        minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES,
    )
    return Token(access_token=token, expires_in=settings.ACCESS_TOKEN_EXPIRE_MINUTES * 60, role=user.role)


def verified_user(
    *,
    session: Session,
    settings: Settings,
    hasher: PasswordHasher,
    username: str,
    password: str,
    address: str,
) -> User | None:
    """The user whose password this is, through the login throttle (429/503 HTTPException)."""
    try:
        return check_password(
            session=session,
            settings=settings,
            hasher=hasher,
            username=username,
            password=password,
            address=address,
        )
    except LoginThrottled as exc:
        raise throttled(exc) from exc
    except HashBusyError as exc:
        raise hashing_busy(exc) from exc


@router.post("/login", response_model=Token)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
    hasher: HasherDep,
    address: ClientAddress,
) -> Token:
    """Exchange a username and password for a bearer token."""
    user = verified_user(
        session=session,
        settings=settings,
        hasher=hasher,
        username=form.username,
        password=form.password,
        address=address,
    )
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, BAD_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"}
        )
    if not user.is_active:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Inactive user")
    return issue_token(user, settings)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(user: CurrentUser, session: SessionDep) -> Response:
    """Revoke every token of the signed-in user (signs out everywhere)."""
    users.revoke_tokens(session=session, user=user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/register", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def register(
    body: UserCreate, session: SessionDep, settings: SettingsDep, hasher: HasherDep, _admin: AdminUser
) -> UserOut:
    """Create a seller or an admin (admins only)."""
    require_acceptable_password(body.password, username=body.username, settings=settings, field="password")
    try:
        hashed = hasher.hash(body.password)
    except HashBusyError as exc:
        raise hashing_busy(exc) from exc
    try:
        user = users.create_user(
            session=session, username=body.username, hashed_password=hashed, role=body.role
        )
    except users.UsernameTakenError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, "Username already registered") from exc
    return UserOut.model_validate(user)
