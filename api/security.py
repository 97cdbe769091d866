"""Password hashing (pwdlib, Argon2) with bounded concurrency, and JWT access tokens (PyJWT)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from config import Settings

ALGORITHM = "HS256"
T = TypeVar("T")
# Clock drift tolerated between API replicas for `iat`.
CLOCK_SKEW_SECONDS = 30


class HashBusyError(Exception):
    """Every hashing slot is taken and the queue is full, or the wait timed out."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("password hashing is saturated")
        self.retry_after = retry_after


class PasswordHasher:
    """Argon2id hashing on `concurrency` dedicated threads, with a bounded queue.

    Each Argon2 computation holds `memory_kib` of memory for its whole duration, so 40
    parallel logins with argon2-cffi's defaults (64 MiB each) took the process past 2 GB.
    Hashes run only on this object's own threads: at most `concurrency` at once, and glibc
    keeps the freed Argon2 blocks in those threads' malloc arenas only (hashing on every
    request thread left one 19 MiB block in each of up to 16 arenas). Up to `max_waiting`
    more callers wait, each at most `wait_seconds`; the others are refused at once
    (HashBusyError: 503 + Retry-After), so logins never hold more than a few worker threads.
    """

    def __init__(
        self, *, memory_kib: int, time_cost: int, concurrency: int, max_waiting: int, wait_seconds: float
    ) -> None:
        # parallelism=1: one core per hash, so `concurrency` hashes use `concurrency` cores.
        self._hash = PasswordHash((Argon2Hasher(memory_cost=memory_kib, time_cost=time_cost, parallelism=1),))
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="argon2")
        self._lock = threading.Lock()
        self._admitted = 0
        self._max_admitted = concurrency + max_waiting
        self._wait_seconds = wait_seconds
        self.concurrency = concurrency
        # Verified against when the user does not exist, so both paths cost the same time.
        self.dummy_hash = self._hash.hash("not-a-real-password-used-for-timing-only")

    def _busy(self) -> HashBusyError:
        return HashBusyError(retry_after=max(1, round(self._wait_seconds)))

    def _release(self, _future: Future[Any]) -> None:
        with self._lock:
            self._admitted -= 1

    def _run(self, function: Callable[..., T], *args: str) -> T:
        with self._lock:
            if self._admitted >= self._max_admitted:
                raise self._busy()
            self._admitted += 1
        # Released when the work ends (or is cancelled), not when the caller stops waiting:
        # the bound holds for work still running after a timeout.
        future = self._pool.submit(function, *args)
        future.add_done_callback(self._release)
        try:
            return future.result(timeout=self._wait_seconds)
        except TimeoutError:
            future.cancel()
            raise self._busy() from None

    def hash(self, password: str) -> str:
        return self._run(self._hash.hash, password)

    def verify(self, password: str, hashed: str) -> bool:
        return self.verify_and_update(password, hashed)[0]

    def verify_and_update(self, password: str, hashed: str) -> tuple[bool, str | None]:
        """Whether `password` matches; and its new hash when `hashed` used older parameters."""
        return self._run(self._verify_and_update, password, hashed)

    def _verify_and_update(self, password: str, hashed: str) -> tuple[bool, str | None]:
        try:
            return self._hash.verify_and_update(password, hashed)
        except Exception:  # an unparseable stored hash is a failed verification, not a crash
            return False, None


@lru_cache(maxsize=8)
def _hasher(
    memory_kib: int, time_cost: int, concurrency: int, max_waiting: int, wait_seconds: float
) -> PasswordHasher:
    return PasswordHasher(
        memory_kib=memory_kib,
        time_cost=time_cost,
        concurrency=concurrency,
        max_waiting=max_waiting,
        wait_seconds=wait_seconds,
    )


def password_hasher(settings: Settings) -> PasswordHasher:
    """The process-wide hasher for these settings: the bound is per process, as memory is."""
    return _hasher(
        settings.PASSWORD_HASH_MEMORY_KIB,
        settings.PASSWORD_HASH_TIME_COST,
        settings.PASSWORD_HASH_CONCURRENCY,
        settings.PASSWORD_HASH_QUEUE,
        settings.PASSWORD_HASH_WAIT_SECONDS,
    )


def create_access_token(
    *, user_id: int, username: str, role: str, token_version: int, secret: str, minutes: int
) -> str:
    now = datetime.now(UTC)
    payload = {
        "sub": str(user_id),
        "username": username,
        "role": role,
        "ver": token_version,
        "iat": now,
        "exp": now + timedelta(minutes=minutes),
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


class TokenError(Exception):
    """The token is missing, malformed, expired, tampered or uses another algorithm."""


def decode_access_token(token: str, *, secret: str, max_minutes: int) -> dict[str, Any]:
    """The claims of a valid token; a lifetime over `max_minutes` is refused whatever it says."""
    # Only HS256 is accepted: tokens signed with another algorithm (or "none") are refused.
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "iat", "ver"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("Token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError("Could not validate credentials") from exc
    if not str(payload.get("sub", "")).isdigit() or type(payload["ver"]) is not int:
        raise TokenError("Could not validate credentials")
    issued, expires = payload["iat"], payload["exp"]
    # The server decides how long a token lives: a token minted with a longer `exp` (a leaked
    # key, a shortened setting) or dated in the future stops at the configured lifetime.
    if (
        not isinstance(issued, int | float)
        or expires - issued > max_minutes * 60
        or issued > datetime.now(UTC).timestamp() + CLOCK_SKEW_SECONDS
    ):
        raise TokenError("Could not validate credentials")
    return payload
