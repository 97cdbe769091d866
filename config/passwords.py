"""The password policy and the strength checks of secrets, shared by the settings and the API.

Strength is estimated by zxcvbn (Dropbox's estimator, MIT; its dictionaries hold the 30,000
most common passwords of leaked lists, English words, names and keyboard patterns), so
`changethis`, `12345678`, `P@ssw0rd2024!` and the user's own name are refused, while a long
passphrase of uncommon words passes.
"""

from __future__ import annotations

import math
from collections import Counter

from zxcvbn import zxcvbn

# zxcvbn's matching is super-linear in the length; it refuses longer inputs itself. Characters
# past this only add strength, so the first ZXCVBN_MAX_CHARS are judged.
ZXCVBN_MAX_CHARS = 72

# Development and documentation passwords that must never guard an admin in production: the
# first admin's password is checked against these at startup (one Argon2 verification each).
PLACEHOLDER_PASSWORDS = (
    "changethis",
    "change-me",
    "changeme",
    "password",
    "secret",
    "admin",
    "admin123",
    "12345678",
)

SECRET_KEY_MIN_CHARS = 32
SECRET_KEY_MIN_BITS_PER_CHAR = 3.0
# ~66 bits by zxcvbn's estimate: catches repeats, sequences and phrases a key was typed from.
SECRET_KEY_MIN_GUESSES_LOG10 = 20.0


def _strength(value: str, user_inputs: list[str]) -> dict:
    return zxcvbn(value[:ZXCVBN_MAX_CHARS], user_inputs=user_inputs, max_length=ZXCVBN_MAX_CHARS)


def password_problem(password: str, *, username: str = "", min_length: int, min_score: int) -> str | None:
    """Why `password` is refused by the policy, or None when it is acceptable."""
    if len(password) < min_length:
        return f"Password must be at least {min_length} characters long"
    if username and password.lower() == username.lower():
        return "Password must not be the username"
    result = _strength(password, [username] if username else [])
    if result["score"] < min_score:
        feedback = result["feedback"]
        hint = " ".join(filter(None, [feedback.get("warning"), *feedback.get("suggestions", [])]))
        return f"Password is too easy to guess (strength {result['score']}/4, {min_score} required). {hint}".strip()
    return None


def shannon_bits_per_char(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values()) if value else 0.0


def secret_key_problem(key: str) -> str | None:
    """Why `key` is too weak to sign tokens with in production, or None."""
    if len(key) < SECRET_KEY_MIN_CHARS:
        return f"SECRET_KEY must be at least {SECRET_KEY_MIN_CHARS} characters when APP_ENV=production"
    if shannon_bits_per_char(key) < SECRET_KEY_MIN_BITS_PER_CHAR:
        return (
            f"SECRET_KEY has too little entropy (under {SECRET_KEY_MIN_BITS_PER_CHAR} bits per character);"
            " generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    if _strength(key, [])["guesses_log10"] < SECRET_KEY_MIN_GUESSES_LOG10:
        return (
            "SECRET_KEY is guessable (repeats, sequences or common words); generate one with:"
            " python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    return None
