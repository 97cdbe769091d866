"""Refresh the README's pictures: the seller page with suggestions, and the admin console.

Drives the real browser (Debian's Chromium through Playwright) against a running service,
for example the one `make run` starts:

    .venv/bin/python scripts/screenshots.py [--url http://127.0.0.1:8000] [--out docs/img]

It signs in as the development admin (or --username/--password), creates the seller
`demo-seller` if it does not exist, types a listing on the seller page and writes
`seller.png`, `seller-phone.png` and `admin.png` (viewport-sized, small PNGs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SELLER = ("demo-seller", "demo-seller-pass-2026")
TITLE = "Bâche de piscine hors sol 4x8 m avec filtre à sable"
DESCRIPTION = "Bâche d'hivernage renforcée, œillets inox, pour piscine tubulaire rectangulaire."


def ensure_seller(url: str, username: str, password: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        login = client.post("/login", data={"username": username, "password": password})
        login.raise_for_status()
        token = login.json()["access_token"]
        response = client.post(
            "/register",
            json={"username": SELLER[0], "password": SELLER[1], "role": "seller"},
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.status_code not in (201, 409):
            response.raise_for_status()


def sign_in(page, username: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.locator("#signin-username").fill(username)
    page.locator("#signin-password").fill(password)
    page.locator("#signin-form button[type=submit]").click()


def main(argv: list[str] | None = None) -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="changethis")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ensure_seller(args.url, args.username, args.password)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 860})
        page.goto(args.url + "/")
        sign_in(page, *SELLER)
        page.locator("#designation").fill(TITLE)
        page.locator("#description").fill(DESCRIPTION)
        page.locator("#suggestions .suggestion").first.wait_for()
        page.wait_for_timeout(300)
        page.screenshot(path=str(args.out / "seller.png"))

        phone = browser.new_page(viewport={"width": 390, "height": 760})
        phone.goto(args.url + "/")
        sign_in(phone, *SELLER)
        phone.locator("#designation").fill(TITLE)
        phone.locator("#quick-summary").wait_for()
        phone.wait_for_timeout(300)
        phone.screenshot(path=str(args.out / "seller-phone.png"))

        admin = browser.new_page(viewport={"width": 1200, "height": 860})
        admin.goto(args.url + "/admin")
        sign_in(admin, args.username, args.password)
        admin.locator("#versions-table tbody tr").first.wait_for()
        admin.wait_for_timeout(500)
        admin.screenshot(path=str(args.out / "admin.png"))
        browser.close()
    for name in ("seller.png", "seller-phone.png", "admin.png"):
        path = args.out / name
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")  # noqa: T201 - the script says what it wrote


if __name__ == "__main__":
    main()
