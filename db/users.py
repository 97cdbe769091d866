"""Data access for users and the login throttle."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.tables import LoginThrottle, User


class UsernameTakenError(Exception):
    """Another user already has this username (compared case-insensitively)."""


def get_user_by_username(*, session: Session, username: str) -> User | None:
    # lower() on both sides, in SQL: the same expression as the unique index, so it is used.
    return session.scalar(select(User).where(func.lower(User.username) == func.lower(username)))


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


def _bump_token_version(session: Session, user: User) -> None:
    # In SQL, so that two concurrent revocations both count.
    session.execute(update(User).where(User.id == user.id).values(token_version=User.token_version + 1))


def set_active(*, session: Session, user: User, active: bool) -> User:
    """Activate or deactivate; deactivation revokes every token the user holds."""
    if user.is_active and not active:
        _bump_token_version(session, user)
    user.is_active = active
    session.commit()
    session.refresh(user)
    return user


def revoke_tokens(*, session: Session, user: User) -> None:
    """Invalidate every token issued to the user so far (logout, everywhere)."""
    _bump_token_version(session, user)
    session.commit()
    session.refresh(user)


def set_password(*, session: Session, user: User, hashed_password: str) -> User:
    """A new password; the tokens issued with the old one stop working."""
    user.hashed_password = hashed_password
    _bump_token_version(session, user)
    session.commit()
    session.refresh(user)
    return user


def upgrade_password_hash(*, session: Session, user: User, hashed_password: str) -> None:
    """The same password hashed with the current parameters (tokens stay valid)."""
    user.hashed_password = hashed_password
    session.commit()


# ---- login throttle ------------------------------------------------------------------------
# Keys: one per client address, one per (username, address) pair and one per username. Names
# are lower-cased like the unique index, so `ADMIN` and `admin` share their counters.


def address_key(address: str) -> str:
    return f"a:{address[:64]}"


def pair_key(username: str, address: str) -> str:
    return f"p:{username.lower()[:64]}|{address[:64]}"


def username_key(username: str) -> str:
    return f"u:{username.lower()[:64]}"


def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes even for timezone-aware columns.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _upsert(session: Session):  # type: ignore[no-untyped-def]
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def reserve_login_attempt(
    *,
    session: Session,
    keys: Sequence[tuple[str, int]],
    window_seconds: int,
    max_lockout_seconds: int,
    now: datetime | None = None,
) -> float:
    """Count one attempt on each `(key, limit)` in order, before any password is checked.

    Each count is one atomic INSERT ... ON CONFLICT DO UPDATE ... RETURNING, so parallel
    attempts never read the same count: with a limit of 5, at most 5 attempts per window get
    through. The attempt over a limit locks the key for `window_seconds`, doubled at each new
    lock while the row lives, up to `max_lockout_seconds`. Stops at the first locked key and
    returns the seconds it stays locked; 0 when every key let the attempt through.
    """
    now = now or datetime.now(UTC)
    window = timedelta(seconds=window_seconds)
    table = LoginThrottle.__table__
    c = table.c
    locked = and_(c.locked_until.is_not(None), c.locked_until > now)
    window_over = c.window_started_at <= now - window
    for key, limit in keys:
        statement = (
            _upsert(session)(table)
            .values(key=key, attempts=1, window_started_at=now, lockouts=0, expires_at=now + window)
            .on_conflict_do_update(
                index_elements=[c.key],
                set_={
                    "attempts": case((locked, c.attempts), (window_over, 1), else_=c.attempts + 1),
                    "window_started_at": case(
                        (locked, c.window_started_at), (window_over, now), else_=c.window_started_at
                    ),
                    "expires_at": case(
                        (locked, c.expires_at), (window_over, now + window), else_=c.expires_at
                    ),
                },
            )
            .returning(c.attempts, c.locked_until, c.lockouts)
        )
        attempts, locked_until, lockouts = session.execute(statement).one()
        session.commit()
        locked_until = _aware(locked_until)
        if locked_until is not None and locked_until > now:
            return (locked_until - now).total_seconds()
        if attempts > limit:
            seconds = min(window_seconds * 2 ** min(lockouts, 20), max_lockout_seconds)
            until = now + timedelta(seconds=seconds)
            # Only the first of several parallel attempts over the limit sets the lock.
            session.execute(
                update(LoginThrottle)
                .where(
                    LoginThrottle.key == key,
                    or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now),
                )
                .values(
                    locked_until=until,
                    lockouts=LoginThrottle.lockouts + 1,
                    attempts=0,
                    window_started_at=now,
                    expires_at=until + window,
                )
            )
            session.commit()
            return float(seconds)
    return 0.0


def release_login_attempt(*, session: Session, keys: Sequence[str]) -> None:
    """Give back the attempt counted on each key (the login succeeded or was never tried)."""
    session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key.in_(keys), LoginThrottle.attempts > 0)
        .values(attempts=LoginThrottle.attempts - 1)
    )
    session.commit()


def clear_login_key(*, session: Session, key: str) -> None:
    """Forget a key's counts and lockouts (its owner proved the password)."""
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))
    session.commit()


def prune_login_throttle(*, session: Session, now: datetime | None = None) -> int:
    """Delete the rows whose window and lock are over; how many went."""
    result = session.execute(
        delete(LoginThrottle).where(LoginThrottle.expires_at < (now or datetime.now(UTC)))
    )
    session.commit()
    return result.rowcount or 0


def login_throttle_rows(*, session: Session) -> int:
    return session.scalar(select(func.count()).select_from(LoginThrottle)) or 0
