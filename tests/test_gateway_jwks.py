"""The issuer's key set at the gateway (gateway/jwks.py), against a real local JWKS server (tests/oidc_idp.py):
only configured algorithms verify, short keys are refused, a rotated key is picked up and a retired one refused,
unknown key ids cannot hammer the issuer, and an issuer that cannot be reached is 503, never an acceptance.
"""

from __future__ import annotations

import asyncio
import uuid
import warnings

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.warnings import InsecureKeyLengthWarning

from gateway.jwks import signing_keys
from tests.gateway_http import refusal
from tests.oidc_idp import (
    BareKey,
    Idp,
    Key,
    Keys,
    bearer,
    claims,
    closed_port,
    gateway_for,
    handmade,
    make_keys,
    serving,
)
from tests.stack import Stack


@pytest.fixture(scope="module")
def keys() -> Keys:
    return make_keys()


async def test_only_configured_algorithms_verify_even_with_keys_that_name_none(stack: Stack, keys: Keys) -> None:
    bare = BareKey("bare-rsa", "RS256", keys.rsa.private)
    async with serving(Idp([bare, keys.rsa])) as idp, gateway_for(stack, idp.url) as gateway:  # RS256, ES256
        assert (await gateway.get("/api/v1/agents", headers=bearer(bare.sign(claims())))).status == 200
        refused = [
            jwt.encode(claims(), keys.rsa.private, algorithm="RS384", headers={"kid": "bare-rsa"}),
            jwt.encode(claims(), keys.rsa.private, algorithm="PS256", headers={"kid": "bare-rsa"}),
            handmade({"alg": "none", "kid": "bare-rsa"}, claims(), None),
            handmade({"alg": "HS256", "kid": "bare-rsa"}, claims(), keys.rsa.public_pem()),
        ]
        for token in refused:
            assert await refusal(await gateway.get("/api/v1/agents", headers=bearer(token)), 401) == "TOKEN_INVALID"
    async with serving(Idp([keys.rsa])) as idp, gateway_for(stack, idp.url, oidc_algorithms=["RS256", "RS384"]) as gw:
        # RS384 is configured, but this key says it is for RS256 only.
        token = jwt.encode(claims(), keys.rsa.private, algorithm="RS384", headers={"kid": "rsa-1"})
        assert await refusal(await gw.get("/api/v1/agents", headers=bearer(token)), 401) == "TOKEN_INVALID"


async def test_a_rotated_key_is_picked_up_and_a_retired_one_refused(stack: Stack, keys: Keys) -> None:
    async with serving(Idp([keys.rsa])) as idp, gateway_for(stack, idp.url, oidc_jwks_cache_seconds=0) as gateway:
        assert (await gateway.get("/api/v1/agents", headers=bearer(keys.rsa.sign(claims())))).status == 200
        new = bearer(keys.spare.sign(claims()))
        assert await refusal(await gateway.get("/api/v1/agents", headers=new), 401) == "TOKEN_INVALID"
        idp.keys = [keys.rsa, keys.spare]  # the issuer publishes a new key, then signs with it
        assert (await gateway.get("/api/v1/agents", headers=new)).status == 200
        idp.keys = [keys.spare]  # and retires the old one
        old = bearer(keys.rsa.sign(claims()))
        assert await refusal(await gateway.get("/api/v1/agents", headers=old), 401) == "TOKEN_INVALID"
        assert (await gateway.get("/api/v1/agents", headers=new)).status == 200


async def test_a_new_kid_is_fetched_once_even_with_a_long_cache(stack: Stack, keys: Keys) -> None:
    async with serving(Idp([keys.rsa])) as idp, gateway_for(stack, idp.url) as gateway:  # cache 300 s, refresh 0
        assert (await gateway.get("/api/v1/agents", headers=bearer(keys.rsa.sign(claims())))).status == 200
        assert (await gateway.get("/api/v1/agents", headers=bearer(keys.rsa.sign(claims())))).status == 200
        assert idp.hits == 1  # the cached set answered the second
        idp.keys = [keys.rsa, keys.spare]
        assert (await gateway.get("/api/v1/agents", headers=bearer(keys.spare.sign(claims())))).status == 200
        assert idp.hits == 2


async def test_unknown_kids_cannot_hammer_the_issuer(stack: Stack, keys: Keys) -> None:
    async with (
        serving(Idp([keys.rsa])) as idp,
        gateway_for(stack, idp.url, oidc_jwks_min_refresh_seconds=60) as gateway,
    ):
        valid = [bearer(keys.rsa.sign(claims())) for _ in range(10)]
        answers = await asyncio.gather(*(gateway.get("/api/v1/agents", headers=token) for token in valid))
        assert [response.status for response in answers] == [200] * 10
        assert idp.hits == 1  # concurrent first requests shared one fetch
        for _ in range(20):
            forged = Key(f"kid-{uuid.uuid4()}", "ES256", keys.spare.private)
            response = await gateway.get("/api/v1/agents", headers=bearer(forged.sign(claims())))
            assert await refusal(response, 401) == "TOKEN_INVALID"
        assert idp.hits == 1  # no fetch within the minimum interval, whatever the key ids


@pytest.mark.parametrize("mode", ["unreachable", "error", "garbage", "not_a_key_set"])
async def test_an_issuer_that_cannot_be_reached_is_503(stack: Stack, keys: Keys, mode: str) -> None:
    async with serving(Idp([keys.rsa], mode=mode)) as idp:
        url = f"http://127.0.0.1:{closed_port()}/certs" if mode == "unreachable" else idp.url
        async with gateway_for(stack, url, oidc_jwks_timeout_seconds=2) as gateway:
            response = await gateway.get("/api/v1/conversations", headers=bearer(keys.rsa.sign(claims())))
            assert await refusal(response, 503) == "DEPENDENCY_UNAVAILABLE"
            assert int(response.headers["Retry-After"]) >= 1
            assert (await gateway.get("/healthz")).status == 200


async def test_known_keys_outlive_an_issuer_outage(stack: Stack, keys: Keys) -> None:
    async with serving(Idp([keys.rsa])) as idp, gateway_for(stack, idp.url, oidc_jwks_cache_seconds=0) as gateway:
        assert (await gateway.get("/api/v1/agents", headers=bearer(keys.rsa.sign(claims())))).status == 200
        idp.mode = "error"
        hits = idp.hits
        assert (await gateway.get("/api/v1/agents", headers=bearer(keys.rsa.sign(claims())))).status == 200
        assert idp.hits == hits + 1  # it did try the issuer, and fell back on the key it knew
        unknown = await gateway.get("/api/v1/agents", headers=bearer(keys.spare.sign(claims())))
        assert await refusal(unknown, 503) == "DEPENDENCY_UNAVAILABLE"  # cannot tell: not accepted, not "invalid"
        tampered = keys.rsa.sign(claims())[:-4] + "AAAA"
        assert (await gateway.get("/api/v1/agents", headers=bearer(tampered))).status == 401


async def test_a_short_rsa_key_is_refused(stack: Stack) -> None:
    weak = Key("weak", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # PyJWT only warns when signing with it
        token = weak.sign(claims())
    async with serving(Idp([weak])) as idp, gateway_for(stack, idp.url) as gateway:
        response = await gateway.get("/api/v1/agents", headers=bearer(token))
        assert await refusal(response, 401) == "TOKEN_INVALID"


def test_only_public_signature_keys_are_kept() -> None:
    rsa_key = {"kty": "RSA", "kid": "a", "n": "x", "e": "AQAB"}
    document = {
        "keys": [
            rsa_key,
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},  # a shared secret has no place in a public key set
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "x", "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "x": "x", "y": "y"},  # no kid: no token could name it
            {"kty": "RSA", "kid": "a", "n": "other", "e": "AQAB"},  # the same kid again: the first counts
            "not a key",
        ]
    }
    assert signing_keys(document) == {"a": rsa_key}
    broken: object
    for broken in ({}, {"keys": {}}, [], "keys"):
        with pytest.raises(ValueError, match="not a JWK set"):
            signing_keys(broken)
