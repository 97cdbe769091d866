"""Password checks behind the login throttle, and the password policy, for the auth routes."""

from __future__ import annotations

import threading
import time

from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from api.security import HashBusyError, PasswordHasher, password_hasher
from config import PLACEHOLDER_SECRETS, Settings
from config.passwords import PLACEHOLDER_PASSWORDS, password_problem
from db import seed, users
from db.tables import User

USERNAME_MAX_CHARS = 64
# Expired throttle rows are deleted at most this often per process (one indexed DELETE).
PRUNE_EVERY_SECONDS = 10.0

_prune_lock = threading.Lock()
_last_prune = 0.0


class LoginThrottled(Exception):
    """Too many attempts for this address, username or pair; retry after `retry_after` s."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many login attempts")
        self.retry_after = retry_after


def _prune(session: Session) -> None:
    global _last_prune
    with _prune_lock:
        if time.monotonic() - _last_prune < PRUNE_EVERY_SECONDS:
            return
        _last_prune = time.monotonic()
    users.prune_login_throttle(session=session)


def check_password(
    *,
    session: Session,
    settings: Settings,
    hasher: PasswordHasher,
    username: str,
    password: str,
    address: str,
) -> User | None:
    """The user `username` names if `password` is theirs, else None.

    The attempt is counted on its client address, its (username, address) pair and its
    username before any hash is computed, so a key over its limit costs no Argon2 work and
    parallel guesses cannot overtake the count. Raises LoginThrottled when a key is locked and
    HashBusyError when hashing is saturated.
    """
    name = username.strip()
    # No account can have such a name (the schema allows 64 characters, no NUL): a failed
    # login without a lookup or a hash, counted against the address only.
    impossible = not name or len(name) > USERNAME_MAX_CHARS or "\x00" in name
    keys = [(users.address_key(address), settings.LOGIN_ADDRESS_MAX_FAILURES)]
    if not impossible:
        keys += [
            (users.pair_key(name, address), settings.LOGIN_MAX_FAILURES),
            (users.username_key(name), settings.LOGIN_USERNAME_MAX_FAILURES),
        ]
    wait = users.reserve_login_attempt(
        session=session,
        keys=keys,
        window_seconds=settings.LOGIN_LOCKOUT_SECONDS,
        max_lockout_seconds=settings.LOGIN_LOCKOUT_MAX_SECONDS,
    )
    _prune(session)
    if wait > 0:
        raise LoginThrottled(wait)
    if impossible:
        return None
    user = users.get_user_by_username(session=session, username=name)
    try:
        # Verify a password even when the user does not exist, so that the response time
        # does not reveal which usernames exist.
        valid, new_hash = hasher.verify_and_update(
            password, user.hashed_password if user else hasher.dummy_hash
        )
    except HashBusyError:
        # Never tried: the name gets its attempt back; the address keeps it, so a flood of
        # refused requests still throttles its sender.
        users.release_login_attempt(session=session, keys=[key for key, _ in keys[1:]])
        raise
    if user is None or not valid:
        return None
    users.clear_login_key(session=session, key=users.pair_key(name, address))
    users.release_login_attempt(session=session, keys=[keys[0][0], keys[2][0]])
    if new_hash is not None:  # stored with older Argon2 parameters: upgrade it now
        users.upgrade_password_hash(session=session, user=user, hashed_password=new_hash)
    return user


def require_acceptable_password(password: str, *, username: str, settings: Settings, field: str) -> None:
    """A 422 in FastAPI's validation format when `password` fails the policy."""
    problem = password_problem(
        password,
        username=username,
        min_length=settings.PASSWORD_MIN_LENGTH,
        min_score=settings.PASSWORD_MIN_STRENGTH,
    )
    if problem:
        raise RequestValidationError(
            [{"type": "password_policy", "loc": ("body", field), "msg": problem, "input": None}]
        )


def refuse_placeholder_admins_in_production(*, session: Session, settings: Settings) -> None:
    """At startup in production: refuse to serve while an active admin has a known password."""
    if settings.APP_ENV != "production":
        return
    seed.refuse_placeholder_admin_passwords(
        session=session,
        placeholders={*PLACEHOLDER_PASSWORDS, *PLACEHOLDER_SECRETS} - {""},
        verify_password=password_hasher(settings).verify,
    )
