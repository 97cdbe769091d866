"""The browser pages: the seller's listing page at `/` and the admin console at `/admin`.

Both are static HTML with plain ES modules under `api/static/` (no build step, nothing fetched
from outside at run time); they call the JSON API with the bearer token kept in sessionStorage.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)

# The pages carry no secrets, but they must not be framed by other sites, and the API is same-origin.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def static_files() -> StaticFiles:
    """The `/static` mount (CSS, JS modules and the vendored chart library)."""
    return StaticFiles(directory=STATIC_DIR)


@router.get("/")
def listing_page() -> FileResponse:
    """The seller's listing page."""
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


@router.get("/admin")
def admin_console() -> FileResponse:
    """The admin console."""
    return FileResponse(STATIC_DIR / "admin.html", headers=PAGE_HEADERS)
