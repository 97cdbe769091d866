"""Property-based fuzzing of the whole OpenAPI schema (schemathesis): no request gives a 5xx.

Every operation gets `EXAMPLES` generated requests, valid and invalid ones (schemathesis'
positive and negative modes), from a fixed seed so that a failure is reproducible. The
requests carry an admin's token, so that they reach the handlers rather than stop at 401, and
the quick bundle is in production, so that `/predict` runs the model on what it accepts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis import GenerationMode

from config import Settings
from tests.api.conftest import ADMIN, bearer, login
from tests.api.serving import publish

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

EXAMPLES = 32
SEED = 20_11


@pytest.fixture
def fuzzed(settings: Settings, quick_bundle) -> Iterator[tuple[FastAPI, str]]:
    """The app, started, serving the quick bundle; and an admin's token."""
    from api.main import create_app

    publish(settings.MODEL_STORE_URI, quick_bundle)
    app = create_app(settings)
    with TestClient(app) as client:
        token = login(client, *ADMIN)
        # A few rows, so that generated ids and filters sometimes find something.
        code = client.get("/categories").json()[0]["prdtypecode"]
        for title in ("Lampe de bureau", "Roman policier", "Bâche de piscine"):
            product = client.post(
                "/products", json={"designation": title, "prdtypecode": code}, headers=bearer(token)
            )
            assert product.status_code == 201, product.text
            assert (
                client.post("/predict", json={"designation": title}, headers=bearer(token)).status_code == 200
            )
        yield app, token


def admin_token(app: FastAPI) -> str:
    """A valid token of the admin as the database now has them.

    Minted rather than logged in for: generated requests to /logout and /users/me/password
    revoke the admin's tokens and spend its login budget, which must not stop the fuzzing of
    the operations that come after them.
    """
    from api.routes.auth import issue_token
    from db import users

    with app.state.session_factory() as session:
        admin = users.get_user_by_username(session=session, username=ADMIN[0])
        return issue_token(admin, app.state.settings).access_token


def fuzz(operation: Any, mode: GenerationMode, app: FastAPI, statuses: Counter[tuple[str, int]]) -> list[str]:
    """Run `EXAMPLES` generated requests against one operation; the 5xx answers, described."""
    failures: list[str] = []

    @hypothesis.seed(SEED)
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.generate],  # no shrinking: report every 5xx as generated
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        try:
            response = case.call(headers=bearer(admin_token(app)))
        except Exception as exc:  # the in-process transport re-raises what the app did not handle
            failures.append(f"raised {type(exc).__name__}: {str(exc)[:300]}\n  {case.as_curl_command()}")
            return
        statuses[operation.label, response.status_code] += 1
        if response.status_code >= 500:
            failures.append(f"{response.status_code} {response.text[:300]}\n  {case.as_curl_command()}")

    try:
        run()
    except hypothesis.errors.Unsatisfiable:  # nothing to make invalid (no parameters, no body)
        assert mode is GenerationMode.NEGATIVE
    return failures


def test_no_request_the_schema_describes_gives_a_5xx(fuzzed):
    app, _ = fuzzed
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: dict[str, list[str]] = {}
    statuses: Counter[tuple[str, int]] = Counter()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if found := fuzz(operation, mode, app, statuses):
                failures[f"{operation.label} ({mode.value})"] = found
    assert operations >= 20  # the whole schema was read
    logger.info("fuzzed %d operations: %s", operations, sorted(statuses.items()))
    # The token let the requests through: handlers answered, /predict with predictions.
    assert statuses["POST /predict", 200] > 0
    assert sum(n for (_, code), n in statuses.items() if code < 300) > sum(statuses.values()) // 10
    assert not failures, "\n".join(f"{label}:\n" + "\n".join(found) for label, found in failures.items())
