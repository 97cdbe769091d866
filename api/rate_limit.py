"""Per-user rate limits on the routes that cost the most, on the `limits` package.

The storage is `RATE_LIMIT_STORAGE_URI`: `memory://` counts per process; `redis://...`
shares the counters between the workers and replicas. A moving window is used, so that a
client cannot send twice the limit across the boundary of two fixed windows.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping

from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

logger = logging.getLogger(__name__)


class RateLimiter:
    """Named limits (`{"predict": "120/minute"}`) checked per key (the user id)."""

    def __init__(self, storage_uri: str, limits: Mapping[str, str]) -> None:
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))
        self._limits: dict[str, list[RateLimitItem]] = {name: parse_many(v) for name, v in limits.items()}

    def hit(self, name: str, key: str, cost: int = 1) -> int | None:
        """Count `cost` requests; None when allowed, else the seconds until the client may retry."""
        try:
            for item in self._limits[name]:
                if not self._limiter.hit(item, name, key, cost=cost):
                    stats = self._limiter.get_window_stats(item, name, key)
                    return max(1, math.ceil(stats.reset_time - time.time()))
        except Exception as exc:  # a shared storage outage must not take the API down: fail open
            logger.warning("rate limit storage unavailable, not limiting: %s", exc)
        return None
