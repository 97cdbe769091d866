"""Request bodies over real sockets: oversized uploads get a readable 413, stalled ones a 408.

The in-process test client cannot show either (it never resets a connection, nor stalls):
these tests serve the app with uvicorn on a free port and talk to it as plain clients do.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
import uvicorn

from config import Settings
from tests.api.conftest import ADMIN

IDLE_TIMEOUT = 1.0
TOTAL_TIMEOUT = 3.0


@pytest.fixture
def server(settings: Settings) -> Iterator[tuple[str, int]]:
    """The app served by uvicorn in a thread; yields (host, port)."""
    from api.main import create_app

    settings = settings.model_copy(
        update={"BODY_IDLE_TIMEOUT_SECONDS": IDLE_TIMEOUT, "BODY_READ_TIMEOUT_SECONDS": TOTAL_TIMEOUT}
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield sock.getsockname()
    server.should_exit = True
    thread.join(15)
    sock.close()


def url(server: tuple[str, int], path: str) -> str:
    return f"http://{server[0]}:{server[1]}{path}"


def token(server: tuple[str, int]) -> str:
    data = f"username={ADMIN[0]}&password={ADMIN[1]}".encode()
    with urllib.request.urlopen(url(server, "/login"), data=data, timeout=30) as response:
        return json.load(response)["access_token"]


def multipart(size: int) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    body += b"\xff" * size + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_a_30_mb_upload_gets_a_413_that_a_plain_urllib_client_reads(server):
    body, content_type = multipart(30 * 1024 * 1024)
    request = urllib.request.Request(
        url(server, "/predict"),
        data=body,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {token(server)}"},
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=60)
    assert raised.value.code == 413
    assert "Request body over" in json.load(raised.value)["detail"]


def test_a_chunked_upload_over_the_limit_gets_a_413_too(server):
    conn = http.client.HTTPConnection(*server, timeout=60)
    body, content_type = multipart(30 * 1024 * 1024)
    chunks = (body[i : i + 256 * 1024] for i in range(0, len(body), 256 * 1024))
    conn.request(
        "POST",
        "/predict",
        body=chunks,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {token(server)}"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert response.status == 413
    assert "Request body over" in json.loads(response.read())["detail"]


def stalled_upload(server: tuple[str, int], path: str, bearer: str | None = None) -> socket.socket:
    """A connection that sends headers announcing 1,000 bytes of JSON, 10 of them, then stalls."""
    sock = socket.create_connection(server, timeout=10)
    auth = f"Authorization: Bearer {bearer}\r\n" if bearer else ""
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: 1000\r\n\r\n".encode()
        + b'{"usernam'
    )
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("path", ["/predict", "/products", "/register"])
def test_a_stalled_upload_is_answered_408_and_closed_within_the_idle_timeout(server, path):
    sock = stalled_upload(server, path, token(server))
    started = time.monotonic()
    answer = read_until_closed(sock)  # recv times out after 10 s if the server never answers
    elapsed = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert IDLE_TIMEOUT * 0.8 <= elapsed < IDLE_TIMEOUT + 2


def test_a_body_trickled_byte_by_byte_is_cut_at_the_total_timeout(server):
    sock = socket.create_connection(server, timeout=10)
    sock.sendall(
        b"POST /register HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    started = time.monotonic()
    sock.settimeout(IDLE_TIMEOUT / 4)
    answer = b""
    while time.monotonic() - started < TOTAL_TIMEOUT + 3:
        try:
            sock.sendall(b" ")
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if answer:
            break
    elapsed = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert elapsed < TOTAL_TIMEOUT + 1.5


def test_many_stalled_uploads_are_all_closed_and_health_keeps_answering(server):
    bearer = token(server)
    sockets = [stalled_upload(server, "/products", bearer) for _ in range(100)]
    started = time.monotonic()
    with urllib.request.urlopen(url(server, "/health"), timeout=5) as response:
        assert response.status == 200
    answers = [read_until_closed(sock) for sock in sockets]
    elapsed = time.monotonic() - started
    for sock in sockets:
        sock.close()
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers)
    assert elapsed < IDLE_TIMEOUT + 3
