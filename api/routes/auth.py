"""Login and registration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm

from api.deps import AdminUser, SessionDep, SettingsDep
from api.schemas import Token, UserCreate, UserOut
from api.security import DUMMY_HASH, create_access_token, hash_password, verify_password
from db import users

router = APIRouter(tags=["auth"])

BAD_CREDENTIALS = "Incorrect username or password"


@router.post("/login", response_model=Token)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], session: SessionDep, settings: SettingsDep
) -> Token:
    """Exchange a username and password for a bearer token."""
    username = form.username.strip()
    locked = users.login_locked_for(session=session, username=username)
    if locked > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "Too many failed login attempts; try again later",
            headers={"Retry-After": str(int(locked) + 1)},
        )
    user = users.get_user_by_username(session=session, username=username)
    # Verify a password even when the user does not exist, so that the response time
    # does not reveal which usernames exist.
    valid = verify_password(form.password, user.hashed_password if user else DUMMY_HASH)
    if user is None or not valid:
        users.record_login_failure(
            session=session,
            username=username,
            max_failures=settings.LOGIN_MAX_FAILURES,
            lockout_seconds=settings.LOGIN_LOCKOUT_SECONDS,
        )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, BAD_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"}
        )
    if not user.is_active:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Inactive user")
    users.clear_login_failures(session=session, username=username)
    token = create_access_token(
        user_id=user.id,
        username=user.username,
        role=user.role,
        secret=settings.SECRET_KEY,
        minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES,
    )
    return Token(access_token=token, expires_in=settings.ACCESS_TOKEN_EXPIRE_MINUTES * 60, role=user.role)


@router.post("/register", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def register(body: UserCreate, session: SessionDep, _admin: AdminUser) -> UserOut:
    """Create a seller or an admin (admins only)."""
    try:
        user = users.create_user(
            session=session,
            username=body.username,
            hashed_password=hash_password(body.password),
            role=body.role,
        )
    except users.UsernameTakenError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, "Username already registered") from exc
    return UserOut.model_validate(user)
