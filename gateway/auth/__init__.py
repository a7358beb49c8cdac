"""Authentication and authorisation at the gateway: who a request acts for, and what its token may do.

- `bearer` checks the bearer token (the dev token, API tokens, OIDC JWTs), caches verified API tokens, and is the
  middleware that forwards the caller's principal to the services;
- `oidc` verifies JWTs of the configured issuer, with its key set from `jwks`;
- `scopes` is the table of the scope each route needs, and checks a scoped token against it.

Nothing here imports the gateway's surfaces (REST routes, the OpenAI API, MCP): a surface that needs more of
authentication registers it on the app (`gateway.app_keys.ACCESS`).
"""
