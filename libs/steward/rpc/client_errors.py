"""Client interceptors that raise `StewardError` for a failed call, so callers catch one exception type.

A channel from `create_channel` carries them: awaiting a unary call, or reading a stream, raises the
remote's `StewardError` (its code, reason, metadata and domain decoded from `ErrorInfo`) instead of grpc's
`AioRpcError`; callers compare `error.reason` with `steward.errors.Reason` members. A stream's call object
keeps its own behaviour otherwise (`cancel()` and `initial_metadata()` reach the underlying call); a unary
call is awaited inside the interceptor, so use its response, not its call object's metadata or code.

The interceptors know the area they call (`create_channel(target, area)` passes it), so a transport failure's
message names the service that failed ("the store service is unavailable; ...") and nothing of its address.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from steward.errors import from_rpc_error

__all__ = ["error_interceptors"]


class _UnaryUnaryErrors(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, area: str, expected: bool) -> None:
        self._area = area
        self._expected = expected

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        call = await continuation(client_call_details, request)
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, self._area, expected=self._expected) from None


class _UnaryStreamErrors(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, area: str) -> None:
        self._area = area

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        call = await continuation(client_call_details, request)
        return _decoded(call, self._area)


async def _decoded(call: AsyncIterator[Any], area: str) -> AsyncIterator[Any]:
    try:
        async for message in call:
            yield message
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc, area) from None


def error_interceptors(area: str = "", *, expected_failures: bool = False) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors for unary and server-streaming calls (the only kinds Steward's contracts have); `area`
    ("store", ...) names the service called in a transport failure's message ("" when not known). With
    `expected_failures` (a probe of a service that may still be starting), a unary call's transport failure
    is logged at debug level, not as a warning."""
    return [_UnaryUnaryErrors(area, expected_failures), _UnaryStreamErrors(area)]
