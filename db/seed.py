"""Seed data beyond the migrations: the first admin user."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session

from db import users

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
