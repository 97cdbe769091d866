import pytest
from pydantic import ValidationError

from config import Settings

STRONG = "x" * 40


def test_development_accepts_the_documented_defaults():
    settings = Settings(APP_ENV="development")
    assert settings.SECRET_KEY == "changethis"
    assert settings.DATABASE_URL.startswith("sqlite:///")
    assert settings.DATABASE_URL.endswith("var/app.db")


@pytest.mark.parametrize("secret", ["changethis", "", "  ", "secret"])
def test_production_refuses_a_placeholder_secret_key(secret):
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(APP_ENV="production", SECRET_KEY=secret, FIRST_ADMIN_PASSWORD="a-real-admin-password")


def test_production_refuses_a_placeholder_admin_password():
    with pytest.raises(ValidationError, match="FIRST_ADMIN_PASSWORD"):
        Settings(APP_ENV="production", SECRET_KEY=STRONG, FIRST_ADMIN_PASSWORD="changethis")


def test_production_refuses_a_short_secret_key():
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(
            APP_ENV="production", SECRET_KEY="short-but-not-placeholder", FIRST_ADMIN_PASSWORD="pw-ok-123"
        )


def test_production_starts_with_real_secrets():
    settings = Settings(APP_ENV="production", SECRET_KEY=STRONG, FIRST_ADMIN_PASSWORD="a-real-admin-password")
    assert settings.APP_ENV == "production"


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://u@h/db")
    monkeypatch.setenv("PORT", "9000")
    settings = Settings()
    assert settings.DATABASE_URL == "postgresql+psycopg2://u@h/db"
    assert settings.PORT == 9000
