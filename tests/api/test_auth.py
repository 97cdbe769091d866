import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from fastapi.testclient import TestClient

from config import Settings
from tests.api.conftest import ADMIN, SELLER, bearer, login, make_settings
from tests.api.test_security import occupy


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

    # Interleaved and the fastest of three each, so that a busy machine slows both alike.
    existing, missing = [], []
    for i in range(3):
        existing.append(timed(ADMIN[0]))
        missing.append(timed(f"ghost{i}"))
    # Both paths run one Argon2 verification; without the dummy hash the unknown-user
    # path would be ~100x faster.
    assert min(missing) > min(existing) * 0.3


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
        "/register",
        json={"username": SELLER[0], "password": "another-pass-9173"},
        headers=bearer(admin_token),
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
    claims = {
        "sub": "1",
        "username": "admin",
        "role": "admin",
        "ver": 0,
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
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
    # Reactivation does not revive the tokens issued before the deactivation.
    revived = client.get("/users/me", headers=bearer(seller_token))
    assert revived.status_code == 401
    assert revived.json()["detail"] == "Token has been revoked"
    assert client.get("/users/me", headers=bearer(login(client, *SELLER))).status_code == 200


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


# ---- throttling, lockout keying and hashing bounds --------------------------------------


def from_address(client, address: str) -> TestClient:
    """Another client of the same running app, seen from `address`."""
    return TestClient(client.app, client=(address, 50000))


def test_password_spraying_from_one_address_is_throttled(client, settings):
    names = [f"user{i}" for i in range(6)]
    codes = [
        client.post("/login", data={"username": name, "password": f"guess-{round_}"}).status_code
        for round_ in range(4)  # 4 guesses per name: under the per-name limit of 5
        for name in names
    ]
    assert codes[: settings.LOGIN_ADDRESS_MAX_FAILURES] == [401] * settings.LOGIN_ADDRESS_MAX_FAILURES
    assert set(codes[settings.LOGIN_ADDRESS_MAX_FAILURES :]) == {429}
    # Another address is not affected.
    other = from_address(client, "203.0.113.9")
    assert other.post("/login", data={"username": "user0", "password": "guess-x"}).status_code == 401


def test_the_real_user_gets_in_from_another_address_while_the_attackers_is_locked(client, settings):
    attacker = from_address(client, "198.51.100.66")
    for _ in range(settings.LOGIN_MAX_FAILURES):
        assert (
            attacker.post("/login", data={"username": ADMIN[0], "password": "bad-guess"}).status_code == 401
        )
    assert attacker.post("/login", data={"username": ADMIN[0], "password": ADMIN[1]}).status_code == 429
    real_user = from_address(client, "192.0.2.10")
    assert real_user.post("/login", data={"username": ADMIN[0], "password": ADMIN[1]}).status_code == 200


def test_many_addresses_lock_a_username_only_past_its_much_higher_global_limit(settings):
    from api.main import create_app

    settings = settings.model_copy(
        update={
            "LOGIN_MAX_FAILURES": 2,
            "LOGIN_USERNAME_MAX_FAILURES": 6,
        }
    )
    with TestClient(create_app(settings)) as client:
        for i in range(3):  # 3 addresses x 2 failures = the global limit of 6
            attacker = from_address(client, f"198.51.100.{i + 1}")
            for _ in range(2):
                assert (
                    attacker.post("/login", data={"username": ADMIN[0], "password": "nope"}).status_code
                    == 401
                )
        # Under the global limit, the real user was never blocked; past it, the name is locked
        # everywhere for a while (the price of bounding distributed guessing).
        locked = from_address(client, "192.0.2.10").post(
            "/login", data={"username": ADMIN[0], "password": ADMIN[1]}
        )
        assert locked.status_code == 429
        assert int(locked.headers["Retry-After"]) >= settings.LOGIN_LOCKOUT_SECONDS


def test_forty_parallel_guesses_check_at_most_the_limit_of_passwords(client, settings, monkeypatch):
    from api.security import PasswordHasher

    checked = []
    original = PasswordHasher.verify_and_update

    def counting(self, password, hashed):  # type: ignore[no-untyped-def]
        checked.append(password)
        return original(self, password, hashed)

    monkeypatch.setattr(PasswordHasher, "verify_and_update", counting)
    barrier = threading.Barrier(40)

    def guess(i: int) -> int:
        barrier.wait()
        return client.post("/login", data={"username": ADMIN[0], "password": f"guess-{i}"}).status_code

    with ThreadPoolExecutor(40) as pool:
        codes = list(pool.map(guess, range(40)))
    assert len(checked) <= settings.LOGIN_MAX_FAILURES
    assert codes.count(401) == len(checked)
    assert set(codes) <= {401, 429, 503}


def test_unknown_usernames_do_not_grow_the_login_throttle_without_bound(client, settings, session):
    from db.users import login_throttle_rows

    for i in range(160):
        client.post("/login", data={"username": f"nobody{i}", "password": "wrong-password"})
    assert login_throttle_rows(session=session) <= 2 * settings.LOGIN_ADDRESS_MAX_FAILURES + 1


def test_a_saturated_hasher_answers_503_with_retry_after_instead_of_queueing_forever(settings):
    from api.main import create_app
    from api.security import password_hasher

    settings = settings.model_copy(
        update={
            "PASSWORD_HASH_CONCURRENCY": 1,
            "PASSWORD_HASH_QUEUE": 0,
            "PASSWORD_HASH_WAIT_SECONDS": 0.2,
        }
    )
    with TestClient(create_app(settings)) as client:
        release = threading.Event()
        occupy(password_hasher(settings), release)  # another login is hashing
        busy = client.post("/login", data={"username": ADMIN[0], "password": ADMIN[1]})
        release.set()
        assert busy.status_code == 503
        assert int(busy.headers["Retry-After"]) >= 1
        # The refused attempt was not counted against the name: the real login still works
        # (retried while a busy machine makes the 0.2 s wait too short for one hash).
        for _ in range(10):
            after = client.post("/login", data={"username": ADMIN[0], "password": ADMIN[1]})
            if after.status_code != 503:
                break
        assert after.status_code == 200


@pytest.mark.parametrize("username", ["a" * 65, "adm\x00in", "x" * 10_000])
def test_a_username_no_account_can_have_is_a_plain_failed_login(client, username):
    response = client.post("/login", data={"username": username, "password": "whatever-password"})
    assert response.status_code == 401
    assert response.json() == {"detail": "Incorrect username or password"}


def test_a_hash_with_older_argon2_parameters_is_upgraded_at_login(client, session_factory):
    from pwdlib import PasswordHash

    from db import users

    legacy = PasswordHash.recommended().hash("legacy-user-password-7")  # m=65536, t=3, p=4
    with session_factory() as session:
        users.create_user(session=session, username="legacy", hashed_password=legacy)
    login(client, "legacy", "legacy-user-password-7")
    with session_factory() as session:
        stored = users.get_user_by_username(session=session, username="legacy").hashed_password
    assert "m=19456,t=2,p=1" in stored
    login(client, "legacy", "legacy-user-password-7")


# ---- password policy and usernames ---------------------------------------------------------


@pytest.mark.parametrize("password", ["12345678", "password1", "changethis", "qwertyuiop", "P@ssw0rd2024!"])
def test_register_refuses_common_and_guessable_passwords_with_a_clear_422(client, admin_token, password):
    response = client.post(
        "/register", json={"username": "bob", "password": password}, headers=bearer(admin_token)
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "password"]
    assert error["msg"].startswith("Password")


def test_register_refuses_the_username_as_password(client, admin_token):
    response = client.post(
        "/register",
        json={"username": "robert.smith", "password": "robert.smith"},
        headers=bearer(admin_token),
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "Password must not be the username"


def test_usernames_are_unique_case_insensitively_and_logins_ignore_case(client, admin_token):
    response = client.post(
        "/register", json={"username": "ADMIN", "password": "kettle-umbrella-42"}, headers=bearer(admin_token)
    )
    assert response.status_code == 409
    assert response.json()["detail"] == "Username already registered"
    token = login(client, "Admin", ADMIN[1])
    assert client.get("/users/me", headers=bearer(token)).json()["username"] == ADMIN[0]


def test_the_database_refuses_usernames_differing_only_by_case(session):
    from db import users

    users.create_user(session=session, username="Carol", hashed_password="x")
    with pytest.raises(users.UsernameTakenError):
        users.create_user(session=session, username="carol", hashed_password="x")


# ---- token revocation and lifetime ---------------------------------------------------------


def test_logout_revokes_the_token(client, seller_token):
    assert client.post("/logout", headers=bearer(seller_token)).status_code == 204
    response = client.get("/users/me", headers=bearer(seller_token))
    assert response.status_code == 401
    assert response.json()["detail"] == "Token has been revoked"
    assert client.post("/logout", headers=bearer(seller_token)).status_code == 401


def test_a_password_change_revokes_older_tokens_and_returns_a_working_one(client, seller_token):
    response = client.post(
        "/users/me/password",
        json={"current_password": SELLER[1], "new_password": "violet-kettle-umbrella-42"},
        headers=bearer(seller_token),
    )
    assert response.status_code == 200, response.text
    assert client.get("/users/me", headers=bearer(seller_token)).status_code == 401
    assert client.get("/users/me", headers=bearer(response.json()["access_token"])).status_code == 200
    refused = client.post("/login", data={"username": SELLER[0], "password": SELLER[1]})
    assert refused.status_code == 401
    login(client, SELLER[0], "violet-kettle-umbrella-42")


def test_a_password_change_needs_the_current_password_and_a_policy_compliant_new_one(client, seller_token):
    wrong = client.post(
        "/users/me/password",
        json={"current_password": "not-my-password", "new_password": "violet-kettle-umbrella-42"},
        headers=bearer(seller_token),
    )
    assert wrong.status_code == 400
    assert wrong.json()["detail"] == "Current password is incorrect"
    weak = client.post(
        "/users/me/password",
        json={"current_password": SELLER[1], "new_password": "password123"},
        headers=bearer(seller_token),
    )
    assert weak.status_code == 422
    assert weak.json()["detail"][0]["loc"] == ["body", "new_password"]
    # Neither attempt changed anything.
    assert client.get("/users/me", headers=bearer(seller_token)).status_code == 200


def test_a_token_living_longer_than_the_server_allows_is_refused(client, settings):
    now = datetime.now(UTC)
    lifetime = timedelta(minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES)
    assert client.get("/users/me", headers=bearer(_token(settings, exp=now + lifetime))).status_code == 200
    overlong = _token(settings, exp=now + lifetime + timedelta(minutes=1))
    assert client.get("/users/me", headers=bearer(overlong)).status_code == 401
    from_the_future = _token(settings, iat=now + timedelta(days=1), exp=now + timedelta(days=1, minutes=5))
    assert client.get("/users/me", headers=bearer(from_the_future)).status_code == 401


def test_a_token_without_a_version_is_refused(client, settings):
    now = datetime.now(UTC)
    claims = {"sub": "1", "iat": now, "exp": now + timedelta(minutes=5)}
    token = jwt.encode(claims, settings.SECRET_KEY, algorithm="HS256")
    assert client.get("/users/me", headers=bearer(token)).status_code == 401


# ---- production startup ----------------------------------------------------------------------

STRONG_KEY = "kQ7v2Xb9Lm4Zp8Rt1Wc6Yn3Hs5Jd0Fg-uE_aB"


def production_settings(database_url: str, tmp_path) -> Settings:
    return Settings(
        **make_settings(database_url, tmp_path).model_dump(
            exclude={"APP_ENV", "SECRET_KEY", "FIRST_ADMIN_PASSWORD"}
        ),
        APP_ENV="production",
        SECRET_KEY=STRONG_KEY,
        FIRST_ADMIN_PASSWORD="violet-kettle-umbrella-42",
    )


@pytest.mark.parametrize("placeholder", ["changethis", "admin", "password"])
def test_production_refuses_to_start_while_an_admin_keeps_a_placeholder_password(
    database_url, tmp_path, session_factory, placeholder
):
    from api.main import create_app
    from api.security import password_hasher
    from db import users
    from db.seed import PlaceholderPasswordError

    settings = production_settings(database_url, tmp_path)
    with session_factory() as session:  # seeded in development, then deployed as is
        users.create_user(
            session=session,
            username=ADMIN[0],
            hashed_password=password_hasher(settings).hash(placeholder),
            role="admin",
        )
    with pytest.raises(PlaceholderPasswordError, match="'admin'"), TestClient(create_app(settings)):
        pass


def test_production_starts_when_admins_have_real_passwords(database_url, tmp_path, session_factory):
    from api.main import create_app
    from api.security import password_hasher
    from db import users

    settings = production_settings(database_url, tmp_path)
    with session_factory() as session:  # an inactive placeholder admin is no way in
        retired = users.create_user(
            session=session,
            username="old-admin",
            hashed_password=password_hasher(settings).hash("changethis"),
            role="admin",
        )
        users.set_active(session=session, user=retired, active=False)
    with TestClient(create_app(settings)) as client:
        assert login(client, ADMIN[0], "violet-kettle-umbrella-42")


def test_the_server_trusts_forwarded_addresses_only_from_the_configured_proxies(monkeypatch):
    import api.__main__ as entry

    seen = {}

    class Config:
        def __init__(self, app, **options):  # type: ignore[no-untyped-def]
            seen.update(options)

    monkeypatch.setattr(entry.uvicorn, "Config", Config)
    monkeypatch.setattr(entry.uvicorn.Server, "run", lambda self: None)
    monkeypatch.setattr(entry, "port_problem", lambda host, port: None)
    monkeypatch.setattr(entry, "create_app", lambda settings: None)
    monkeypatch.setattr(entry, "get_settings", lambda: Settings(FORWARDED_ALLOW_IPS="10.0.0.0/8"))
    entry.main([])
    assert seen["proxy_headers"] is True
    assert seen["forwarded_allow_ips"] == "10.0.0.0/8"
    assert Settings.model_fields["FORWARDED_ALLOW_IPS"].default == "127.0.0.1"
