"""Reading prediction inputs: image decoding runs off the event loop, a bounded number at a time."""

from __future__ import annotations

import threading
import time

import anyio
import numpy as np

from api import inputs
from config import Settings


def test_no_more_images_are_decoded_at_once_than_the_setting_allows(monkeypatch):
    active = peak = 0
    lock = threading.Lock()

    def slow_decode(data: bytes, settings: Settings) -> np.ndarray:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return np.zeros((1, 1, 3), dtype=np.uint8)

    monkeypatch.setattr(inputs, "decode_checked_image", slow_decode)
    settings = Settings(MAX_CONCURRENT_DECODES=2)
    limiter = inputs.make_decode_limiter(settings)

    async def decode_many() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(inputs.decode_upload, b"image", settings, limiter)

    anyio.run(decode_many)
    assert peak == 2


def test_decoding_does_not_block_the_event_loop(monkeypatch):
    monkeypatch.setattr(inputs, "decode_checked_image", lambda data, settings: time.sleep(0.3))
    settings = Settings()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        for _ in range(10):
            await anyio.sleep(0.02)
            ticks += 1

    async def decode_while_ticking() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(tick)
            await inputs.decode_upload(b"image", settings, inputs.make_decode_limiter(settings))

    anyio.run(decode_while_ticking)
    assert ticks == 10
