"""The signed-in user, and user administration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api.deps import AdminUser, CurrentUser, SessionDep
from api.schemas import UserOut, UserUpdate
from db import users

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me", response_model=UserOut)
def read_me(user: CurrentUser) -> UserOut:
    """The signed-in user."""
    return UserOut.model_validate(user)


@router.get("", response_model=list[UserOut])
def list_users(
    session: SessionDep,
    _admin: AdminUser,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[UserOut]:
    """All users (admins only)."""
    return [UserOut.model_validate(u) for u in users.list_users(session=session, offset=offset, limit=limit)]


@router.patch("/{user_id}", response_model=UserOut)
def update_user(user_id: int, body: UserUpdate, session: SessionDep, admin: AdminUser) -> UserOut:
    """Deactivate or reactivate a user (admins only)."""
    user = users.get_user(session=session, user_id=user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "User not found")
    if user.id == admin.id and not body.is_active:
        raise HTTPException(status.HTTP_409_CONFLICT, "Admins cannot deactivate themselves")
    return UserOut.model_validate(users.set_active(session=session, user=user, active=body.is_active))
