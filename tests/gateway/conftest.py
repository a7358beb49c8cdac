"""Gateway test fixtures: an OIDC identity provider with its keys, and a gateway that trusts it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.oidc_idp import Client as OidcClient
from tests.support.oidc_idp import Idp, Keys, gateway_for, make_keys
from tests.support.oidc_idp import serving as serving_idp
from tests.support.stack import Stack


# OIDC tests (test_oidc*.py, test_jwks.py): keys, an identity provider serving them,
# and a gateway that trusts it; one of each per module.
@pytest.fixture(scope="module")
def keys() -> Keys:
    return make_keys()


@pytest.fixture(scope="module")
async def idp(keys: Keys) -> AsyncIterator[Idp]:
    async with serving_idp(Idp([keys.rsa, keys.ec])) as running:
        yield running


@pytest.fixture(scope="module")
async def oidc_gateway(stack: Stack, idp: Idp) -> AsyncIterator[OidcClient]:
    async with gateway_for(stack, idp.url) as client:  # the default settings
        yield client
