"""What `make run` says around the server: a port check before anything loads, and a banner.

    python -m api.launch check-port   # exit 1 with a clear message when HOST:PORT is taken
    python -m api.launch banner       # the lines printed once the server is up

Light imports only (the settings), so that a busy port is reported in well under a second
rather than after the migrations, the bootstrap and the model load.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys

from config import Settings, get_settings

DEVELOPMENT_PASSWORD = "changethis"


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
