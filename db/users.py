"""Data access for users and the failed-login throttle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.tables import LoginThrottle, User


class UsernameTakenError(Exception):
    """Another user already has this username."""


def get_user_by_username(*, session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def get_user(*, session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def create_user(*, session: Session, username: str, hashed_password: str, role: str = "seller") -> User:
    user = User(username=username, hashed_password=hashed_password, role=role, is_active=True)
    session.add(user)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise UsernameTakenError(username) from exc
    session.refresh(user)
    return user


def list_users(*, session: Session, offset: int = 0, limit: int = 100) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id).offset(offset).limit(limit)))


def set_active(*, session: Session, user: User, active: bool) -> User:
    user.is_active = active
    session.commit()
    session.refresh(user)
    return user


def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes even for timezone-aware columns.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def login_locked_for(*, session: Session, username: str) -> float:
    """Seconds the username is still locked out for (0 when it is not)."""
    row = session.get(LoginThrottle, username)
    locked_until = _aware(row.locked_until) if row else None
    if locked_until is None:
        return 0.0
    return max(0.0, (locked_until - datetime.now(UTC)).total_seconds())


def record_login_failure(*, session: Session, username: str, max_failures: int, lockout_seconds: int) -> None:
    """Count a failure; `max_failures` within the lockout window lock the name for that long."""
    now = datetime.now(UTC)
    row = session.get(LoginThrottle, username)
    if row is None:
        row = LoginThrottle(username=username, failures=0, window_started_at=now)
        session.add(row)
    window_start = _aware(row.window_started_at) or now
    if now - window_start > timedelta(seconds=lockout_seconds):
        row.failures, row.window_started_at = 0, now
    row.failures += 1
    if row.failures >= max_failures:
        row.locked_until = now + timedelta(seconds=lockout_seconds)
        row.failures, row.window_started_at = 0, now
    try:
        session.commit()
    except IntegrityError:  # a concurrent first failure created the row: count it next time
        session.rollback()


def clear_login_failures(*, session: Session, username: str) -> None:
    row = session.get(LoginThrottle, username)
    if row is not None:
        session.delete(row)
        session.commit()
