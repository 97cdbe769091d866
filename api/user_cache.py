"""Users recently seen active, so that /predict can answer while the database is down.

`/predict` needs the database only to check that the token's user still exists and is
active. When the database is unreachable, a user this process authenticated within the last
`USER_CACHE_SECONDS` is accepted from memory (their token is still verified); anyone else
gets a 503. With the database up the cache is never read, so a deactivation or a revoked
token takes effect at once; during an outage it takes effect when the database is back or
the entry expires, whichever comes first (docs/security.md).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from db.tables import User


class ActiveUserCache:
    """A bounded, thread-safe map of user id to the last active `User` read from the database."""

    def __init__(self, ttl_seconds: float, *, max_entries: int = 10_000) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[int, tuple[float, User]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, user: User) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            self._entries[user.id] = (time.monotonic(), user)
            self._entries.move_to_end(user.id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def recall(self, user_id: int) -> User | None:
        """The user if seen active within the TTL, else None."""
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is None or time.monotonic() - entry[0] > self._ttl:
                self._entries.pop(user_id, None)
                return None
            return entry[1]

    def forget(self, user_id: int) -> None:
        with self._lock:
            self._entries.pop(user_id, None)
