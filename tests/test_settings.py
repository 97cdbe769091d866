import os
import stat

import pytest
from pydantic import ValidationError

import config
from config import Settings, development_secret_key

STRONG = "kQ7v2Xb9Lm4Zp8Rt1Wc6Yn3Hs5Jd0Fg-uE_aB"
ADMIN_PASSWORD = "a-real-admin-password"


@pytest.fixture
def var_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "VAR_DIR", tmp_path / "var")
    return tmp_path / "var"


def test_development_signs_with_a_key_generated_into_var_not_a_published_one(var_dir):
    settings = Settings(APP_ENV="development")
    assert settings.SECRET_KEY != "changethis"
    assert len(settings.SECRET_KEY) >= 32
    key_file = var_dir / "secret_key"
    assert key_file.read_text().strip() == settings.SECRET_KEY
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert settings.DATABASE_URL.startswith("sqlite:///")
    assert settings.DATABASE_URL.endswith("var/app.db")


def test_the_development_key_is_stable_across_settings_and_processes(var_dir):
    first = Settings(APP_ENV="development").SECRET_KEY
    assert first == Settings(APP_ENV="development", SECRET_KEY="changethis").SECRET_KEY
    assert development_secret_key(var_dir / "secret_key") == first


def test_each_checkout_gets_its_own_development_key(tmp_path):
    assert development_secret_key(tmp_path / "a" / "secret_key") != development_secret_key(
        tmp_path / "b" / "secret_key"
    )
    assert not [p for p in (tmp_path / "a").iterdir() if p.name != "secret_key"]  # no temporary left


def test_development_keeps_a_key_it_was_given(var_dir):
    assert Settings(APP_ENV="development", SECRET_KEY="my-own-dev-key").SECRET_KEY == "my-own-dev-key"
    assert not (var_dir / "secret_key").exists()


@pytest.mark.parametrize("secret", ["changethis", "", "  ", "secret"])
def test_production_refuses_a_placeholder_secret_key(secret):
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(APP_ENV="production", SECRET_KEY=secret, FIRST_ADMIN_PASSWORD=ADMIN_PASSWORD)


def test_production_refuses_a_placeholder_admin_password():
    with pytest.raises(ValidationError, match="FIRST_ADMIN_PASSWORD"):
        Settings(APP_ENV="production", SECRET_KEY=STRONG, FIRST_ADMIN_PASSWORD="changethis")


def test_production_refuses_a_short_secret_key():
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(
            APP_ENV="production", SECRET_KEY="short-but-not-placeholder", FIRST_ADMIN_PASSWORD=ADMIN_PASSWORD
        )


@pytest.mark.parametrize(
    "secret",
    [
        "a" * 32,
        "ab" * 20,
        "passwordpasswordpasswordpassword",
        "abcdefghijklmnopqrstuvwxyz012345",
        "changethischangethischangethis12",
    ],
    ids=["one-char", "two-chars", "repeated-word", "sequence", "repeated-placeholder"],
)
def test_production_refuses_a_long_secret_key_with_little_entropy(secret):
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(APP_ENV="production", SECRET_KEY=secret, FIRST_ADMIN_PASSWORD=ADMIN_PASSWORD)


@pytest.mark.parametrize("password", ["12345678", "password123", "admin2024!", "qwertyuiop"])
def test_production_refuses_a_first_admin_password_that_fails_the_policy(password):
    with pytest.raises(ValidationError, match="FIRST_ADMIN_PASSWORD fails the password policy"):
        Settings(APP_ENV="production", SECRET_KEY=STRONG, FIRST_ADMIN_PASSWORD=password)


@pytest.mark.parametrize("make_key", [lambda: os.urandom(16).hex(), lambda: os.urandom(36).hex()])
def test_production_accepts_generated_keys(make_key):
    for _ in range(20):  # random keys: none may fall under the entropy bar by chance
        Settings(APP_ENV="production", SECRET_KEY=make_key(), FIRST_ADMIN_PASSWORD=ADMIN_PASSWORD)


def test_production_starts_with_real_secrets():
    settings = Settings(APP_ENV="production", SECRET_KEY=STRONG, FIRST_ADMIN_PASSWORD=ADMIN_PASSWORD)
    assert settings.APP_ENV == "production"


def test_production_refuses_several_workers_counting_rate_limits_each_on_its_own():
    real = {"APP_ENV": "production", "SECRET_KEY": STRONG, "FIRST_ADMIN_PASSWORD": ADMIN_PASSWORD}
    with pytest.raises(ValidationError, match="RATE_LIMIT_STORAGE_URI"):
        Settings(**real, API_WORKERS=2)
    shared = Settings(**real, API_WORKERS=2, RATE_LIMIT_STORAGE_URI="redis://redis:6379/0")
    assert shared.API_WORKERS == 2


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://u@h/db")
    monkeypatch.setenv("PORT", "9000")
    settings = Settings()
    assert settings.DATABASE_URL == "postgresql+psycopg2://u@h/db"
    assert settings.PORT == 9000


def test_the_development_key_is_long_enough_for_pyjwt(var_dir):
    import warnings

    import jwt

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # InsecureKeyLengthWarning under 32 bytes for HS256
        jwt.encode({"sub": "1"}, Settings(APP_ENV="development").SECRET_KEY, algorithm="HS256")
