"""Serve the API: `python -m api` (host and port from the settings)."""

from __future__ import annotations

import logging

import uvicorn

from api.main import create_app
from config import get_settings


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=settings.LOG_LEVEL, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    level = settings.LOG_LEVEL.lower()
    uvicorn.run(
        create_app(settings),
        host=settings.HOST,
        port=settings.PORT,
        log_level=level,
        access_log=level == "debug",
        # In-flight requests get this long at SIGTERM; then the lifespan drains the log
        # writer (LOG_DRAIN_SECONDS). Both fit in compose's and k8s's 30 s grace.
        timeout_graceful_shutdown=settings.SHUTDOWN_GRACE_SECONDS,
        # The client address (login throttle) comes from X-Forwarded-For only when the peer is
        # one of these proxies; otherwise it is the peer itself.
        proxy_headers=True,
        forwarded_allow_ips=settings.FORWARDED_ALLOW_IPS,
        # Request bodies are bounded in time by the app (RequestBodyGuard); idle keep-alive
        # connections and the number of connections are bounded here.
        timeout_keep_alive=settings.KEEP_ALIVE_TIMEOUT_SECONDS,
        limit_concurrency=settings.MAX_CONCURRENT_CONNECTIONS,
    )


if __name__ == "__main__":
    main()
