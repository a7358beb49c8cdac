"""A test OIDC issuer: signing keys made with `cryptography`, a real JWKS endpoint (aiohttp) that can rotate
keys, publish broken or private keys, or fail on demand (an error, a redirect, a huge body, no answer), and
gateways configured to trust it (tests/gateway/test_oidc*.py, tests/gateway/test_jwks.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.app import create_app
from gateway.auth import oidc
from gateway.auth.jwks import JwksCache
from gateway.auth.scopes import SCOPES
from gateway.settings import GatewaySettings
from tests.support.stack import Stack

Client = TestClient[Any, Any]

ISSUER = "https://idp.example.test/realms/steward"
AUDIENCE = "steward-api"
INVALID_CHALLENGE = 'Bearer realm="steward", error="invalid_token"'
ALL_SCOPES = " ".join(SCOPES)  # what test tokens carry unless a test says otherwise
CERTS = "/protocol/openid-connect/certs"


@dataclass
class Key:
    """A signing key of the test issuer."""

    kid: str
    alg: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg.startswith("RS") else ECAlgorithm
        jwk: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **header})

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


@dataclass
class LeakedKey(Key):
    """A key published with its private members (`d`, `p`, `q`, ...), as an issuer might by mistake."""

    def jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg.startswith("RS") else ECAlgorithm
        jwk: dict[str, Any] = algorithm.to_jwk(self.private, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}


@dataclass
class BareKey(Key):
    """A key published without `alg` (allowed by RFC 7517): only the configured algorithms may use it."""

    def jwk(self) -> dict[str, Any]:
        return {name: value for name, value in super().jwk().items() if name != "alg"}


@dataclass
class Idp:
    """A JWKS endpoint: serves `keys` and the raw JWKs in `extra` (or fails, as `mode` says), counts its requests."""

    keys: list[Key]
    mode: str = "ok"  # ok | error | garbage | not_a_key_set | redirect | huge | hang
    extra: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0
    server: TestServer | None = field(default=None)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends every hanging request

    def document(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.keys] + self.extra}

    async def handle(self, _request: web.Request) -> web.Response:
        self.hits += 1
        if self.mode == "error":
            return web.Response(status=500, text="down")
        if self.mode == "garbage":
            return web.Response(text="<html>login</html>")
        if self.mode == "not_a_key_set":
            return web.json_response({"issuer": ISSUER})
        if self.mode == "redirect":  # to a good key set: following it would be the mistake
            raise web.HTTPFound(f"{CERTS}/moved")
        if self.mode == "huge":
            return web.json_response({**self.document(), "padding": "x" * (600 * 1024)})
        if self.mode == "hang":
            await asyncio.wait_for(self.release.wait(), 30)
        return web.json_response(self.document())

    async def moved(self, _request: web.Request) -> web.Response:
        return web.json_response(self.document())

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url(CERTS))


@dataclass(frozen=True)
class Keys:
    rsa: Key
    ec: Key
    spare: Key  # an EC key the issuer does not publish (yet)


def make_keys() -> Keys:
    return Keys(
        rsa=Key("rsa-1", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ec=Key("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1())),
        spare=Key("ec-2", "ES256", ec.generate_private_key(ec.SECP256R1())),
    )


@asynccontextmanager
async def serving(idp: Idp) -> AsyncIterator[Idp]:
    app = web.Application()
    app.router.add_get(CERTS, idp.handle)
    app.router.add_get(f"{CERTS}/moved", idp.moved)
    idp.server = TestServer(app, host="127.0.0.1", port=0)
    await idp.server.start_server()
    try:
        yield idp
    finally:
        idp.release.set()
        await idp.server.close()


def oidc_settings(stack: Stack, url: str, **overrides: object) -> GatewaySettings:
    values: dict[str, object] = {"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE, "oidc_jwks_url": url}
    return stack.gateway_settings(**{**values, **overrides})


@asynccontextmanager
async def gateway_for(
    stack: Stack, url: str, *, min_refresh: float = 0.0, **overrides: object
) -> AsyncIterator[Client]:
    """A gateway trusting the issuer at `url`; its key set may be fetched again every `min_refresh` seconds (the
    setting's floor is 1 s; tests lower it on the cache)."""
    app = create_app(oidc_settings(stack, url, **overrides))
    jwks_of(app).min_interval = min_refresh
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        yield client


def jwks_of(target: web.Application | Client) -> JwksCache:
    """The key set cache of a gateway app, or of the gateway a test client talks to."""
    app = target.app if isinstance(target, TestClient) else target
    assert app is not None
    verifier = oidc.verifier(app)
    assert verifier is not None
    return verifier.jwks


def claims(subject: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A JWT's claims: valid for five minutes, holding every scope (override `scope`; None leaves it out)."""
    now = int(time.time())
    values = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject or f"user-{uuid.uuid4()}",
        "iat": now,
        "exp": now + 300,
        "scope": ALL_SCOPES,
    }
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A JWT assembled by hand (PyJWT will not make these): HMAC-signed with `secret`, or unsigned."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
