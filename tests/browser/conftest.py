"""Browser tests: Playwright for Python driving Debian's Chromium (`/usr/bin/chromium`, never a downloaded browser)
against the session's in-process stack, through its gateway on a real port.

One browser per session, a new context (cookies, storage, colour scheme, viewport of its own) per test. Without
Playwright or Chromium the tests are skipped with the reason, unless `CI=true`: there they fail (`make test`
installs Chromium from Debian's packages when it can). Every page records its console errors and Content Security
Policy violations; `Page.clean()` fails a test that saw any. Screenshots go to `.artifacts/browser/` (ignored).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp.test_utils import TestClient

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, ConsoleMessage
    from playwright.async_api import Page as PlaywrightPage

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = REPO / ".artifacts" / "browser"
SESSION_PATH = "/api/v1/session"
# The one failed load that is no error: asking for the session when signed out answers 401 by contract (so does a
# token that is not accepted); Chromium logs each failed fetch on the console.
EXPECTED_401 = "Failed to load resource: the server responded with a status of 401"
RECORD_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__csp.push(`${event.violatedDirective} ${event.blockedURI} ${event.sourceFile}:${event.lineNumber}`);
});
"""


def _missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401 - only to learn whether it is installed
    except ImportError:
        return "Playwright for Python is not installed (it is in the dev extra: pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"Chromium is missing at {CHROMIUM}: 'make browser' installs Debian's chromium when run as root"
    return None


@dataclass
class Page:
    """A page in a context of its own, with what its console and CSP reported."""

    page: PlaywrightPage
    context: BrowserContext
    base: str
    errors: list[str] = field(default_factory=list)

    async def open(self, path: str = "/") -> Any:
        return await self.page.goto(self.base + path)

    async def csp_violations(self) -> list[str]:
        violations: list[str] = await self.page.evaluate("window.__csp || []")
        return violations

    async def clean(self) -> None:
        """Fail on any console error or CSP violation seen so far."""
        assert self.errors == []
        assert await self.csp_violations() == []

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "") if message.location else ""
        if message.text.startswith(EXPECTED_401) and url.endswith(SESSION_PATH):
            return
        self.errors.append(f"{message.text} ({url})")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests are required with CI=true: {reason}")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield launched
        await launched.close()


NewPage = Callable[..., Awaitable[Page]]


@pytest.fixture
async def new_page(browser: Browser, gateway: TestClient[Any, Any]) -> AsyncIterator[NewPage]:
    """Open pages in fresh contexts: `await new_page(color_scheme="dark", viewport={...})`."""
    base = str(gateway.make_url("")).rstrip("/")
    contexts: list[BrowserContext] = []

    async def make(**options: Any) -> Page:
        options.setdefault("viewport", {"width": 1280, "height": 800})
        context = await browser.new_context(**options)
        contexts.append(context)
        await context.add_init_script(RECORD_CSP)
        page = await context.new_page()
        wrapped = Page(page, context, base)
        page.on("console", wrapped.on_console)
        page.on("pageerror", lambda error: wrapped.errors.append(f"uncaught: {error}"))
        return wrapped

    yield make
    for context in contexts:
        await context.close()
