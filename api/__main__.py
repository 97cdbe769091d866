"""Serve the API: `python -m api` (host and port from the settings)."""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from api.launch import banner, limit_malloc_arenas, port_problem
from api.main import create_app
from config import get_settings


class BannerServer(uvicorn.Server):
    """A uvicorn server that prints where to go once it is listening (`make run`)."""

    async def startup(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        await super().startup(sockets=sockets)
        if self.started:
            sys.stdout.write(banner(get_settings()) + "\n")
            sys.stdout.flush()


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def worker_log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration plus the project's root handler, for each worker process."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["formatters"]["project"] = {"format": LOG_FORMAT}
    config["handlers"]["project"] = {
        "class": "logging.StreamHandler",
        "formatter": "project",
        "stream": "ext://sys.stderr",
    }
    config["root"] = {"handlers": ["project"], "level": level}
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__.splitlines()[0])
    parser.add_argument("--banner", action="store_true", help="print the URLs and sign-in once up")
    args = parser.parse_args(argv)
    limit_malloc_arenas()  # before any thread allocates (the app's, the workers' by inheritance)
    settings = get_settings()
    problem = port_problem(settings.HOST, settings.PORT)  # before anything heavy is loaded
    if problem:
        raise SystemExit(f"python -m api: {problem}")
    logging.basicConfig(level=settings.LOG_LEVEL, format=LOG_FORMAT)
    level = settings.LOG_LEVEL.lower()
    workers = settings.API_WORKERS
    # Workers are fresh interpreters: they get the project's log handler from uvicorn's config.
    log_config = worker_log_config(settings.LOG_LEVEL) if workers > 1 else uvicorn.config.LOGGING_CONFIG
    config = uvicorn.Config(
        # Several workers each build their own app (and load their own model) from the factory.
        create_app(settings) if workers == 1 else "api.main:create_app",
        factory=workers > 1,
        workers=workers,
        host=settings.HOST,
        port=settings.PORT,
        log_level=level,
        log_config=log_config,
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
    if workers == 1:
        (BannerServer if args.banner else uvicorn.Server)(config).run()
        return
    # uvicorn's supervisor: one listening socket shared by the workers, a worker that dies is
    # replaced, SIGTERM is passed on to each (each drains as a single process does).
    sock = config.bind_socket()
    if args.banner:
        sys.stdout.write(banner(settings) + "\n")
        sys.stdout.flush()
    Multiprocess(config, sockets=[sock]).run()


if __name__ == "__main__":
    main()
