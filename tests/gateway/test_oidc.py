"""OIDC bearer JWTs at the gateway, against a real local JWKS server (tests/support/oidc_idp.py) and the real in-process
stack: RS256 and ES256 tokens work end to end, one subject is one store user on every replica, every kind of bad
token is 401 invalid_token, the leeway is enforced, the `scope` claim maps onto the scope table, API tokens made
with a JWT expire no later than it. What a JWT without scopes may do, `scp`, `typ` and the lifetime limit:
tests/gateway/test_oidc_claims.py. The key set's fetching, rotation and failures: tests/gateway/test_jwks.py.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime

import jwt
import pytest
import structlog
from pydantic import ValidationError

from tests.support.gateway_http import answer, refusal
from tests.support.oidc_idp import (
    AUDIENCE,
    INVALID_CHALLENGE,
    ISSUER,
    Client,
    Idp,
    Key,
    Keys,
    b64url,
    bearer,
    claims,
    gateway_for,
    handmade,
)
from tests.support.sse import read_sse
from tests.support.stack import Stack


@pytest.mark.parametrize("which", ["rsa", "ec"])
async def test_a_valid_token_works_end_to_end(
    oidc_gateway: Client, keys: Keys, auth: dict[str, str], which: str
) -> None:
    key: Key = getattr(keys, which)
    token = bearer(key.sign(claims()))
    conversation = await answer(
        await oidc_gateway.post("/api/v1/conversations", json={"title": "t"}, headers=token), 201
    )
    path = f"/api/v1/conversations/{conversation['id']}"
    started = await answer(await oidc_gateway.post(f"{path}/messages", json={"content": "hello"}, headers=token), 202)
    events = await read_sse(oidc_gateway, started["events_url"], token)
    assert events[-1].event == "run_completed"
    messages = await answer(await oidc_gateway.get(f"{path}/messages", headers=token), 200)
    assert [m["role"] for m in messages["messages"]] == ["user", "assistant"]
    assert (
        await refusal(await oidc_gateway.get(path, headers=auth), 404) == "CONVERSATION_NOT_FOUND"
    )  # not the dev user's


async def test_a_subject_is_one_user_on_every_replica(stack: Stack, idp: Idp, oidc_gateway: Client, keys: Keys) -> None:
    subject = f"alice-{uuid.uuid4()}"
    alice = bearer(keys.rsa.sign(claims(subject)))
    made = await answer(await oidc_gateway.post("/api/v1/conversations", json={"title": "a"}, headers=alice), 201)
    path = f"/api/v1/conversations/{made['id']}"
    async with gateway_for(stack, idp.url) as replica:  # knows nothing of alice yet: finds the same store user
        assert (await replica.get(path, headers=bearer(keys.ec.sign(claims(subject))))).status == 200
        bob = bearer(keys.ec.sign(claims(f"bob-{uuid.uuid4()}")))
        assert await refusal(await replica.get(path, headers=bob), 404) == "CONVERSATION_NOT_FOUND"


async def test_a_subject_named_like_the_dev_user_is_not_the_dev_user(
    stack: Stack, oidc_gateway: Client, keys: Keys, auth: dict[str, str]
) -> None:
    devs = await answer(await oidc_gateway.post("/api/v1/conversations", json={"title": "dev"}, headers=auth), 201)
    assert (await oidc_gateway.get(f"/api/v1/conversations/{devs['id']}", headers=auth)).status == 200
    dev = bearer(keys.rsa.sign(claims(stack.gateway_settings().dev_user_id)))
    listed = await answer(await oidc_gateway.get("/api/v1/conversations", headers=dev), 200)
    assert devs["id"] not in [conversation["id"] for conversation in listed["conversations"]]
    shown = await oidc_gateway.get(f"/api/v1/conversations/{devs['id']}", headers=dev)
    assert await refusal(shown, 404) == "CONVERSATION_NOT_FOUND"


def _bad_tokens(keys: Keys) -> dict[str, str]:
    good = keys.rsa.sign(claims())
    head, body, signature = good.split(".")
    other_body = b64url(json.dumps(claims("someone-else")).encode())
    flipped = signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")
    impostor = Key("rsa-1", "ES256", keys.spare.private)  # claims the RSA key's id, signed with another key
    return {
        "wrong issuer": keys.rsa.sign(claims(iss="https://evil.example.test")),
        "wrong audience": keys.rsa.sign(claims(aud="another-api")),
        "expired": keys.rsa.sign(claims(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)),
        "not yet valid": keys.ec.sign(claims(nbf=int(time.time()) + 3600)),
        "issued in the future": keys.ec.sign(claims(iat=int(time.time()) + 3600)),
        "no exp": keys.rsa.sign(claims(exp=None)),
        "no sub": keys.rsa.sign(claims(sub="")),
        "no iss": keys.rsa.sign(claims(iss=None)),
        "unknown kid": keys.spare.sign(claims()),
        "no kid": jwt.encode(claims(), keys.rsa.private, algorithm="RS256"),
        "alg none": handmade({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims(), None),
        "alg none, no signature part": handmade({"alg": "none", "kid": "rsa-1"}, claims(), None).rstrip("."),
        "HS256 with the public key as secret": handmade(
            {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(), keys.rsa.public_pem()
        ),
        "HS256 with the JWK as secret": handmade(
            {"alg": "HS256", "kid": "rsa-1"}, claims(), json.dumps(keys.rsa.jwk()).encode()
        ),
        "tampered signature": f"{head}.{body}.{flipped}",
        "tampered payload": f"{head}.{other_body}.{signature}",
        "signed by another key under a known kid": impostor.sign(claims()),
        "an algorithm not configured": jwt.encode(
            claims(), keys.rsa.private, algorithm="RS384", headers={"kid": "rsa-1"}
        ),
        "scope claim a number": keys.rsa.sign(claims(scope=42)),
        "scope claim a list holding a number": keys.rsa.sign(claims(scope=["runs:read", 7])),
        "not a JWT at all": "a.b.c",
    }


BAD = (
    "wrong issuer",
    "wrong audience",
    "expired",
    "not yet valid",
    "issued in the future",
    "no exp",
    "no sub",
    "no iss",
    "unknown kid",
    "no kid",
    "alg none",
    "alg none, no signature part",
    "HS256 with the public key as secret",
    "HS256 with the JWK as secret",
    "tampered signature",
    "tampered payload",
    "signed by another key under a known kid",
    "an algorithm not configured",
    "scope claim a number",
    "scope claim a list holding a number",
    "not a JWT at all",
)


@pytest.mark.parametrize("case", BAD)
async def test_a_bad_token_is_401_invalid_token(oidc_gateway: Client, keys: Keys, case: str) -> None:
    tokens = _bad_tokens(keys)
    assert set(tokens) == set(BAD)
    response = await oidc_gateway.get("/api/v1/conversations", headers=bearer(tokens[case]))
    assert await refusal(response, 401) == "TOKEN_INVALID"
    assert response.headers["WWW-Authenticate"] == INVALID_CHALLENGE


async def test_the_leeway_is_enforced(stack: Stack, idp: Idp, keys: Keys) -> None:
    now = int(time.time())
    async with gateway_for(stack, idp.url, oidc_leeway_seconds=30) as gateway:
        for exp, status in [(now - 10, 200), (now - 90, 401)]:
            token = bearer(keys.ec.sign(claims(exp=exp, iat=now - 120)))
            assert (await gateway.get("/api/v1/conversations", headers=token)).status == status
        early = bearer(keys.ec.sign(claims(nbf=now + 10)))
        assert (await gateway.get("/api/v1/conversations", headers=early)).status == 200
    async with gateway_for(stack, idp.url, oidc_leeway_seconds=0) as strict:
        late = bearer(keys.ec.sign(claims(exp=now - 10, iat=now - 120)))
        assert await refusal(await strict.get("/api/v1/conversations", headers=late), 401) == "TOKEN_INVALID"


async def test_the_scope_claim_maps_onto_the_scope_table(oidc_gateway: Client, keys: Keys) -> None:
    subject = f"carol-{uuid.uuid4()}"
    reader = bearer(keys.rsa.sign(claims(subject, scope="openid conversations:read")))
    assert (await oidc_gateway.get("/api/v1/conversations", headers=reader)).status == 200
    refused = await oidc_gateway.post("/api/v1/conversations", json={"title": "no"}, headers=reader)
    assert await refusal(refused, 403) == "PERMISSION_DENIED"
    assert 'error="insufficient_scope", scope="conversations:write"' in refused.headers["WWW-Authenticate"]
    only_oidc = bearer(keys.rsa.sign(claims(subject, scope="openid profile email")))
    assert await refusal(await oidc_gateway.get("/api/v1/conversations", headers=only_oidc), 403) == "PERMISSION_DENIED"


async def test_api_tokens_made_with_a_jwt_are_the_same_user_and_no_wider(oidc_gateway: Client, keys: Keys) -> None:
    subject = f"dave-{uuid.uuid4()}"
    exp = int(time.time()) + 300
    wanted = "tokens:write conversations:read conversations:write openid"
    scoped = bearer(keys.ec.sign(claims(subject, scope=wanted, exp=exp)))
    made = await answer(await oidc_gateway.post("/api/v1/conversations", json={"title": "d"}, headers=scoped), 201)
    created = await answer(await oidc_gateway.post("/api/v1/tokens", json={"label": "d"}, headers=scoped), 201)
    assert created["scopes"] == ["conversations:read", "conversations:write", "tokens:write"]
    # Capped at the JWT's expiry: a five-minute JWT cannot mint a token that never expires.
    assert created["expire_time"] is not None
    assert datetime.fromisoformat(created["expire_time"]).timestamp() <= exp
    longer = await oidc_gateway.post("/api/v1/tokens", json={"ttl_seconds": 86400}, headers=scoped)
    assert datetime.fromisoformat((await answer(longer, 201))["expire_time"]).timestamp() <= exp
    api = bearer(created["token"])
    assert (await oidc_gateway.get(f"/api/v1/conversations/{made['id']}", headers=api)).status == 200
    wider = await oidc_gateway.post("/api/v1/tokens", json={"scopes": ["runs:write"]}, headers=scoped)
    assert await refusal(wider, 403) == "PERMISSION_DENIED"
    listed = await answer(await oidc_gateway.get("/api/v1/tokens", headers=bearer(keys.ec.sign(claims(subject)))), 200)
    assert {token["id"] for token in listed["tokens"]} == {created["id"], (await longer.json())["id"]}


async def test_a_token_made_with_a_jwt_lives_at_most_as_long_as_tokens_may(oidc_gateway: Client, keys: Keys) -> None:
    now = int(time.time())
    centuries = bearer(keys.rsa.sign(claims(exp=now + 10**10)))
    created = await answer(await oidc_gateway.post("/api/v1/tokens", json={"label": "c"}, headers=centuries), 201)
    assert datetime.fromisoformat(created["expire_time"]).timestamp() <= now + 367 * 86400
    ending = bearer(keys.rsa.sign(claims(exp=now - 5)))  # accepted within the leeway, but has no time left to give
    assert (await oidc_gateway.get("/api/v1/conversations", headers=ending)).status == 200
    refused = await oidc_gateway.post("/api/v1/tokens", json={"label": "late"}, headers=ending)
    assert await refusal(refused, 401) == "TOKEN_INVALID"


async def test_without_oidc_settings_a_jwt_is_just_an_invalid_token(gateway: Client, keys: Keys) -> None:
    response = await gateway.get("/api/v1/conversations", headers=bearer(keys.rsa.sign(claims())))
    assert await refusal(response, 401) == "TOKEN_INVALID"


async def test_no_token_text_reaches_the_logs(oidc_gateway: Client, keys: Keys) -> None:
    good, bad = keys.rsa.sign(claims()), keys.spare.sign(claims())
    with structlog.testing.capture_logs() as events:
        await oidc_gateway.get("/api/v1/conversations", headers=bearer(good))
        await oidc_gateway.get("/api/v1/conversations", headers=bearer(bad))
    assert any(event.get("event") == "http_request" for event in events)
    for token in (good, bad):
        assert token.split(".")[2] not in repr(events)


WHOLE = {"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE, "oidc_jwks_url": "https://idp.example.test/certs"}


@pytest.mark.parametrize(
    "values",
    [
        {"oidc_issuer": ISSUER},  # no audience, no JWKS URL
        {"oidc_audience": AUDIENCE, "oidc_jwks_url": "https://idp.example.test/certs"},  # no issuer
        {**WHOLE, "oidc_algorithms": ["HS256"]},
        {**WHOLE, "oidc_algorithms": ["RS256", "none"]},
        {**WHOLE, "oidc_algorithms": []},
        {**WHOLE, "oidc_jwks_url": "http://idp.example.test/certs"},  # plain http off loopback
        {**WHOLE, "oidc_jwks_url": "file:///etc/keys.json"},
        {**WHOLE, "oidc_leeway_seconds": -1},
        {**WHOLE, "oidc_leeway_seconds": 3600},
        {**WHOLE, "oidc_jwks_min_refresh_seconds": 0},  # an unknown kid would fetch the key set every time
        {**WHOLE, "oidc_jwks_min_refresh_seconds": 0.5},
        {**WHOLE, "oidc_default_scopes": ["runs:admin"]},
        {**WHOLE, "oidc_default_scopes": ["openid"]},
        {**WHOLE, "oidc_scope_claim": "roles"},
        {**WHOLE, "oidc_token_types": ["at jwt"]},
        {**WHOLE, "oidc_token_types": [""]},
        {**WHOLE, "oidc_max_token_lifetime_seconds": -1},
    ],
)
def test_incomplete_or_unsafe_oidc_settings_are_refused(stack: Stack, values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        stack.gateway_settings(**values)
    defaults = stack.gateway_settings(**WHOLE)
    assert defaults.oidc_algorithms == ["RS256", "ES256"]
    assert (defaults.oidc_default_scopes, defaults.oidc_scope_claim, defaults.oidc_token_types) == ([], "scope", [])
    assert defaults.oidc_jwks_min_refresh_seconds == 10
