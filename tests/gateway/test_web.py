"""The web app's serving (gateway/routes/web.py): the shell at / and at deep links, content-hashed assets cached for
a year, the shell never cached, security headers on every answer, API paths untouched; and the vendored modules
checked against their pins (tests/support/web_vendor.py, `make check-vendor`). The browser tests: tests/browser/."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.routes import web
from steward.errors import Reason
from tests.support import web_vendor
from tests.support.gateway_http import refusal

Client = TestClient[Any, Any]


def _secure(headers: Any, policy: str) -> None:
    assert headers["Content-Security-Policy"] == policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"


def _version(gateway: Client) -> str:
    assert gateway.app is not None
    version: str = gateway.app[web.WEB_APP].version
    return version


@pytest.mark.parametrize("path", ["/", "/c/0190-abc", "/inbox", "/settings/tokens/"])
async def test_the_shell_answers_the_root_and_deep_links(gateway: Client, path: str) -> None:
    response = await gateway.get(path)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    _secure(response.headers, web.CONTENT_SECURITY_POLICY)
    body = await response.text()
    assert f'src="/assets/{_version(gateway)}/app.js"' in body
    assert "{{assets}}" not in body
    assert "<script>" not in body  # nothing inline
    assert "style=" not in body


async def test_the_shell_revalidates_with_its_etag(gateway: Client) -> None:
    etag = (await gateway.get("/")).headers["ETag"]
    again = await gateway.get("/c/x", headers={"If-None-Match": etag})
    assert again.status == 304
    assert (await gateway.get("/", headers={"If-None-Match": '"other"'})).status == 200


async def test_hashed_assets_are_cached_for_a_year_and_compressed(gateway: Client) -> None:
    url = f"/assets/{_version(gateway)}/vendor/lit.js"
    response = await gateway.get(url, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert response.headers["Content-Encoding"] == "gzip"
    _secure(response.headers, web.CONTENT_SECURITY_POLICY)
    plain = await gateway.get(url, headers={"Accept-Encoding": "identity"})
    assert gzip.decompress(await response.read()) == await plain.read()
    assert "Content-Encoding" not in plain.headers
    icon = await gateway.get(f"/assets/{_version(gateway)}/icon.svg")
    assert icon.headers["Content-Type"] == "image/svg+xml; charset=utf-8"


@pytest.mark.parametrize("path", ["/assets/0000000000000000/app.js", "/assets/{v}/nope.js", "/assets/{v}/index.html"])
async def test_another_version_or_a_missing_asset_is_a_404_problem(gateway: Client, path: str) -> None:
    response = await gateway.get(path.format(v=_version(gateway)))
    assert await refusal(response, 404) == Reason.ROUTE_NOT_FOUND
    _secure(response.headers, web.CONTENT_SECURITY_POLICY)


@pytest.mark.parametrize("path", ["/api/v1/nothing-here", "/v1/nothing", "/mcp/x", "/favicon.ico", "/healthz/x"])
async def test_api_and_file_paths_never_answer_the_shell(gateway: Client, auth: dict[str, str], path: str) -> None:
    response = await gateway.get(path, headers=auth)
    assert await refusal(response, 404) == Reason.ROUTE_NOT_FOUND
    _secure(response.headers, web.API_CONTENT_SECURITY_POLICY)
    unauthenticated = await gateway.get("/api/v1/nothing-here")
    assert await refusal(unauthenticated, 401) == Reason.TOKEN_MISSING


async def test_api_answers_and_streams_carry_the_security_headers(gateway: Client, auth: dict[str, str]) -> None:
    _secure((await gateway.get("/healthz")).headers, web.API_CONTENT_SECURITY_POLICY)
    _secure((await gateway.get("/api/v1/conversations", headers=auth)).headers, web.API_CONTENT_SECURITY_POLICY)


async def test_app_paths_take_only_get(gateway: Client, auth: dict[str, str]) -> None:
    response = await gateway.post("/c/abc", data=b"", headers=auth)
    assert await refusal(response, 405) == Reason.METHOD_NOT_ALLOWED


def test_the_version_follows_the_content(tmp_path: Path) -> None:
    folder = tmp_path / "web"
    shutil.copytree(web_vendor.REPO / "gateway" / "web", folder)
    first = web.load(folder)
    assert first.templates == {"/", web.ASSET_TEMPLATE, web.APP_TEMPLATE}
    (folder / "app.css").write_text((folder / "app.css").read_text() + "\n/* changed */\n")
    (folder / "sw.js").write_text("// a service worker\n")
    second = web.load(folder)
    assert second.version != first.version
    assert f"/assets/{second.version}/app.js".encode() in second.shell.body
    assert "/sw.js" in second.templates  # a root file gets its route when the folder holds it


def test_the_vendored_modules_match_their_pins() -> None:
    assert web_vendor.problems() == []


def test_a_vendored_file_changed_or_a_pin_moved_is_found(tmp_path: Path) -> None:
    vendor = tmp_path / "vendor"
    shutil.copytree(web_vendor.VENDOR, vendor)
    with (vendor / "marked.js").open("a") as file:
        file.write("//")
    pins = json.loads((vendor / "pins.json").read_text())
    pins["modules"]["lit"]["version"] = "3.0.0"
    pins["modules"]["uplot"] = {"package": "uplot", "version": "1.6.32"}
    (vendor / "pins.json").write_text(json.dumps(pins))
    found = web_vendor.problems(vendor)
    assert any(p.startswith("marked: marked.js does not match") for p in found), found
    assert any(p.startswith("lit: vendored lit@3.3.3, pinned lit@3.0.0") for p in found), found
    assert any(p.startswith("uplot is pinned but not vendored") for p in found), found
    assert len(found) == 3


def test_the_app_s_javascript_stays_within_its_budget() -> None:
    """The issue's budget: 100 KB of JavaScript gzipped (the vendored modules included, so it holds with margin)."""
    app = web.load()
    scripts = [file.gzipped for path, file in app.assets.items() if path.endswith(".js")]
    assert len(scripts) >= 6  # app, client, strings and the three vendored modules
    total = sum(len(gzipped or b"") for gzipped in scripts)
    assert total <= 100 * 1024, f"{total} bytes of JavaScript gzipped"
