"""Internal principal tokens: what verifies and what does not."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import grpc
import jwt
import pytest
from pydantic import ValidationError

from steward.auth import AUDIENCE, METADATA_KEY, Principal, TokenSigner, TokenVerifier
from steward.errors import StewardError
from steward.settings import CommonSettings

SECRET = "s" * 40


def _reason(call: object) -> str:
    with pytest.raises(StewardError) as raised:
        call()  # type: ignore[operator]
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
    return raised.value.reason


def test_a_minted_token_verifies_to_its_principal() -> None:
    token = TokenSigner(SECRET, issuer="gateway").mint("alice", actor="runtime")
    assert TokenVerifier(SECRET).verify(token) == Principal(user_id="alice", actor="runtime", issuer="gateway")


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "alice", "aud": AUDIENCE, "iss": "x", "iat": 0, "exp": 1},  # expired
        {"sub": "alice", "aud": "someone-else", "iss": "x", "iat": 0, "exp": 2**40},  # wrong audience
        {"aud": AUDIENCE, "iss": "x", "iat": 0, "exp": 2**40},  # no subject
        {"sub": "", "aud": AUDIENCE, "iss": "x", "iat": 0, "exp": 2**40},  # empty subject
        {"sub": "alice", "aud": AUDIENCE, "iat": 0, "exp": 2**40},  # no issuer
    ],
)
def test_bad_claims_are_refused(claims: dict[str, object]) -> None:
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    assert _reason(lambda: TokenVerifier(SECRET).verify(token)) == "PRINCIPAL_INVALID"


def test_wrong_key_and_unsigned_tokens_are_refused() -> None:
    other = TokenSigner("o" * 40, issuer="gateway").mint("alice")
    assert _reason(lambda: TokenVerifier(SECRET).verify(other)) == "PRINCIPAL_INVALID"
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    claims = json.dumps({"sub": "alice", "aud": AUDIENCE, "iss": "x", "iat": 0, "exp": 2**40}).encode()
    unsigned = f"{header}.{base64.urlsafe_b64encode(claims).rstrip(b'=').decode()}."
    assert _reason(lambda: TokenVerifier(SECRET).verify(unsigned)) == "PRINCIPAL_INVALID"


def test_metadata_without_a_token_is_missing() -> None:
    verifier = TokenVerifier(SECRET)
    assert _reason(lambda: verifier.verify_metadata(grpc.aio.Metadata())) == "PRINCIPAL_MISSING"
    token = TokenSigner(SECRET, issuer="t").mint("bob")
    assert verifier.verify_metadata(grpc.aio.Metadata((METADATA_KEY, token))).user_id == "bob"


def test_signer_reuses_a_fresh_token_and_it_expires_soon() -> None:
    signer = TokenSigner(SECRET, issuer="gateway", ttl_seconds=300)
    first = signer.token_for(Principal("alice"))
    assert signer.token_for(Principal("alice")) == first
    assert signer.token_for(Principal("bob")) != first
    claims = jwt.decode(first, SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert 0 < claims["exp"] - time.time() <= 300


def test_short_internal_secrets_are_rejected() -> None:
    with pytest.raises(ValidationError):
        CommonSettings.model_validate({"internal_secret": "too-short"})


def test_act_is_an_rfc8693_actor_object() -> None:
    token = TokenSigner(SECRET, issuer="runtime").mint("alice", actor="runtime")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["act"] == {"sub": "runtime"}
    assert "act" not in jwt.decode(
        TokenSigner(SECRET, issuer="gateway").mint("alice"), SECRET, algorithms=["HS256"], audience=AUDIENCE
    )


def test_the_previous_key_is_accepted_during_a_rotation_and_not_after() -> None:
    old, new = "o" * 40, "n" * 40
    old_token = TokenSigner(old, issuer="gateway").mint("alice")
    new_token = TokenSigner(new, issuer="gateway").mint("alice")
    rotating = TokenVerifier(new, previous_secret=old)
    assert rotating.verify(old_token).user_id == "alice"
    assert rotating.verify(new_token).user_id == "alice"
    assert _reason(lambda: TokenVerifier(new).verify(old_token)) == "PRINCIPAL_INVALID"


async def test_client_calls_carry_the_principal_and_the_request_id() -> None:
    import structlog

    from steward.auth import reset_principal, set_principal
    from steward.rpc.interceptors import REQUEST_ID_KEY, principal_interceptors

    details = grpc.aio.ClientCallDetails("/x.v1.S/M", None, None, None, None)
    interceptor = principal_interceptors(TokenSigner(SECRET, issuer="runtime"), actor="runtime")[0]
    assert isinstance(interceptor, grpc.aio.UnaryUnaryClientInterceptor)

    sent: list[grpc.aio.ClientCallDetails] = []  # the call details the interceptor passes on

    async def send(call_details: grpc.aio.ClientCallDetails, request: object) -> Any:
        sent.append(call_details)

    await interceptor.intercept_unary_unary(send, details, None)
    assert sent.pop() is details  # no principal: nothing is attached
    principal = set_principal(Principal("alice"))
    try:
        with structlog.contextvars.bound_contextvars(request_id="req-123"):
            await interceptor.intercept_unary_unary(send, details, None)
            metadata = sent.pop().metadata
    finally:
        reset_principal(principal)
    assert metadata is not None
    assert metadata.get_all(REQUEST_ID_KEY) == ["req-123"]
    verified = TokenVerifier(SECRET).verify(str(metadata.get_all(METADATA_KEY)[0]))
    assert verified == Principal(user_id="alice", actor="runtime", issuer="runtime")


@pytest.mark.parametrize("user_id", ["u" * 129, "bad\x00id", "tab\tid"])
def test_unusable_user_ids_are_refused(user_id: str) -> None:
    token = TokenSigner(SECRET, issuer="gateway").mint(user_id)
    assert _reason(lambda: TokenVerifier(SECRET).verify(token)) == "PRINCIPAL_INVALID"


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = TokenVerifier(SECRET)
    token = TokenSigner(SECRET, issuer="runtime", ttl_seconds=60).mint("alice")
    assert verifier.verify(token).user_id == "alice"
    decodes = 0
    real_decode = jwt.decode

    def counting_decode(*args: object, **kwargs: object) -> object:
        nonlocal decodes
        decodes += 1
        return real_decode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting_decode)
    assert verifier.verify(token).user_id == "alice"
    assert decodes == 0  # the second call did not verify again
    # Past its expiry (by this module's clock) the token is verified afresh, where PyJWT checks `exp` itself
    # (test_bad_claims_are_refused covers an expired token).
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 120)
    verifier.verify(token)
    assert decodes == 1
