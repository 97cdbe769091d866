"""An ASGI middleware that bounds every request body in size and in time.

- Size: a body over `max_bytes` is a 413, decided from `Content-Length` when the client sends
  one, or while it streams otherwise. Before answering, the rest of the body is read and
  discarded (up to `drain_bytes` more): an ordinary HTTP/1.1 client sends its whole body before
  it reads the answer, and a server that closes with the body unread makes the kernel reset the
  connection, so that the client sees "connection reset by peer" instead of the 413.
- Time: the body must keep coming, at most `idle_timeout` seconds between two chunks and
  `total_timeout` for all of it, or the answer is a 408 and the connection is closed: a client
  that stalls mid-upload (slowloris) no longer holds a connection and a task for ever.

Routes see the failures as exceptions (`BodyTooLargeError`, `BodyReadTimeoutError`) from
`receive`; whatever answer a route or FastAPI then makes of them (FastAPI turns a failed body
read into a 400), the client gets the 413 or the 408.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.inputs import BODY_TIMEOUT_MESSAGE, BodyReadTimeoutError, BodyTooLargeError


@dataclass
class _Body:
    seen: int = 0
    complete: bool = False  # the last chunk (or a disconnect) was received
    failure: int | None = None  # 413 or 408 once the body broke a limit
    started: bool = False  # a response has started
    replaced: bool = False  # the app's response is being swallowed for ours


class RequestBodyGuard:
    """Refuse bodies over `max_bytes` (413) and bodies that arrive too slowly (408)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        drain_bytes: int,
        idle_timeout: float,
        total_timeout: float,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes
        self.idle_timeout = idle_timeout
        self.total_timeout = total_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_timeout
        body = _Body()

        async def timed_receive() -> Message:
            if body.complete:  # after the body: e.g. waiting for a disconnect, not bounded here
                return await receive()
            timeout = min(self.idle_timeout, deadline - loop.time())
            try:
                if timeout <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                body.failure = body.failure or 408
                raise BodyReadTimeoutError from None
            if message["type"] == "http.request":
                body.seen += len(message.get("body", b""))
                body.complete = not message.get("more_body", False)
            else:  # http.disconnect
                body.complete = True
            return message

        async def drain() -> bool:
            """Read and discard the rest of the body, within bounds; True if all of it was read."""
            while not body.complete and body.seen <= self.max_bytes + self.drain_bytes:
                try:
                    await timed_receive()
                except BodyReadTimeoutError:
                    return False
            return body.complete

        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            body.failure = 413
            drained = int(length) <= self.max_bytes + self.drain_bytes and await drain()
            await self._refuse(send, 413, keep_alive=drained)
            return

        async def limited_receive() -> Message:
            message = await timed_receive()
            if body.seen > self.max_bytes:
                body.failure = 413
                await drain()
                raise BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            if body.replaced:
                return
            if message["type"] == "http.response.start":
                body.started = True
                if body.failure is not None and message["status"] != body.failure:
                    body.replaced = True
                    await self._refuse(send, body.failure, keep_alive=body.complete)
                    return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if body.failure is None or body.started:
                raise
            await self._refuse(send, body.failure, keep_alive=body.complete)

    async def _refuse(self, send: Send, status: int, *, keep_alive: bool) -> None:
        detail = f"Request body over {self.max_bytes} bytes" if status == 413 else BODY_TIMEOUT_MESSAGE
        content = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        if not keep_alive:  # the rest of the body is unread: this connection cannot serve another request
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})
