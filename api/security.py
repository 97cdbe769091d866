"""Password hashing (pwdlib, Argon2) and JWT access tokens (PyJWT)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from pwdlib import PasswordHash

ALGORITHM = "HS256"

password_hash = PasswordHash.recommended()
# Verified against when the user does not exist, so both paths cost the same time.
DUMMY_HASH = password_hash.hash("not-a-real-password-used-for-timing-only")


def hash_password(password: str) -> str:
    return password_hash.hash(password)


def verify_password(password: str, hashed: str) -> bool:
    try:
        return password_hash.verify(password, hashed)
    except Exception:  # an unparseable stored hash is a failed verification, not a crash
        return False


def create_access_token(*, user_id: int, username: str, role: str, secret: str, minutes: int) -> str:
    now = datetime.now(UTC)
    payload = {
        "sub": str(user_id),
        "username": username,
        "role": role,
        "iat": now,
        "exp": now + timedelta(minutes=minutes),
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


class TokenError(Exception):
    """The token is missing, malformed, expired, tampered or uses another algorithm."""


def decode_access_token(token: str, *, secret: str) -> dict[str, Any]:
    # Only HS256 is accepted: tokens signed with another algorithm (or "none") are refused.
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "iat"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("Token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError("Could not validate credentials") from exc
    if not str(payload.get("sub", "")).isdigit():
        raise TokenError("Could not validate credentials")
    return payload
