"""The web app's shell in Chromium: it loads with no console error and no CSP violation, its headers and caching
hold, deep links reload into it, the sign-in screen works in light, dark and at 360 px, and axe finds nothing
serious. Screenshots of each screen go to `.artifacts/browser/`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from gateway.routes import web
from tests.browser.conftest import NewPage, Page
from tests.support.stack import Stack

if TYPE_CHECKING:
    from playwright.async_api import ViewportSize

MOBILE: ViewportSize = {"width": 360, "height": 740}
SCREENS: dict[str, dict[str, Any]] = {
    "light": {"color_scheme": "light"},
    "dark": {"color_scheme": "dark"},
    "mobile": {"viewport": MOBILE},
}


async def _sign_in_screen(page: Page, path: str = "/") -> Any:
    response = await page.open(path)
    await page.page.get_by_label("API token").wait_for()
    return response


async def _no_horizontal_scroll(page: Page) -> None:
    widths = await page.page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the page scrolls horizontally: {widths}"


async def _serious(page: Page) -> list[str]:
    from axe_playwright_python.async_playwright import Axe

    results = await Axe().run(page.page)
    violations = results.response["violations"]
    return [f"{v['id']}: {v['help']}" for v in violations if v["impact"] in {"serious", "critical"}]


async def test_the_shell_loads_clean_with_its_headers(new_page: NewPage) -> None:
    page = await new_page()
    assets: dict[str, str] = {}
    page.page.on("response", lambda r: assets.update({r.url: r.headers.get("cache-control", "")}))
    response = await _sign_in_screen(page)
    headers = response.headers
    assert headers["content-security-policy"] == web.CONTENT_SECURITY_POLICY
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-cache"
    hashed = {url: control for url, control in assets.items() if "/assets/" in url}
    assert {url.rsplit("/", 1)[1] for url in hashed} >= {"app.js", "app.css", "lit.js", "client.js", "strings.js"}
    assert set(hashed.values()) == {web.IMMUTABLE}
    await page.clean()


async def test_a_deep_link_reloads_into_the_shell_and_api_paths_stay_problems(new_page: NewPage) -> None:
    page = await new_page()
    await _sign_in_screen(page, "/c/0190a-deep-link")
    await page.page.reload()
    await page.page.get_by_label("API token").wait_for()
    await page.clean()
    api = await page.page.request.get(page.base + "/api/v1/nothing-here")
    assert api.status == 401
    assert api.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("screen", sorted(SCREENS))
async def test_the_sign_in_screen_in_light_dark_and_mobile(new_page: NewPage, screen: str) -> None:
    page = await new_page(**SCREENS[screen])
    await _sign_in_screen(page)
    await page.page.get_by_role("button", name="Sign in").click()  # no token: refused in the page
    await page.page.get_by_role("alert").filter(has_text="Paste a token first.").wait_for()
    assert await page.page.evaluate("document.activeElement.id") == "token"
    await _no_horizontal_scroll(page)
    background = await page.page.evaluate("getComputedStyle(document.body).backgroundColor")
    dark = screen == "dark"
    assert (background == "rgb(15, 18, 22)") == dark, background
    assert await _serious(page) == []
    await page.screenshot(f"sign-in-{screen}")
    await page.clean()


async def test_keyboard_focus_is_visible(new_page: NewPage) -> None:
    page = await new_page()
    await _sign_in_screen(page)
    await page.page.keyboard.press("Tab")
    focused = await page.page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [document.activeElement.id, s.outlineStyle, s.outlineWidth]; })()"
    )
    assert focused[0] == "token"
    assert focused[1] == "solid"
    assert focused[2] == "3px"


async def test_sign_in_and_out(new_page: NewPage, stack: Stack) -> None:
    page = await new_page()
    await _sign_in_screen(page)
    token = page.page.get_by_label("API token")
    await token.fill("stw_not_a_token")
    await token.press("Enter")
    await page.page.get_by_role("alert").filter(has_text="not accepted").wait_for()
    await token.fill(stack.dev_token)
    await page.page.get_by_role("button", name="Sign in").click()
    await page.page.get_by_role("button", name="Sign out").wait_for()
    await page.page.get_by_text("Signed in as").wait_for()
    cookies = await page.context.cookies()
    assert all(stack.dev_token not in cookie["value"] for cookie in cookies)
    assert await page.page.evaluate("document.cookie") == ""  # HttpOnly: no script sees it
    await page.screenshot("frame-light")
    assert await _serious(page) == []
    await page.page.emulate_media(color_scheme="dark")
    await page.screenshot("frame-dark")
    assert await _serious(page) == []
    await page.page.set_viewport_size(MOBILE)
    await _no_horizontal_scroll(page)
    await page.screenshot("frame-mobile")
    await page.page.reload()  # the cookie keeps the session
    await page.page.get_by_role("button", name="Sign out").click()
    await page.page.get_by_label("API token").wait_for()
    await page.page.reload()
    await page.page.get_by_label("API token").wait_for()
    await page.clean()
