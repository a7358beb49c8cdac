"""The OIDC issuer's signing keys (a JWKS document), fetched over HTTP without blocking the loop, and cached.

- Keys are fetched on first need, and again when the set is older than `max_age` seconds: stale-while-revalidate.
  A key the set already holds is answered at once even when the set is stale, and one refresh starts in the
  background; a request waits on a fetch only for a key id it does not know, or when the set is past its grace.
  A slow or hanging issuer therefore never holds up requests signed with keys already known.
- A token naming a key id (`kid`) not in the set triggers a fetch too (the issuer may have rotated its keys),
  but fetches start at most once every `min_interval` seconds, whatever the tokens say: a flood of tokens
  with made-up key ids costs the issuer one request per interval. Concurrent requests share one fetch.
- When fetches fail (the issuer is down, slow, or answers something that is not a key set), keys already
  known are still used for up to `grace` seconds (an hour) past `max_age`; a key id that cannot be looked up is
  `JwksUnavailableError` (503 at the gateway), never an acceptance.
- Only public signature keys are kept: `kty` RSA, EC or OKP, `use` absent or `sig`, with a string `kid`.
  A key carrying private members (`d`, `p`, `q`, ...: an issuer that published its private key by mistake) is
  dropped and logged without its material, so it can neither be used as given nor crash a verification. A
  symmetric (`oct`) key is dropped too, so no token can be checked with an HMAC of public data.
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
# RFC 7518 section 6: the private parts of RSA and EC/OKP keys (`oth`: more RSA primes), and an `oct` key's secret.
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


class JwksUnavailableError(Exception):
    """The key set could not be fetched, and the key asked for is not known from an earlier fetch."""


def _printable(value: object, limit: int = 100) -> str:
    """A JWK member fit for a log line: strings only, printable, cut short."""
    return "".join(char for char in value if char.isprintable())[:limit] if isinstance(value, str) else ""


def signing_keys(document: object) -> dict[str, dict[str, Any]]:
    """The usable public signature keys of a JWKS document, by key id; ValueError for a document that is not
    a key set at all."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set: no keys list")
    keys: dict[str, dict[str, Any]] = {}
    for key in document["keys"]:
        if not isinstance(key, dict):
            continue
        private = sorted(member for member in PRIVATE_MEMBERS if member in key)
        if private:  # names the members only, never their values
            log.warning("jwks_private_key_dropped", kid=_printable(key.get("kid")), kty=_printable(key.get("kty")))
            continue
        if not isinstance(key.get("kid"), str) or not key["kid"]:
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
        grace: float = STALE_GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._max_age = max_age
        self.min_interval = min_interval  # settings keep it >= 1 s; tests lower it here
        self._grace = grace
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched: float | None = None  # when the last successful fetch ended
        self._attempted: float | None = None  # when the last fetch began
        self._failed = False  # whether the last fetch failed
        self._lock = asyncio.Lock()  # held by the one fetch under way
        self._refresh: asyncio.Task[None] | None = None  # a background refresh of a stale set
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0  # fetches begun, for tests and logs

    def _fresh(self, now: float) -> bool:
        return self._fetched is not None and now - self._fetched < self._max_age

    def _usable(self, now: float) -> bool:
        return self._fetched is not None and now - self._fetched < self._max_age + self._grace

    def _may_fetch(self) -> bool:
        return self._attempted is None or self._clock() - self._attempted >= self.min_interval

    async def get(self, kid: str) -> dict[str, Any] | None:
        now = self._clock()
        if kid in self._keys and self._usable(now):
            if not self._fresh(now):
                self._revalidate()
            return self._keys[kid]
        async with self._lock:  # free unless a fetch is under way, which this request then waits for
            if self._may_fetch():
                await self._fetch()
        now = self._clock()
        if kid in self._keys and self._usable(now):
            return self._keys[kid]
        if self._failed or not self._usable(now):
            raise JwksUnavailableError("the issuer's keys cannot be fetched")
        return None

    def _revalidate(self) -> None:
        """Start one background refresh of a stale set, unless a fetch is under way or came too recently."""
        if self._refresh is not None and not self._refresh.done():
            return
        if self._lock.locked() or not self._may_fetch():
            return
        self._refresh = asyncio.create_task(self._refresh_in_background(), name="jwks-refresh")

    async def _refresh_in_background(self) -> None:
        async with self._lock:
            if self._may_fetch():
                await self._fetch()

    async def refreshed(self) -> None:
        """Wait for the background refresh under way, if any (tests, shutdown)."""
        if self._refresh is not None:
            await asyncio.shield(self._refresh)

    async def _fetch(self) -> None:
        self._attempted = self._clock()
        self.fetches += 1
        try:
            keys = await self._download()
        except Exception as exc:  # noqa: BLE001 - any failure to fetch is a failed fetch: known keys stay, 503 else
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
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.wait([self._refresh])  # its cancellation is not ours
            self._refresh = None
        if self._session is not None:
            await self._session.close()
            self._session = None
