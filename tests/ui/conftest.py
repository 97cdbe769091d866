"""Browser fixtures: headless Chromium driven by Playwright, and the real app served by uvicorn.

The tests skip when Chromium or Playwright is missing locally, but fail when CI=true: CI must
never skip them silently. Screenshots go to tests/artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from config import Settings
from tests.api.conftest import ADMIN
from tests.api.serving import publish
from tests.conftest import exclusive

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
SECRET_KEY = "test-secret-key-that-is-long-enough-0123456789"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# Chromium reports every 4xx/5xx fetch on the console; the pages handle those themselves.
EXPECTED_CONSOLE = ("Failed to load resource",)


def _missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements-dev.txt)"
    if not CHROMIUM.exists():
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="session", autouse=True)
def _browser_available() -> None:
    """Skip the browser tests without a browser, before any model is trained; fail on CI."""
    reason = _missing_browser()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run: {reason}; CI must not skip them", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Chromium, for one test file: Playwright's sync API keeps an asyncio loop running in this
    thread while it is open, and tests that start a loop of their own (`anyio.run`) fail under
    it; a file runs whole in one test process, so the loop ends with the file."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def ui_settings(database_url: str, tmp_path: Path, quick_bundle: Path) -> Settings:
    """Settings of a fresh database and a model store whose production version is the quick bundle."""
    settings = Settings(
        DATABASE_URL=database_url,
        SECRET_KEY=SECRET_KEY,
        FIRST_ADMIN_USERNAME=ADMIN[0],
        FIRST_ADMIN_PASSWORD=ADMIN[1],
        MODEL_STORE_URI=str(tmp_path / "model-store"),
        MODEL_CACHE_DIR=tmp_path / "model-cache",
        IMAGE_STORE_URI=str(tmp_path / "images"),
        MODEL_POLL_SECONDS=0,
        LOG_FLUSH_SECONDS=0.1,
    )
    publish(settings.MODEL_STORE_URI, quick_bundle)
    return settings


@dataclass
class LiveServer:
    url: str
    app: object

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def token(self, username: str, password: str) -> str:
        with self.client() as client:
            response = client.post("/login", data={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def register(self, username: str, password: str, role: str = "seller") -> dict:
        admin = self.token(*ADMIN)
        with self.client() as client:
            response = client.post(
                "/register",
                json={"username": username, "password": password, "role": role},
                headers={"Authorization": f"Bearer {admin}"},
            )
        assert response.status_code == 201, response.text
        return response.json()

    def flush_logs(self) -> None:
        self.app.state.log_writer.flush()


@pytest.fixture
def live_server(ui_settings: Settings) -> Iterator[LiveServer]:
    """The real app on a free local port, served by uvicorn in a background thread."""
    import uvicorn

    from api.main import create_app

    app = create_app(ui_settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="ui-test-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 180
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@dataclass
class PageProblems:
    """JavaScript errors and unexpected console errors (CSP violations among them)."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page) -> None:  # type: ignore[no-untyped-def]
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"console: {message.text}")
                if message.type == "error" and not message.text.startswith(EXPECTED_CONSOLE)
                else None
            ),
        )


@pytest.fixture
def new_page(browser, request) -> Iterator[Callable]:
    """Open pages in fresh browser contexts; fails the test on any JavaScript or CSP error."""
    contexts, problems = [], PageProblems()

    def open_page(viewport: dict[str, int] = DESKTOP):  # type: ignore[no-untyped-def]
        context = browser.new_context(viewport=viewport)
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        problems.watch(page)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not problems.errors, "\n".join(problems.errors)


@pytest.fixture
def shoot(request) -> Callable:
    """Save a full-page screenshot as tests/artifacts/screenshots/<test>-<step>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    test_name = request.node.name.replace("[", "-").replace("]", "")

    def save(page, step: str) -> Path:  # type: ignore[no-untyped-def]
        path = SCREENSHOTS / f"{test_name}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


def sign_in(page, username: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.locator("#signin-username").fill(username)
    page.locator("#signin-password").fill(password)
    page.locator("#signin-form button[type=submit]").click()


AXE_DIR = Path(__file__).resolve().parent / "axe"
AXE_SCRIPT = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="session")
def axe_script() -> str:
    """axe-core's browser build, installed from tests/ui/axe/package-lock.json (npm ci) if missing."""
    # Both test workers may get here at once: one installs, the other waits for it.
    with exclusive(AXE_DIR / ".install.lock"):
        if not AXE_SCRIPT.is_file() and shutil.which("npm"):
            subprocess.run(
                ["npm", "ci", "--prefix", str(AXE_DIR), "--no-audit", "--no-fund", "--silent"],
                check=False,
                timeout=300,
            )
    if not AXE_SCRIPT.is_file():
        reason = f"axe-core is not installed ({AXE_SCRIPT}; run npm ci --prefix {AXE_DIR})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return AXE_SCRIPT.read_text(encoding="utf-8")


def axe_violations(page, script: str, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:  # type: ignore[no-untyped-def]
    """Run axe-core on the page as it is; the violations of these impacts, one line each.

    The script is evaluated in the page rather than added as a <script> tag, so that the
    pages' Content-Security-Policy (script-src 'self') does not have to change for tests.
    """
    page.evaluate(script)
    results = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} -- " + "; ".join(n["target"][0] for n in v["nodes"][:5])
        for v in results["violations"]
        if v["impact"] in impacts
    ]


def block_the_internet(page) -> list[str]:  # type: ignore[no-untyped-def]
    """Abort every request that does not go to this machine; returns the URLs refused."""
    refused: list[str] = []

    def route(route) -> None:  # type: ignore[no-untyped-def]
        host = urlsplit(route.request.url).hostname or ""
        if host in ("127.0.0.1", "localhost", "::1") or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", route)
    return refused
