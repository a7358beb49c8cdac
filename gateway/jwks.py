"""The OIDC issuer's signing keys (a JWKS document), fetched over HTTP without blocking the loop, and cached.

- Keys are fetched on first need and again when the set is older than `max_age` seconds.
- A token naming a key id (`kid`) not in the set triggers a fetch too (the issuer may have rotated its keys),
  but fetches start at most once every `min_interval` seconds, whatever the tokens say: a flood of tokens
  with made-up key ids costs the issuer one request per interval. Concurrent requests share one fetch.
- When a fetch fails (the issuer is down, slow, or answers something that is not a key set), keys already
  known are still used for up to `STALE_GRACE_SECONDS` past `max_age`; a key id that cannot be looked up is
  `JwksUnavailableError` (503 at the gateway), never an acceptance.
- Only public signature keys are kept: `kty` RSA, EC or OKP, `use` absent or `sig`, with a string `kid`.
  A symmetric (`oct`) key in the set is ignored, so no token can be checked with an HMAC of public data.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog

log = structlog.get_logger(__name__)

MAX_JWKS_BYTES = 512 * 1024
STALE_GRACE_SECONDS = 3600.0
KEY_TYPES = frozenset({"RSA", "EC", "OKP"})


class JwksUnavailableError(Exception):
    """The key set could not be fetched, and the key asked for is not known from an earlier fetch."""


def signing_keys(document: object) -> dict[str, dict[str, Any]]:
    """The usable public signature keys of a JWKS document, by key id; ValueError for a document that is not
    a key set at all."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set: no keys list")
    keys: dict[str, dict[str, Any]] = {}
    for key in document["keys"]:
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str) or not key["kid"]:
            continue
        if key.get("kty") not in KEY_TYPES or key.get("use", "sig") != "sig":
            continue
        keys.setdefault(key["kid"], key)  # a key id given twice: the first one counts
    return keys


class JwksCache:
    """One issuer's key set: `get(kid)` answers a key, None for a key id the issuer does not have, or raises
    `JwksUnavailableError`."""

    def __init__(
        self,
        url: str,
        *,
        max_age: float,
        min_interval: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._max_age = max_age
        self._min_interval = min_interval
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched: float | None = None  # when the last successful fetch ended
        self._attempted: float | None = None  # when the last fetch began
        self._failed = False  # whether the last fetch failed
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0  # fetches begun, for tests and logs

    def _fresh(self, now: float) -> bool:
        return self._fetched is not None and now - self._fetched < self._max_age

    def _usable(self, now: float) -> bool:
        return self._fetched is not None and now - self._fetched < self._max_age + STALE_GRACE_SECONDS

    def _may_fetch(self) -> bool:
        return self._attempted is None or self._clock() - self._attempted >= self._min_interval

    async def get(self, kid: str) -> dict[str, Any] | None:
        if self._fresh(self._clock()) and kid in self._keys:
            return self._keys[kid]
        async with self._lock:  # free unless a fetch is under way, which this request then waits for
            if self._may_fetch():
                await self._fetch()
        if kid in self._keys and self._usable(self._clock()):
            return self._keys[kid]
        if self._failed:
            raise JwksUnavailableError("the issuer's keys cannot be fetched")
        return None

    async def _fetch(self) -> None:
        self._attempted = self._clock()
        self.fetches += 1
        try:
            keys = await self._download()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._failed = True
            log.warning("jwks_fetch_failed", url=self._url, error=type(exc).__name__, detail=str(exc)[:200])
            return
        self._keys, self._fetched, self._failed = keys, self._clock(), False
        log.info("jwks_fetched", url=self._url, keys=len(keys))

    async def _download(self) -> dict[str, dict[str, Any]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Accept": "application/jwk-set+json, application/json"}
        async with self._session.get(self._url, headers=headers, allow_redirects=False) as response:
            if response.status != 200:
                raise ValueError(f"the JWKS URL answered {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"the key set is larger than {MAX_JWKS_BYTES} bytes")
        try:
            document = json.loads(body)
        except RecursionError:
            raise ValueError("the key set nests too deeply") from None
        return signing_keys(document)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
