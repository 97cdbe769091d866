"""`make run`'s port check and banner, the malloc arena cap (api/launch.py), and the training-data kinds of /models."""

import os
import socket
import subprocess
import sys

from api.launch import banner, port_problem
from api.model_info import training_data
from config import Settings


def test_a_busy_port_is_reported_with_what_to_do():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        problem = port_problem("127.0.0.1", port)
    assert problem is not None and f"PORT={port + 1} make run" in problem
    assert port_problem("127.0.0.1", port) is None  # free again once closed


def test_the_banner_names_both_pages_the_docs_and_the_development_sign_in():
    text = banner(Settings(PORT=9123, FIRST_ADMIN_USERNAME="admin", FIRST_ADMIN_PASSWORD="changethis"))
    for line in ("http://127.0.0.1:9123/", "/admin", "/docs", "admin / changethis"):
        assert line in text


def test_a_non_default_admin_password_is_not_printed():
    text = banner(Settings(FIRST_ADMIN_PASSWORD="a-real-password-of-mine"))
    assert "a-real-password-of-mine" not in text


def test_training_data_tells_synthetic_folders_and_products_apart():
    assert training_data({"training_data": {"kind": "synthetic"}})["demo"] is True
    assert training_data({"data_sources": "synthetic:/tmp/catalogue"})["label"] == "synthetic demo catalogue"
    assert training_data({"data_sources": "/data/rakuten"})["kind"] == "folder"
    assert training_data({"data_sources": "snapshot:s3://b/x[train]"})["kind"] == "products"
    assert training_data({"data_sources": "products[verified]"})["demo"] is False
    assert training_data({})["kind"] == "unknown"


def test_several_workers_build_their_app_from_the_factory_on_one_bound_socket(monkeypatch):
    import api.__main__ as entry

    seen: dict = {}

    class Config:
        def __init__(self, app, **options):  # type: ignore[no-untyped-def]
            seen.update(app=app, **options)

        def bind_socket(self):  # type: ignore[no-untyped-def]
            seen["bound"] = True
            return "socket"

    class Supervisor:
        def __init__(self, config, sockets):  # type: ignore[no-untyped-def]
            seen["sockets"] = sockets

        def run(self) -> None:
            seen["supervised"] = True

    monkeypatch.setattr(entry.uvicorn, "Config", Config)
    monkeypatch.setattr(entry, "Multiprocess", Supervisor)
    monkeypatch.setattr(entry, "port_problem", lambda host, port: None)
    monkeypatch.setattr(entry, "get_settings", lambda: Settings(API_WORKERS=2, LOG_LEVEL="INFO"))
    entry.main([])
    assert seen["app"] == "api.main:create_app" and seen["factory"] is True and seen["workers"] == 2
    assert seen["bound"] and seen["sockets"] == ["socket"] and seen["supervised"]
    # Each worker is a fresh interpreter: the project's loggers get a handler at LOG_LEVEL there.
    assert seen["log_config"]["root"] == {"handlers": ["project"], "level": "INFO"}


ARENAS_AFTER_THREADS = """
import ctypes, sys, threading
from api.launch import limit_malloc_arenas
if sys.argv[1] == "cap":
    assert limit_malloc_arenas(2)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
start = threading.Barrier(8)

def allocate():
    start.wait()
    for _ in range(2000):  # many small blocks from 8 threads at once: contention
        libc.free(libc.malloc(256))

threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc.malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def _arenas(mode: str, env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-c", ARENAS_AFTER_THREADS, mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stderr.count("Arena ")


def test_the_server_process_caps_malloc_arenas_for_itself_and_its_workers():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _arenas("cap", env) <= 2 < _arenas("free", env)
    child = "import os; from api.launch import limit_malloc_arenas; limit_malloc_arenas(2); " + (
        "import subprocess, sys; "
        "subprocess.run([sys.executable, '-c', 'import os; print(os.environ[\"MALLOC_ARENA_MAX\"])'])"
    )
    assert (
        subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True).stdout == "2\n"
    )


def test_an_operators_malloc_arena_setting_is_left_alone():
    env = {**os.environ, "MALLOC_ARENA_MAX": "4"}
    code = "import os; from api.launch import limit_malloc_arenas; print(limit_malloc_arenas(2), os.environ['MALLOC_ARENA_MAX'])"
    assert (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout
        == "True 4\n"
    )
