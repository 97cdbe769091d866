"""Every setting the code knows is documented where operators look for it."""

from __future__ import annotations

import re

import pytest

from tests.deploy.helpers import ENV_EXAMPLE, ROOT, read_env_file, settings_fields


def test_every_settings_field_is_in_the_example_env_or_the_docs() -> None:
    values, commented = read_env_file()
    docs = "\n".join(
        p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if p.is_file()
    )
    undocumented = sorted(
        name
        for name in settings_fields()
        if name not in values and name not in commented and not re.search(rf"\b{name}\b", docs)
    )
    assert not undocumented, f"document in .env.example: {undocumented}"


def test_example_env_sets_only_known_variables() -> None:
    """A typo in .env.example would silently configure nothing."""
    values, commented = read_env_file()
    compose_text = (ROOT / "docker-compose.yml").read_text() + (
        ROOT / "deploy" / "compose.replicas.yml"
    ).read_text()
    fields = settings_fields()
    for name in sorted(set(values) | commented):
        assert name in fields or f"${{{name}" in compose_text, f".env.example: {name} is read by nothing"


def test_example_env_is_valid_settings_input(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Copied to .env, the example must also let `make run` start (config.Settings reads .env)."""
    from config import Settings

    (tmp_path / ".env").write_text(ENV_EXAMPLE.read_text())
    monkeypatch.chdir(tmp_path)
    for name in settings_fields():
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.APP_ENV == "development"
    assert settings.MODEL_POLL_SECONDS == 30
