import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from tests.api.conftest import ADMIN, SELLER, bearer, login


def test_admin_logs_in_registers_a_seller_who_reads_users_me(client, admin_token):
    response = client.post(
        "/register", json={"username": "alice", "password": "alice-pass-123"}, headers=bearer(admin_token)
    )
    assert response.status_code == 201
    assert response.json()["role"] == "seller"
    token = login(client, "alice", "alice-pass-123")
    me = client.get("/users/me", headers=bearer(token))
    assert me.status_code == 200
    assert me.json()["username"] == "alice"
    assert me.json()["is_active"] is True


def test_login_returns_a_bearer_jwt_with_expiry_and_role(client, settings):
    response = client.post("/login", data={"username": ADMIN[0], "password": ADMIN[1]})
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["role"] == "admin"
    claims = jwt.decode(body["access_token"], settings.SECRET_KEY, algorithms=["HS256"])
    assert claims["role"] == "admin"
    assert claims["exp"] - claims["iat"] == settings.ACCESS_TOKEN_EXPIRE_MINUTES * 60


def test_seller_is_refused_on_register_and_user_admin(client, seller_token):
    response = client.post(
        "/register", json={"username": "mallory", "password": "mallory-pass"}, headers=bearer(seller_token)
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "Admin privileges required"
    assert client.get("/users", headers=bearer(seller_token)).status_code == 403
    assert (
        client.patch("/users/1", json={"is_active": False}, headers=bearer(seller_token)).status_code == 403
    )


def test_admin_can_register_another_admin(client, admin_token):
    response = client.post(
        "/register",
        json={"username": "root2", "password": "root2-password", "role": "admin"},
        headers=bearer(admin_token),
    )
    assert response.status_code == 201
    assert response.json()["role"] == "admin"


def test_wrong_password_and_unknown_user_get_the_same_generic_answer(client):
    wrong = client.post("/login", data={"username": ADMIN[0], "password": "nope-nope-nope"})
    unknown = client.post("/login", data={"username": "ghost", "password": "nope-nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "Incorrect username or password"}


def test_login_takes_about_the_same_time_whether_or_not_the_user_exists(client):
    def timed(username: str) -> float:
        start = time.perf_counter()
        client.post("/login", data={"username": username, "password": "wrong-password"})
        return time.perf_counter() - start

    existing = min(timed(ADMIN[0]) for _ in range(2))
    missing = min(timed(f"ghost{i}") for i in range(2))
    # Both paths run one Argon2 verification; without the dummy hash the unknown-user
    # path would be ~100x faster.
    assert missing > existing * 0.5


def test_repeated_failed_logins_are_refused_with_429_for_a_while(client, settings):
    for _ in range(settings.LOGIN_MAX_FAILURES):
        assert (
            client.post("/login", data={"username": ADMIN[0], "password": "bad-password"}).status_code == 401
        )
    locked = client.post("/login", data={"username": ADMIN[0], "password": ADMIN[1]})
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    # Another username is not affected.
    assert client.post("/login", data={"username": "other", "password": "bad-password"}).status_code == 401


def test_a_successful_login_resets_the_failure_count(client, settings):
    for _ in range(settings.LOGIN_MAX_FAILURES - 1):
        client.post("/login", data={"username": ADMIN[0], "password": "bad-password"})
    login(client, *ADMIN)
    for _ in range(settings.LOGIN_MAX_FAILURES - 1):
        assert (
            client.post("/login", data={"username": ADMIN[0], "password": "bad-password"}).status_code == 401
        )
    assert client.post("/login", data={"username": ADMIN[0], "password": ADMIN[1]}).status_code == 200


def test_duplicate_username_is_a_conflict(client, admin_token, seller_token):
    response = client.post(
        "/register", json={"username": SELLER[0], "password": "another-pass"}, headers=bearer(admin_token)
    )
    assert response.status_code == 409
    assert response.json()["detail"] == "Username already registered"


@pytest.mark.parametrize(
    "body",
    [
        {"username": "bob", "password": "short"},
        {"username": "bob", "password": 12345678},
        {"username": "b", "password": "long-enough"},
        {"username": "bob with spaces", "password": "long-enough"},
        {"username": "bob", "password": "long-enough", "role": "superuser"},
        {"username": "bob"},
        {"password": "long-enough"},
        {"username": "bob", "password": "long-enough", "unexpected": 1},
        [],
    ],
)
def test_register_rejects_bad_bodies_with_422(client, admin_token, body):
    response = client.post("/register", json=body, headers=bearer(admin_token))
    assert response.status_code == 422
    assert response.json()["detail"]


def test_malformed_json_is_a_422_not_a_500(client, admin_token):
    response = client.post(
        "/register",
        content=b'{"username": "bob", "password": ',
        headers={**bearer(admin_token), "Content-Type": "application/json"},
    )
    assert response.status_code == 422


def test_login_without_form_fields_is_a_422(client):
    assert client.post("/login", data={"username": "admin"}).status_code == 422
    assert client.post("/login", json={"username": "admin", "password": "x"}).status_code == 422


def _token(settings, **overrides):
    now = datetime.now(UTC)
    claims = {"sub": "1", "username": "admin", "role": "admin", "iat": now, "exp": now + timedelta(minutes=5)}
    claims.update(overrides)
    return jwt.encode(claims, settings.SECRET_KEY, algorithm="HS256")


@pytest.mark.parametrize(
    "make_header",
    [
        lambda s: {},
        lambda s: {"Authorization": "Bearer"},
        lambda s: {"Authorization": "Bearer not-a-jwt"},
        lambda s: {"Authorization": "Basic YWRtaW46YWRtaW4="},
        lambda s: bearer(_token(s, exp=datetime.now(UTC) - timedelta(seconds=5))),
        lambda s: bearer(_token(s)[:-3] + "abc"),
        lambda s: bearer(jwt.encode({"sub": "1", "exp": 9999999999, "iat": 1}, "another-key-" * 4)),
        lambda s: bearer(jwt.encode({"sub": "1", "exp": 9999999999, "iat": 1}, None, algorithm="none")),
        lambda s: bearer(_token(s, sub="999")),
        lambda s: bearer(_token(s, sub="not-a-number")),
    ],
    ids=[
        "missing",
        "empty",
        "garbage",
        "basic",
        "expired",
        "tampered",
        "wrong-key",
        "alg-none",
        "unknown-user",
        "bad-sub",
    ],
)
def test_bad_tokens_are_401(client, settings, make_header):
    response = client.get("/users/me", headers=make_header(settings))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["detail"]


def test_expired_token_says_so(client, settings):
    response = client.get(
        "/users/me", headers=bearer(_token(settings, exp=datetime.now(UTC) - timedelta(seconds=5)))
    )
    assert response.json()["detail"] == "Token has expired"


def test_deactivated_user_cannot_log_in_nor_use_an_old_token(client, admin_token, seller_token):
    users = client.get("/users", headers=bearer(admin_token)).json()
    seller_id = next(u["id"] for u in users if u["username"] == SELLER[0])
    response = client.patch(f"/users/{seller_id}", json={"is_active": False}, headers=bearer(admin_token))
    assert response.status_code == 200
    assert response.json()["is_active"] is False
    assert client.get("/users/me", headers=bearer(seller_token)).status_code == 403
    refused = client.post("/login", data={"username": SELLER[0], "password": SELLER[1]})
    assert refused.status_code == 403
    assert refused.json()["detail"] == "Inactive user"
    client.patch(f"/users/{seller_id}", json={"is_active": True}, headers=bearer(admin_token))
    assert client.get("/users/me", headers=bearer(seller_token)).status_code == 200


def test_admin_cannot_deactivate_themselves_nor_an_unknown_user(client, admin_token):
    me = client.get("/users/me", headers=bearer(admin_token)).json()
    assert (
        client.patch(f"/users/{me['id']}", json={"is_active": False}, headers=bearer(admin_token)).status_code
        == 409
    )
    assert (
        client.patch("/users/9999", json={"is_active": False}, headers=bearer(admin_token)).status_code == 404
    )
    assert (
        client.patch("/users/abc", json={"is_active": False}, headers=bearer(admin_token)).status_code == 422
    )


def test_admin_lists_users_with_pagination(client, admin_token, seller_token):
    everyone = client.get("/users", headers=bearer(admin_token)).json()
    assert {u["username"] for u in everyone} == {ADMIN[0], SELLER[0]}
    assert "hashed_password" not in everyone[0]
    assert len(client.get("/users?limit=1", headers=bearer(admin_token)).json()) == 1
    assert client.get("/users?limit=0", headers=bearer(admin_token)).status_code == 422


def test_health_answers_and_ready_says_no_model_is_loaded_yet(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["database"] == "ok"
    assert ready.json()["model"]["version"] is None
