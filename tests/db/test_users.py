import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from db import users

WINDOW = 300


def reserve(session, key: str = "p:admin|10.0.0.1", limit: int = 5, now=None) -> float:
    return users.reserve_login_attempt(
        session=session, keys=[(key, limit)], window_seconds=WINDOW, max_lockout_seconds=3600, now=now
    )


def test_forty_parallel_reservations_let_exactly_the_limit_through(session_factory):
    """Real threads and connections: the count is one atomic upsert, never read-then-write."""
    barrier = threading.Barrier(40)

    def attempt(_: int) -> float:
        with session_factory() as session:
            barrier.wait()
            return reserve(session)

    with ThreadPoolExecutor(40) as pool:
        waits = list(pool.map(attempt, range(40)))
    assert waits.count(0.0) == 5
    assert all(wait > 0 for wait in waits if wait != 0.0)


def test_the_attempt_over_the_limit_locks_the_key_and_repeats_lock_longer(session):
    now = datetime.now(UTC)
    assert [reserve(session, limit=2, now=now) for _ in range(2)] == [0.0, 0.0]
    assert reserve(session, limit=2, now=now) == WINDOW
    assert 0 < reserve(session, limit=2, now=now + timedelta(seconds=10)) <= WINDOW - 10
    # Once the lock is over the key starts afresh, and its next lock is twice as long.
    later = now + timedelta(seconds=WINDOW + 1)
    assert [reserve(session, limit=2, now=later) for _ in range(2)] == [0.0, 0.0]
    assert reserve(session, limit=2, now=later) == 2 * WINDOW


def test_a_released_attempt_does_not_count(session):
    for _ in range(10):
        assert reserve(session, limit=1) == 0.0
        users.release_login_attempt(session=session, keys=["p:admin|10.0.0.1"])


def test_reservation_stops_at_the_first_locked_key(session):
    address, pair = users.address_key("10.0.0.1"), users.pair_key("Admin", "10.0.0.1")
    assert pair == users.pair_key("admin", "10.0.0.1")
    assert reserve(session, key=address, limit=0 + 1) == 0.0
    assert reserve(session, key=address, limit=1) > 0  # the address is now locked
    wait = users.reserve_login_attempt(
        session=session, keys=[(address, 1), (pair, 5)], window_seconds=WINDOW, max_lockout_seconds=3600
    )
    assert wait > 0
    assert users.login_throttle_rows(session=session) == 1  # the pair was never counted


def test_expired_rows_are_pruned(session):
    now = datetime.now(UTC)
    for i in range(5):
        reserve(session, key=f"a:10.0.0.{i}", now=now)
    reserve(session, key="a:10.0.1.1", limit=1, now=now)
    reserve(session, key="a:10.0.1.1", limit=1, now=now)  # locked: kept for lock + window
    assert users.prune_login_throttle(session=session, now=now + timedelta(seconds=WINDOW + 1)) == 5
    assert users.login_throttle_rows(session=session) == 1
    assert users.prune_login_throttle(session=session, now=now + timedelta(seconds=2 * WINDOW + 1)) == 1


def test_deactivation_and_password_change_bump_the_token_version(session):
    user = users.create_user(session=session, username="dave", hashed_password="x")
    assert user.token_version == 0
    users.set_active(session=session, user=user, active=False)
    assert user.token_version == 1
    users.set_active(session=session, user=user, active=True)
    assert user.token_version == 1
    users.set_password(session=session, user=user, hashed_password="y")
    users.revoke_tokens(session=session, user=user)
    assert user.token_version == 3


def test_lookup_by_username_ignores_case(session):
    users.create_user(session=session, username="Erin", hashed_password="x")
    assert users.get_user_by_username(session=session, username="ERIN").username == "Erin"


def test_migration_0002_refuses_usernames_differing_only_by_case_and_downgrades(database_url):
    import pytest
    from sqlalchemy import inspect, text

    from db import migrate
    from db.session import make_engine

    migrate.downgrade(database_url, "0001")
    engine = make_engine(database_url)
    assert "username" in {c["name"] for c in inspect(engine).get_columns("login_throttle")}
    with engine.begin() as conn:
        for name in ("frank", "FRANK"):
            conn.execute(
                text(
                    "INSERT INTO users (username, hashed_password, role, is_active, created_at)"
                    " VALUES (:name, 'x', 'seller', true, CURRENT_TIMESTAMP)"
                ),
                {"name": name},
            )
    with pytest.raises(RuntimeError, match="frank"):
        migrate.upgrade(database_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM users WHERE username = 'FRANK'"))
    migrate.upgrade(database_url)
    assert "token_version" in {c["name"] for c in inspect(engine).get_columns("users")}
    engine.dispose()
