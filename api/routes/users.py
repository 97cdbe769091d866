"""The signed-in user, and user administration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, status

from api.deps import AdminUser, ClientAddress, CurrentUser, HasherDep, SessionDep, SettingsDep
from api.login import require_acceptable_password
from api.params import IdPath, Offset, limit_query
from api.routes.auth import hashing_busy, issue_token, verified_user
from api.schemas import PasswordChange, Token, UserOut, UserUpdate
from api.security import HashBusyError
from db import users

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me", response_model=UserOut)
def read_me(user: CurrentUser) -> UserOut:
    """The signed-in user."""
    return UserOut.model_validate(user)


@router.post("/me/password", response_model=Token)
def change_password(
    body: PasswordChange,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    hasher: HasherDep,
    address: ClientAddress,
) -> Token:
    """Change the signed-in user's password; every older token is revoked, a new one returned."""
    # The current password goes through the login throttle: a stolen token is no oracle.
    proven = verified_user(
        session=session,
        settings=settings,
        hasher=hasher,
        username=user.username,
        password=body.current_password,
        address=address,
    )
    if proven is None or proven.id != user.id:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Current password is incorrect")
    require_acceptable_password(
        body.new_password, username=user.username, settings=settings, field="new_password"
    )
    try:
        hashed = hasher.hash(body.new_password)
    except HashBusyError as exc:
        raise hashing_busy(exc) from exc
    return issue_token(users.set_password(session=session, user=user, hashed_password=hashed), settings)


@router.get("", response_model=list[UserOut])
def list_users(
    session: SessionDep,
    _admin: AdminUser,
    offset: Offset = 0,
    limit: Annotated[int, limit_query(500)] = 100,
) -> list[UserOut]:
    """All users (admins only)."""
    return [UserOut.model_validate(u) for u in users.list_users(session=session, offset=offset, limit=limit)]


@router.patch("/{user_id}", response_model=UserOut)
def update_user(user_id: IdPath, body: UserUpdate, session: SessionDep, admin: AdminUser) -> UserOut:
    """Deactivate or reactivate a user (admins only)."""
    user = users.get_user(session=session, user_id=user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "User not found")
    if user.id == admin.id and not body.is_active:
        raise HTTPException(status.HTTP_409_CONFLICT, "Admins cannot deactivate themselves")
    return UserOut.model_validate(users.set_active(session=session, user=user, active=body.is_active))
