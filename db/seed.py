"""Seed data beyond the migrations: the first admin user, and the production check of admins."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import users
from db.tables import User

logger = logging.getLogger(__name__)


def ensure_first_admin(
    *, session: Session, username: str, password: str, hash_password: Callable[[str], str]
) -> bool:
    """Create the first admin if no user has that name; True when one was created."""
    if users.get_user_by_username(session=session, username=username) is not None:
        return False
    try:
        users.create_user(
            session=session, username=username, hashed_password=hash_password(password), role="admin"
        )
    except users.UsernameTakenError:  # another worker created it at the same moment
        return False
    logger.info("created the first admin user %r", username)
    return True


class PlaceholderPasswordError(RuntimeError):
    """An active admin still signs in with a development or documentation password."""


def refuse_placeholder_admin_passwords(
    *, session: Session, placeholders: Iterable[str], verify_password: Callable[[str, str], bool]
) -> None:
    """Raise when an active admin's stored hash matches a known placeholder password.

    FIRST_ADMIN_PASSWORD is only used to create the admin: a database seeded in development
    (`admin/changethis`) would otherwise keep that password in production. Costs one Argon2
    verification per active admin and candidate, at startup only.
    """
    weak = []
    for admin in session.scalars(select(User).where(User.role == "admin", User.is_active.is_(True))):
        candidates = {*placeholders, admin.username, admin.username.lower()}
        if any(verify_password(candidate, admin.hashed_password) for candidate in candidates):
            weak.append(admin.username)
    if weak:
        raise PlaceholderPasswordError(
            "refusing to start with APP_ENV=production: active admin(s) "
            + ", ".join(repr(name) for name in weak)
            + " still use a development or placeholder password; change it (POST /users/me/password"
            " in development) or deactivate the account"
        )
