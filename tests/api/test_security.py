import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from api.security import HashBusyError, PasswordHasher


def test_at_most_concurrency_hashes_run_at_once_and_callers_past_the_queue_are_refused():
    hasher = PasswordHasher(memory_kib=8192, time_cost=1, concurrency=2, max_waiting=3, wait_seconds=5)
    running = peak = 0
    lock = threading.Lock()
    real = hasher._hash.hash

    def slow_hash(password, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.2)
        with lock:
            running -= 1
        return real(password)

    hasher._hash.hash = slow_hash  # type: ignore[method-assign]
    barrier = threading.Barrier(40)

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            hasher.hash("some-password-123")
            return "hashed"
        except HashBusyError:
            return "refused"

    with ThreadPoolExecutor(40) as pool:
        outcomes = list(pool.map(attempt, range(40)))
    assert peak == 2
    # 2 hashing + 3 waiting were admitted; the 35 others were refused at once.
    assert outcomes.count("hashed") == 5
    assert outcomes.count("refused") == 35


def occupy(hasher: PasswordHasher, release: threading.Event) -> None:
    """Keep one hashing thread busy until `release` is set."""

    def hold() -> None:
        with contextlib.suppress(HashBusyError):
            hasher._run(release.wait)

    threading.Thread(target=hold, daemon=True).start()
    deadline = time.monotonic() + 5
    while hasher._admitted < 1 and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_caller_waiting_too_long_for_a_slot_is_refused():
    hasher = PasswordHasher(memory_kib=8192, time_cost=1, concurrency=1, max_waiting=5, wait_seconds=0.1)
    release = threading.Event()
    occupy(hasher, release)
    with pytest.raises(HashBusyError):
        hasher.verify("x", hasher.dummy_hash)
    release.set()
    assert hasher.verify("not-a-real-password-used-for-timing-only", hasher.dummy_hash)


def test_hashes_run_only_on_the_hashers_own_threads():
    hasher = PasswordHasher(memory_kib=8192, time_cost=1, concurrency=2, max_waiting=0, wait_seconds=5)
    names = {hasher._run(lambda: threading.current_thread().name) for _ in range(10)}
    assert names and all(name.startswith("argon2") for name in names)
    assert len(names) <= 2


def test_hashes_use_the_configured_argon2_parameters_and_verify_older_ones():
    from pwdlib import PasswordHash

    hasher = PasswordHasher(memory_kib=19456, time_cost=2, concurrency=2, max_waiting=0, wait_seconds=30)
    assert hasher.hash("a-password-to-hash").startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    legacy = PasswordHash.recommended().hash("a-password-to-hash")
    valid, upgraded = hasher.verify_and_update("a-password-to-hash", legacy)
    assert valid and upgraded and "m=19456,t=2,p=1" in upgraded
    assert hasher.verify_and_update("not-it", legacy) == (False, None)
    assert hasher.verify("anything", "not-a-hash") is False
