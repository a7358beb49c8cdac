"""The issuer's key set at the gateway (gateway/auth/jwks.py), against a real local JWKS server
(tests/support/oidc_idp.py): only configured algorithms verify, short keys are refused, a rotated key is picked up
and a retired one refused, unknown key ids cannot hammer the issuer, an issuer that cannot be reached (or redirects,
or answers too much, or not at all) is 503, never an acceptance; private keys in the set are dropped, a key that
cannot be built is 503; a stale set is revalidated in the background while known keys keep answering, until their
grace runs out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings

import jwt
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.warnings import InsecureKeyLengthWarning

from gateway.auth.jwks import JwksCache, JwksUnavailableError, signing_keys
from gateway.auth.oidc import InvalidJwtError, OidcVerifier, UnusableKeyError, build_key
from tests.support.gateway_http import refusal
from tests.support.oidc_idp import (
    BareKey,
    Idp,
    Key,
    Keys,
    LeakedKey,
    bearer,
    claims,
    closed_port,
    gateway_for,
    handmade,
    jwks_of,
    oidc_settings,
    serving,
)
from tests.support.stack import Stack


async def test_only_configured_algorithms_verify_even_with_keys_that_name_none(stack: Stack, keys: Keys) -> None:
    bare = BareKey("bare-rsa", "RS256", keys.rsa.private)
    async with serving(Idp([bare, keys.rsa])) as idp, gateway_for(stack, idp.url) as gateway:  # RS256, ES256
        assert (await gateway.get("/api/v1/agents", headers=bearer(bare.sign(claims())))).status == 200
        refused = [
            jwt.encode(claims(), keys.rsa.private, algorithm="RS384", headers={"kid": "bare-rsa"}),
            jwt.encode(claims(), keys.rsa.private, algorithm="PS256", headers={"kid": "bare-rsa"}),
            handmade({"alg": "none", "kid": "bare-rsa"}, claims(), None),
            handmade({"alg": "HS256", "kid": "bare-rsa"}, claims(), keys.rsa.public_pem()),
            Key("bare-rsa", "ES256", keys.ec.private).sign(
                claims()
            ),  # an EC algorithm for an RSA key: the token's fault
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
        # The set is stale (cache 0 s): a known key answers at once while the set is fetched again behind it...
        assert (await gateway.get("/api/v1/agents", headers=old)).status == 200
        await jwks_of(gateway).refreshed()
        # ...and once it is, the retired key is gone.
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
        gateway_for(stack, idp.url, min_refresh=60) as gateway,
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


@pytest.mark.parametrize("mode", ["unreachable", "error", "garbage", "not_a_key_set", "redirect", "huge", "hang"])
async def test_an_issuer_that_cannot_be_reached_is_503(stack: Stack, keys: Keys, mode: str) -> None:
    # redirect: to a good key set, not followed; huge: a good key set padded past 512 KiB; hang: never answers.
    async with serving(Idp([keys.rsa], mode=mode)) as idp:
        url = f"http://127.0.0.1:{closed_port()}/certs" if mode == "unreachable" else idp.url
        async with gateway_for(stack, url, oidc_jwks_timeout_seconds=0.5) as gateway:
            started = time.monotonic()
            response = await gateway.get("/api/v1/conversations", headers=bearer(keys.rsa.sign(claims())))
            assert await refusal(response, 503) == "DEPENDENCY_UNAVAILABLE"
            assert time.monotonic() - started < 5  # the fetch's timeout, not the issuer, bounds the wait
            assert int(response.headers["Retry-After"]) >= 1
            assert (await gateway.get("/healthz")).status == 200
            assert idp.hits == (0 if mode == "unreachable" else 1)


async def test_known_keys_outlive_an_issuer_outage(stack: Stack, keys: Keys) -> None:
    async with serving(Idp([keys.rsa])) as idp, gateway_for(stack, idp.url, oidc_jwks_cache_seconds=0) as gateway:
        assert (await gateway.get("/api/v1/agents", headers=bearer(keys.rsa.sign(claims())))).status == 200
        idp.mode = "error"
        hits = idp.hits
        assert (await gateway.get("/api/v1/agents", headers=bearer(keys.rsa.sign(claims())))).status == 200
        await jwks_of(gateway).refreshed()
        assert idp.hits == hits + 1  # it did try the issuer, and kept the key it knew
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


def test_private_keys_in_the_set_are_dropped_and_logged_without_their_material(keys: Keys) -> None:
    leaked = [
        LeakedKey("rsa-private", "RS256", keys.rsa.private).jwk(),
        LeakedKey("ec-private", "ES256", keys.ec.private).jwk(),
    ]
    okp = {"kty": "OKP", "kid": "ed-private", "crv": "Ed25519", "x": "AAAA", "d": "c2VjcmV0LXNlZWQ"}
    with structlog.testing.capture_logs() as events:
        kept = signing_keys({"keys": [*leaked, okp, keys.ec.jwk()]})
    assert list(kept) == ["ec-1"]
    dropped = [event for event in events if event["event"] == "jwks_private_key_dropped"]
    assert [(event["kid"], event["kty"]) for event in dropped] == [
        ("rsa-private", "RSA"),
        ("ec-private", "EC"),
        ("ed-private", "OKP"),
    ]
    for jwk in [*leaked, okp]:
        for member in ("d", "p", "q", "dp", "dq", "qi"):
            if member in jwk:
                assert jwk[member] not in repr(events)


@pytest.mark.parametrize("which", ["rsa", "ec"])
async def test_a_token_signed_by_a_published_private_key_is_refused(stack: Stack, keys: Keys, which: str) -> None:
    key: Key = getattr(keys, which)
    leaked = LeakedKey(key.kid, key.alg, key.private)
    async with serving(Idp([leaked])) as idp, gateway_for(stack, idp.url) as gateway:
        response = await gateway.get("/api/v1/agents", headers=bearer(leaked.sign(claims())))
        # Not a 500 (PyJWT cannot verify with an RSA private key), not an acceptance (it can with an EC one).
        assert await refusal(response, 401) == "TOKEN_INVALID"


def test_a_private_key_never_verifies_and_never_crashes_a_verification(stack: Stack, keys: Keys) -> None:
    """Behind the key set's filter: a private key is not built, and an exception PyJWT does not expect from a
    verification is an invalid token."""
    private = LeakedKey("rsa-1", "RS256", keys.rsa.private).jwk()
    with pytest.raises(UnusableKeyError):
        build_key(private, "RS256")
    token = keys.rsa.sign(claims())
    with pytest.raises(AttributeError):  # what PyJWT does with it
        jwt.decode(token, jwt.PyJWK(private, algorithm="RS256"), algorithms=["RS256"], audience=claims()["aud"])
    verifier = OidcVerifier(oidc_settings(stack, "https://idp.example.test/certs"))
    with pytest.raises(InvalidJwtError):
        verifier._decode(token, jwt.PyJWK(private, algorithm="RS256"), "RS256")


BROKEN: dict[str, tuple[str, dict[str, object]]] = {
    "RSA modulus not base64url": ("RS256", {"kty": "RSA", "n": "!!!", "e": "AQAB"}),
    "RSA without a modulus": ("RS256", {"kty": "RSA", "e": "AQAB"}),
    "RSA modulus not a string": ("RS256", {"kty": "RSA", "n": 12345, "e": "AQAB"}),
    "EC point of the wrong size": ("ES256", {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}),
    "EC point not on the curve": ("ES256", {"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "B" * 43}),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_a_key_that_cannot_be_built_is_503(stack: Stack, keys: Keys, case: str) -> None:
    alg, jwk = BROKEN[case]
    signer = Key("broken", alg, keys.rsa.private if alg == "RS256" else keys.ec.private)
    broken = Idp([keys.rsa], extra=[{**jwk, "kid": "broken", "alg": alg}])
    async with serving(broken) as idp, gateway_for(stack, idp.url) as gateway:
        with structlog.testing.capture_logs() as events:
            response = await gateway.get("/api/v1/agents", headers=bearer(signer.sign(claims())))
        assert await refusal(response, 503) == "DEPENDENCY_UNAVAILABLE"  # the issuer's fault, not the token's
        assert (await response.json())["detail"] == "the identity provider's signing key cannot be used"
        assert int(response.headers["Retry-After"]) >= 1
        assert [event["kid"] for event in events if event["event"] == "oidc_key_unusable"] == ["broken"]
        assert (await gateway.get("/api/v1/agents", headers=bearer(keys.rsa.sign(claims())))).status == 200


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_hanging_issuer_does_not_hold_up_known_keys(keys: Keys) -> None:
    clock = Clock()
    async with serving(Idp([keys.rsa])) as idp:
        cache = JwksCache(idp.url, max_age=300, min_interval=1, timeout=30, clock=clock)
        try:
            assert await cache.get("rsa-1") is not None
            idp.mode = "hang"
            clock.now += 301  # the set is stale
            started = time.monotonic()
            for _ in range(5):
                assert await asyncio.wait_for(cache.get("rsa-1"), 1) is not None
                clock.now += 5  # past the minimum interval, yet the refresh under way is the only one
            assert time.monotonic() - started < 1
            assert (cache.fetches, idp.hits) == (2, 2)
            unknown = asyncio.create_task(cache.get("ec-2"))  # an unknown key id waits for the fetch
            done, _ = await asyncio.wait([unknown], timeout=0.2)
            assert not done
            idp.keys = [keys.rsa, keys.spare]
            idp.release.set()  # the issuer answers at last, with a new key
            assert await asyncio.wait_for(unknown, 5) is not None
            assert await cache.get("ec-2") is not None
        finally:
            await cache.close()


async def test_known_keys_last_until_their_grace_runs_out(keys: Keys) -> None:
    clock = Clock()
    async with serving(Idp([keys.rsa])) as idp:
        cache = JwksCache(idp.url, max_age=300, min_interval=10, timeout=5, grace=3600, clock=clock)
        try:
            assert await cache.get("rsa-1") is not None
            idp.mode = "error"
            clock.now += 300 + 3600 - 2  # stale, within the grace
            assert await cache.get("rsa-1") is not None  # at once; a refresh starts behind it, and fails
            await cache.refreshed()
            assert cache.fetches == 2
            clock.now += 1
            assert await cache.get("rsa-1") is not None  # still within the grace
            with pytest.raises(JwksUnavailableError):
                await cache.get("ec-2")  # unknown, and the issuer cannot say: never "no such key"
            clock.now += 2  # the grace is over
            with pytest.raises(JwksUnavailableError):
                await cache.get("rsa-1")
            assert cache.fetches == 2  # within the minimum interval: no fetch
            clock.now += 10
            with pytest.raises(JwksUnavailableError):
                await cache.get("rsa-1")  # a fetch is tried, and fails
            assert cache.fetches == 3
            idp.mode = "ok"
            clock.now += 10
            assert await cache.get("rsa-1") is not None  # the issuer is back: waits for the fetch, and is fresh
            assert cache.fetches == 4
        finally:
            await cache.close()
