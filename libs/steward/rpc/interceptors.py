"""Server and client interceptors.

The server interceptor verifies the internal principal token, keeps the
principal in a contextvar for the call, binds the RPC name to log lines, and
turns exceptions into `google.rpc.Status` with ErrorInfo. Servicers therefore
hold no try/except boilerplate. The client interceptor attaches a token for the
current principal to every outgoing call.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, cast

import grpc
import structlog

from steward.auth import (
    METADATA_KEY,
    Principal,
    TokenSigner,
    TokenVerifier,
    maybe_current_principal,
    reset_principal,
    set_principal,
)
from steward.errors import Reason, StewardError, from_rpc_error, internal, not_implemented, to_grpc_status
from steward.rpc.drain import Drain, until_drained

__all__ = ["REQUEST_ID_KEY", "ServerInterceptor", "database_away", "principal_interceptors"]

log = structlog.get_logger(__name__)

PUBLIC_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# SQLSTATEs of a database that is away rather than of a statement that failed: class 08 (connection exception) and
# a server shutting down, crashed or still recovering (admin_shutdown, crash_shutdown, cannot_connect_now).
_AWAY_SQLSTATES = ("08", "57P01", "57P02", "57P03")
REQUEST_ID_KEY = "x-request-id"


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and len(value) <= 128 and value.isprintable():
            return value
    return ""


Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Authentication, logging context and the exception-to-status mapping for one service."""

    def __init__(
        self, verifier: TokenVerifier, domain: str, *, drain: Drain | None = None, feeds: frozenset[str] = frozenset()
    ) -> None:
        """`feeds`: the paths (`/package.Service/Method`) of the streams that end when `drain` begins."""
        self._verifier = verifier
        self._domain = domain
        self._drain = drain
        self._feeds = feeds

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(PUBLIC_METHOD_PREFIXES):
            return handler
        kinds = (handler.request_streaming, handler.response_streaming)
        behavior = cast(
            Behavior,
            {
                (False, False): handler.unary_unary,
                (False, True): handler.unary_stream,
                (True, False): handler.stream_unary,
                (True, True): handler.stream_stream,
            }[kinds],
        )
        wrap = self._wrap_streaming if handler.response_streaming else self._wrap_unary
        factory: Callable[..., grpc.RpcMethodHandler[Any, Any]] = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[kinds]
        return factory(
            wrap(method, behavior),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @contextlib.contextmanager
    def _as_principal(self, context: grpc.aio.ServicerContext[Any, Any]) -> Iterator[None]:
        """Verify the call's principal token and make the principal current for the call."""
        token = set_principal(self._verifier.verify_metadata(context.invocation_metadata()))
        try:
            yield
        finally:
            # A streaming handler's generator may be closed from another context (a cancelled call is
            # finalized by grpc in its own): the principal then dies with the call's context anyway.
            with contextlib.suppress(ValueError):
                reset_principal(token)

    def _wrap_unary(self, method: str, behavior: Behavior) -> Behavior:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with structlog.contextvars.bound_contextvars(rpc=method, request_id=_request_id(context)):
                try:
                    with self._as_principal(context):
                        result = behavior(request, context)
                        return await result if inspect.isawaitable(result) else result
                except Exception as exc:  # noqa: BLE001 - mapped to a status below
                    await self._abort(context, method, exc)

        return wrapped

    def _wrap_streaming(self, method: str, behavior: Behavior) -> Behavior:
        drain = self._drain if method in self._feeds else None

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            with structlog.contextvars.bound_contextvars(rpc=method, request_id=_request_id(context)):
                try:
                    with self._as_principal(context):
                        items = behavior(request, context)
                        if drain is not None:
                            items = until_drained(items, drain)
                        async for item in items:
                            yield item
                except Exception as exc:  # noqa: BLE001 - mapped to a status below
                    if context.cancelled():
                        return  # the caller is gone: there is nobody to tell
                    await self._abort(context, method, exc)

        return wrapped

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], method: str, exc: Exception) -> None:
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        if isinstance(exc, StewardError):
            # Our own failure, or a dependency's decoded by `create_channel`'s client interceptors: the latter
            # travels on with its code, reason and domain (`to_grpc_status` keeps a domain the error has).
            error = exc
            if error.code == grpc.StatusCode.INTERNAL:
                log.error("rpc_failed", reason=error.reason)
        elif isinstance(exc, grpc.aio.AioRpcError):
            # A stray call on a channel not made by `create_channel`: decoded here, to travel on the same way.
            error = from_rpc_error(exc)
        elif isinstance(exc, NotImplementedError):
            # The generated base servicer raises this for RPCs we have not built yet.
            error = not_implemented(method)
        elif database_away(exc):
            # The service's database is down, restarting or cut off: the call may succeed when it is back, so the
            # caller (the runtime) waits for it as for any outage instead of failing the run.
            log.warning("rpc_database_unavailable", error_type=type(exc).__name__)
            error = StewardError(
                grpc.StatusCode.UNAVAILABLE,
                Reason.DEPENDENCY_UNAVAILABLE,
                "the database is unavailable; try again later",
            )
        else:
            log.exception("rpc_unexpected_error", error_type=type(exc).__name__)
            error = internal()
        await context.abort_with_status(to_grpc_status(error, self._domain))


def database_away(exc: BaseException) -> bool:
    """True when `exc`, or an exception it was raised from, says the database cannot be reached: a refused or reset
    connection, a connection closed in the middle of a statement, or a server shutting down or recovering. Read
    from the exception chain by duck typing (a DBAPI error's `sqlstate`, SQLAlchemy's `connection_invalidated`),
    so that this module, which every process loads, imports no database driver."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError) or getattr(current, "connection_invalidated", False) is True:
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_AWAY_SQLSTATES):
            return True
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def _with_token(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*tuple(details.metadata or ()))
    if not metadata.get_all(METADATA_KEY):
        metadata.add(METADATA_KEY, token)
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id and not metadata.get_all(REQUEST_ID_KEY):
        metadata.add(REQUEST_ID_KEY, str(request_id))
    return details._replace(metadata=metadata)  # type: ignore[attr-defined,no-any-return]  # a namedtuple at runtime, not in the stubs


class _PrincipalTokens:
    """Mints the token for the current principal, acted for by this process."""

    def __init__(self, signer: TokenSigner, actor: str) -> None:
        self._signer = signer
        self._actor = actor

    def details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        principal = maybe_current_principal()
        if principal is None:
            return details
        return _with_token(details, self._signer.token_for(Principal(principal.user_id, actor=self._actor)))


class _UnaryUnaryPrincipal(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, tokens: _PrincipalTokens) -> None:
        self._tokens = tokens

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._tokens.details(client_call_details), request)


class _UnaryStreamPrincipal(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, tokens: _PrincipalTokens) -> None:
        self._tokens = tokens

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._tokens.details(client_call_details), request)


def principal_interceptors(signer: TokenSigner, actor: str) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors attaching the current principal's token to unary and streaming calls.

    grpc.aio files each interceptor object under one call kind only, hence one object per kind.
    """
    tokens = _PrincipalTokens(signer, actor)
    return [_UnaryUnaryPrincipal(tokens), _UnaryStreamPrincipal(tokens)]
