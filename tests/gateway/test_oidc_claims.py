"""What an OIDC JWT's claims and header let it do, against a real local JWKS server (tests/support/oidc_idp.py) and the
real in-process stack: a JWT without a scope claim (an ID token, say) has no rights unless `oidc_default_scopes` gives
some; `oidc_scope_claim = "scp"` reads scopes from `scp` (string or list); `oidc_token_types` checks the header's
`typ`; `oidc_max_token_lifetime_seconds` bounds `exp - iat`.
"""

from __future__ import annotations

import time

import pytest
from aiohttp import ClientResponse

from gateway.auth import scopes
from tests.support.gateway_http import refusal
from tests.support.oidc_idp import Client, Idp, Keys, bearer, claims, gateway_for
from tests.support.stack import Stack

CONVERSATIONS = "/api/v1/conversations"
WEB_CLIENT = "steward-web"  # the client an ID token is issued to


async def _insufficient(response: ClientResponse, scope: str) -> None:
    assert await refusal(response, 403) == "PERMISSION_DENIED"
    assert f'error="insufficient_scope", scope="{scope}"' in response.headers["WWW-Authenticate"]


async def test_a_jwt_without_a_scope_claim_has_no_rights_by_default(oidc_gateway: Client, keys: Keys) -> None:
    id_token = bearer(keys.rsa.sign(claims(scope=None, nonce="n-1", azp=WEB_CLIENT)))  # an ID token's claims
    await _insufficient(await oidc_gateway.get(CONVERSATIONS, headers=id_token), "conversations:read")
    await _insufficient(await oidc_gateway.post("/api/v1/tokens", json={}, headers=id_token), "tokens:write")
    await _insufficient(await oidc_gateway.get("/v1/models", headers=id_token), "agents:read")
    assert (await oidc_gateway.get("/healthz", headers=id_token)).status == 200  # public routes stay public


async def test_default_scopes_are_what_a_jwt_without_the_claim_holds(stack: Stack, idp: Idp, keys: Keys) -> None:
    async with gateway_for(stack, idp.url, oidc_default_scopes=["conversations:read"]) as gateway:
        plain = bearer(keys.ec.sign(claims(scope=None)))
        assert (await gateway.get(CONVERSATIONS, headers=plain)).status == 200
        await _insufficient(
            await gateway.post(CONVERSATIONS, json={"title": "x"}, headers=plain), "conversations:write"
        )
        # A claim that is there is taken as it is, never widened by the default.
        only_openid = bearer(keys.ec.sign(claims(scope="openid profile")))
        await _insufficient(await gateway.get(CONVERSATIONS, headers=only_openid), "conversations:read")


@pytest.mark.parametrize("scp", ["openid conversations:read", ["openid", "conversations:read"]])
async def test_scopes_from_the_scp_claim(stack: Stack, idp: Idp, keys: Keys, scp: object) -> None:
    async with gateway_for(stack, idp.url, oidc_scope_claim="scp") as gateway:
        reader = bearer(keys.rsa.sign(claims(scope=None, scp=scp)))
        assert (await gateway.get(CONVERSATIONS, headers=reader)).status == 200
        await _insufficient(
            await gateway.post(CONVERSATIONS, json={"title": "x"}, headers=reader), "conversations:write"
        )
        # `scope` is not read then: a JWT with every scope there but no `scp` holds the default, nothing.
        await _insufficient(
            await gateway.get(CONVERSATIONS, headers=bearer(keys.rsa.sign(claims()))), "conversations:read"
        )
        odd = bearer(keys.rsa.sign(claims(scope=None, scp={"conversations:read": True})))
        assert await refusal(await gateway.get(CONVERSATIONS, headers=odd), 401) == "TOKEN_INVALID"


async def test_the_token_type_allow_list(stack: Stack, idp: Idp, keys: Keys) -> None:
    async with gateway_for(stack, idp.url, oidc_token_types=["at+jwt"]) as gateway:
        for typ, status in [("at+jwt", 200), ("application/AT+JWT", 200), ("JWT", 401), (None, 401), (7, 401)]:
            token = bearer(keys.rsa.sign(claims(), typ=typ))
            response = await gateway.get(CONVERSATIONS, headers=token)
            assert response.status == status, (typ, await response.text())
    async with gateway_for(stack, idp.url) as unchecked:  # no allow-list: any typ, or none
        for typ in ("JWT", None, "at+jwt"):
            assert (await unchecked.get(CONVERSATIONS, headers=bearer(keys.rsa.sign(claims(), typ=typ)))).status == 200


async def test_the_longest_token_lifetime(stack: Stack, idp: Idp, keys: Keys) -> None:
    now = int(time.time())
    async with gateway_for(stack, idp.url, oidc_max_token_lifetime_seconds=600) as gateway:
        # exactly the limit; issued long ago; without iat, whose lifetime cannot be known
        for iat, exp, status in [(now, now + 600, 200), (now - 3000, now + 300, 401), (None, now + 300, 401)]:
            response = await gateway.get(CONVERSATIONS, headers=bearer(keys.ec.sign(claims(iat=iat, exp=exp))))
            assert response.status == status, (iat, exp, await response.text())
    async with gateway_for(stack, idp.url) as unlimited:
        long_lived = bearer(keys.ec.sign(claims(iat=None, exp=now + 30 * 86400)))
        assert (await unlimited.get(CONVERSATIONS, headers=long_lived)).status == 200


def test_the_scope_claim_of_a_jwt() -> None:
    none: frozenset[str] = frozenset()
    assert scopes.from_claim(None, none) == none
    assert scopes.from_claim(None, frozenset({"runs:read"})) == {"runs:read"}
    assert scopes.from_claim("runs:read  openid", none) == {"runs:read", "openid"}
    assert scopes.from_claim(["runs:read", "openid"], frozenset({"agents:read"})) == {"runs:read", "openid"}
    assert scopes.from_claim("", frozenset({"agents:read"})) == none  # present but empty: nothing
    assert scopes.from_claim([], frozenset({"agents:read"})) == none
    for bad in (42, ["runs:read", 7], {"runs:read": True}, True):
        with pytest.raises(ValueError, match="space-separated string or a list of strings"):
            scopes.from_claim(bad, none)
