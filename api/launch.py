"""What `make run` says around the server: a port check before anything loads, and a banner;
and the malloc arena cap every server process starts with (`limit_malloc_arenas`).

    python -m api.launch check-port   # exit 1 with a clear message when HOST:PORT is taken
    python -m api.launch banner       # the lines printed once the server is up

Light imports only (the settings), so that a busy port is reported in well under a second
rather than after the migrations, the bootstrap and the model load.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import socket
import sys

from config import Settings, get_settings

DEVELOPMENT_PASSWORD = "changethis"
# glibc's mallopt parameter for the number of malloc arenas (malloc.h: M_ARENA_MAX).
M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process and the worker processes it starts.

    glibc gives each thread that allocates under contention an arena of its own, up to 8 per
    core; a worker's 40 request threads, each decoding a 750 KB image, then keep freed memory
    in many arenas that are never given back. With 2 arenas, one worker measured 577 MB
    resident after `benchmarks.serve` instead of 630 MB (docs/performance.md). An operator's
    own `MALLOC_ARENA_MAX` wins: glibc has read it at start-up, and it is left alone.

    Returns:
        True when the cap applies to this process (set now, or by the operator), False where
        the C library is not glibc (musl, macOS): nothing to cap there.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return True
    os.environ["MALLOC_ARENA_MAX"] = str(arenas)  # the workers read it when they start
    try:
        return ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas) == 1
    except (OSError, AttributeError):
        return False


def port_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be served on, or None when it is free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn does: a port left in TIME_WAIT by the last run is free, a listening one is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is already in use (another `make run`?): stop that "
                    f"server, or serve elsewhere with PORT={port + 1} make run"
                )
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def banner(settings: Settings) -> str:
    """Where to go and how to sign in, once the server is up."""
    host = "127.0.0.1" if settings.HOST in ("0.0.0.0", "::") else settings.HOST
    base = f"http://{host}:{settings.PORT}"
    lines = [
        "",
        "=" * 68,
        "  The product-type classifier is running.",
        f"  Seller page      {base}/",
        f"  Admin console    {base}/admin",
        f"  API docs         {base}/docs   (and {base}/redoc)",
    ]
    if settings.APP_ENV == "development":
        password = settings.FIRST_ADMIN_PASSWORD
        shown = password if password == DEVELOPMENT_PASSWORD else "(FIRST_ADMIN_PASSWORD)"
        lines.append(f"  Sign in as       {settings.FIRST_ADMIN_USERNAME} / {shown}   (development only)")
        lines.append("                   then create sellers in the admin console")
    lines += ["  Stop with Ctrl+C.", "=" * 68, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api.launch", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["check-port", "banner"])
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.action == "check-port":
        problem = port_problem(settings.HOST, settings.PORT)
        if problem:
            sys.stderr.write(f"make run: {problem}\n")
            raise SystemExit(1)
        return
    sys.stdout.write(banner(settings) + "\n")


if __name__ == "__main__":
    main()
