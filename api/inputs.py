"""Reading a prediction request: multipart form or JSON, validated into `PredictInput`.

Every way a client can get this wrong maps to a clear 4xx (`InputError`), never a 500.
Text cleaning and image decoding are the shared `models.preprocessing` functions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from api.params import NUL_MESSAGE
from config import Settings
from models.preprocessing import ImageDecodeError, combine_text, decode_image

MIN_TOP_K, MAX_TOP_K, DEFAULT_TOP_K = 1, 27, 5


class InputError(Exception):
    """A client error with its HTTP status and the outcome label used in the logs."""

    def __init__(self, status_code: int, detail: str, outcome: str = "invalid_input") -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.outcome = outcome


class BodyTooLargeError(Exception):
    """The request body exceeded the configured maximum while it was being read."""


class BodyReadTimeoutError(Exception):
    """The client stopped sending the request body (or sent it too slowly)."""


@dataclass
class PredictInput:
    designation: str = ""
    description: str = ""
    text: str = ""  # cleaned, combined; "" when nothing usable was sent
    image: np.ndarray | None = None
    top_k: int = DEFAULT_TOP_K
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if self.text and self.image is not None:
            return "fusion"
        return "text" if self.text else "image"


class PredictJSON(BaseModel):
    """The JSON form of a prediction request."""

    model_config = ConfigDict(extra="forbid")

    designation: str | None = None
    description: str | None = None
    image_base64: str | None = Field(default=None, description="The image file, base64-encoded")
    top_k: int = Field(default=DEFAULT_TOP_K, ge=MIN_TOP_K, le=MAX_TOP_K)


BODY_TIMEOUT_MESSAGE = "The request body was not received in time"


def max_body_bytes(settings: Settings) -> int:
    """The largest request body accepted: a base64 image at the limit plus both texts."""
    return settings.MAX_IMAGE_BYTES * 4 // 3 + 8 * settings.MAX_TEXT_CHARS + 64 * 1024


async def read_fields(
    request: Request, settings: Settings, json_model: type[BaseModel], form_fields: set[str]
) -> tuple[str, dict[str, Any]]:
    """The request's fields from a multipart form or a JSON body; images as raw bytes."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type and not await request.body():
        return content_type, {}  # an empty request: "nothing usable sent", not a media-type error
    try:
        if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            return content_type, await _read_form(request, settings, form_fields)
        if content_type == "application/json":
            return content_type, await _read_json(request, settings, json_model)
    except BodyTooLargeError as exc:
        raise InputError(413, f"Request body over {max_body_bytes(settings)} bytes", "too_large") from exc
    except BodyReadTimeoutError as exc:
        raise InputError(408, BODY_TIMEOUT_MESSAGE, "timeout") from exc
    except HTTPException as exc:  # Starlette's own multipart errors (too many fields, bad boundary...)
        raise InputError(exc.status_code, str(exc.detail)) from exc
    raise InputError(
        415,
        "Unsupported content type: send multipart/form-data (with an image file) or application/json",
        "unsupported_media_type",
    )


async def parse_predict_request(request: Request, settings: Settings) -> PredictInput:
    content_type, fields = await read_fields(
        request, settings, PredictJSON, {"designation", "description", "image", "top_k"}
    )
    fields["top_k"] = _parse_top_k(fields.get("top_k"))
    for name in ("designation", "description"):
        check_text_length(name, fields.get(name) or "", settings)
    data: bytes | None = fields.get("image_bytes")
    image = None if data is None else await decode_upload(data, settings, request.app.state.decode_limiter)
    return _validate(fields, settings, content_type, image)


async def _read_form(request: Request, settings: Settings, allowed: set[str]) -> dict[str, Any]:
    form = await request.form(max_files=1, max_fields=8, max_part_size=8 * settings.MAX_TEXT_CHARS + 1024)
    unknown = set(form.keys()) - allowed
    if unknown:
        raise InputError(422, f"Unknown form field(s): {', '.join(shown(name) for name in sorted(unknown))}")
    fields: dict[str, Any] = {}
    for name in allowed - {"image"}:
        value = form.get(name)
        if isinstance(value, UploadFile):
            raise InputError(422, f"{name} must be a text field, not a file")
        fields[name] = value
    image = form.get("image")
    if isinstance(image, str):
        if image:
            raise InputError(422, "image must be a file upload (or use image_base64 with JSON)")
        image = None
    if image is not None:
        data = await image.read(settings.MAX_IMAGE_BYTES + 1)
        await image.close()
        # Browsers send an empty part without a filename when no file was chosen.
        if data or image.filename:
            fields["image_bytes"] = data
    return fields


async def _read_json(request: Request, settings: Settings, model: type[BaseModel]) -> dict[str, Any]:
    raw = await request.body()
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(422, f"Malformed JSON: {exc}") from exc
    except RecursionError as exc:
        raise InputError(422, "Malformed JSON: nested too deeply") from exc
    except ValueError as exc:  # an integer over Python's 4,300-digit conversion limit
        raise InputError(422, "Malformed JSON: a number is too long") from exc
    try:
        body = model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(shown(str(p)) for p in first["loc"]) or "body"
        raise InputError(422, f"{where}: {first['msg']}") from exc
    fields = body.model_dump(exclude={"image_base64"})
    encoded = (getattr(body, "image_base64", None) or "").strip()
    if encoded:
        fields["image_bytes"] = decode_base64_image(encoded, settings)
    return fields


def decode_base64_image(encoded: str, settings: Settings) -> bytes:
    """The bytes of a base64 image field (a data URL is tolerated); 413/422 InputError otherwise."""
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]
    if len(encoded) > settings.MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise InputError(413, f"Image over the limit of {settings.MAX_IMAGE_BYTES} bytes", "too_large")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(422, "image_base64 is not valid base64") from exc


def _parse_top_k(value: str | int | None) -> int:
    if isinstance(value, int):
        return value
    if value is None or value == "":
        return DEFAULT_TOP_K
    try:
        top_k = int(value)
    except ValueError as exc:
        raise InputError(422, f"top_k must be an integer from {MIN_TOP_K} to {MAX_TOP_K}") from exc
    if not MIN_TOP_K <= top_k <= MAX_TOP_K:
        raise InputError(422, f"top_k must be an integer from {MIN_TOP_K} to {MAX_TOP_K}")
    return top_k


def decode_checked_image(data: bytes, settings: Settings) -> np.ndarray:
    """Decode uploaded image bytes within the size limits (413/422 otherwise)."""
    if len(data) > settings.MAX_IMAGE_BYTES:
        raise InputError(413, f"Image over the limit of {settings.MAX_IMAGE_BYTES} bytes", "too_large")
    try:
        return decode_image(
            data,
            max_pixels=settings.MAX_IMAGE_PIXELS,
            max_decoded_bytes=settings.MAX_IMAGE_DECODED_BYTES,
            draft_pixels=settings.IMAGE_DRAFT_PIXELS,
        )
    except ImageDecodeError as exc:
        raise InputError(422, f"The image could not be read: {exc}") from exc


def make_decode_limiter(settings: Settings) -> anyio.CapacityLimiter:
    """The bound on images decoded at once (held on `app.state.decode_limiter`)."""
    return anyio.CapacityLimiter(settings.MAX_CONCURRENT_DECODES)


async def decode_upload(data: bytes, settings: Settings, limiter: anyio.CapacityLimiter) -> np.ndarray:
    """`decode_checked_image` in a worker thread, at most `limiter`'s number at a time.

    Off the event loop, so a slow image never stalls other requests; bounded, so that many
    large images at once cannot multiply the decoding memory.
    """
    return await anyio.to_thread.run_sync(decode_checked_image, data, settings, limiter=limiter)


def check_text_length(name: str, value: str, settings: Settings) -> None:
    if len(value) > settings.MAX_TEXT_CHARS:
        raise InputError(422, f"{name} is longer than the limit of {settings.MAX_TEXT_CHARS} characters")


def check_stored_text(name: str, value: str, settings: Settings) -> None:
    """`check_text_length`, and no NUL character (which the database refuses)."""
    check_text_length(name, value, settings)
    if "\x00" in value:
        raise InputError(422, f"{name} {NUL_MESSAGE}")


def shown(text: str, limit: int = 40) -> str:
    """Client-sent text as an error message may quote it: control characters escaped, cut short."""
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


def _validate(
    fields: dict[str, Any], settings: Settings, content_type: str, image: np.ndarray | None
) -> PredictInput:
    designation = fields.get("designation") or ""
    description = fields.get("description") or ""
    text = combine_text(designation, description)
    summary: dict[str, Any] = {
        "content_type": content_type,
        "designation_chars": len(designation),
        "description_chars": len(description),
        "text_chars": len(text),
        "has_image": False,
        "top_k": fields["top_k"],
    }
    data: bytes | None = fields.get("image_bytes")
    if data is not None and image is not None:
        summary.update(has_image=True, image_bytes=len(data), image_sha256=hashlib.sha256(data).hexdigest())
        summary.update(image_width=int(image.shape[1]), image_height=int(image.shape[0]))
    if not text and image is None:
        raise InputError(
            422,
            "Nothing to classify: send a designation, a description or an image (HTML or blanks alone do not count)",
        )
    return PredictInput(designation, description, text, image, fields["top_k"], summary)
