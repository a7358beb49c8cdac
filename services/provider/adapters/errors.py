"""SDK exceptions → UpstreamError, for both vendor SDKs.

The anthropic and openai SDKs have parallel exception hierarchies (generated
by the same tool), so one classifier serves both: each adapter passes its
SDK's classes in an `SdkErrors`. Neither SDK is imported here.

The adapters read streamed bodies themselves (sse.py), so a transport error
while reading arrives as the raw httpx2 exception, and an error event inside a
200 stream is classified by `stream_error` from the error type it names.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from services.provider.adapters.base import UpstreamError

_MAX_MESSAGE = 1000
_REDACTED = "[redacted]"


@dataclass(frozen=True)
class SdkErrors:
    """One SDK's exception classes."""

    base: type[Exception]  # AnthropicError / OpenAIError
    api: type[Exception]  # APIError: any error tied to a request (also an error payload inside a stream)
    status: type[Exception]  # APIStatusError: .status_code, .response, .body
    validation: type[Exception]  # APIResponseValidationError: a response that does not fit the schema
    connection: type[Exception]  # APIConnectionError
    timeout: type[Exception]  # APITimeoutError (a subclass of APIConnectionError)


def sanitize(text: str, api_key: str) -> str:
    """The text without the API key, shortened for logs."""
    if api_key:
        text = text.replace(api_key, _REDACTED)
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "…"
    return text


def retry_after_seconds(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None if absent."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis)
        except ValueError:
            value = -1.0
        if value >= 0 and value == value:  # not NaN
            return value / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, seconds)
    return seconds if seconds >= 0 and seconds == seconds else None


def _body_error_type(body: object) -> str:
    """The error type and code named in an error body ({"error": {"type", "code"}} or {"type", "code"}), as one
    string: OpenAI's rate limit, say, is type "requests" with code "rate_limit_exceeded"."""
    if not isinstance(body, Mapping):
        return ""
    inner = body.get("error", body)
    if not isinstance(inner, Mapping):
        return ""
    names = [inner.get(key) for key in ("type", "code")]
    return " ".join(name for name in names if isinstance(name, str) and name and name != "error")


def _by_error_type(error_type: str, message: str, status: int | None) -> UpstreamError:
    """Classify an error reported inside a stream (no meaningful HTTP status)."""
    kind = error_type.lower()
    if "overloaded" in kind or "rate_limit" in kind:
        return UpstreamError("RATE_LIMITED", message, transient=True, status=status)
    if "authentication" in kind or "permission" in kind or "invalid_api_key" in kind:
        return UpstreamError("AUTHENTICATION", message, transient=False, status=status)
    if "invalid_request" in kind or "not_found" in kind or "context_length" in kind:
        return UpstreamError("BAD_REQUEST", message, transient=False, status=status)
    return UpstreamError("SERVER_ERROR", message, transient=True, status=status)


def stream_error(body: object, api_key: str) -> UpstreamError:
    """The error an upstream reported inside a 200 stream (its body: {"error": {...}} or the error object)."""
    inner = body.get("error", body) if isinstance(body, Mapping) else body
    message = inner.get("message") if isinstance(inner, Mapping) else None
    text = message if isinstance(message, str) and message else "the upstream reported an error in the stream"
    return _by_error_type(_body_error_type(body), sanitize(f"stream error: {text}", api_key), None)


def _by_status(status: int, message: str, headers: Mapping[str, str] | None, body: object) -> UpstreamError:
    if status in (429, 529):
        return UpstreamError(
            "RATE_LIMITED", message, transient=True, status=status, retry_after=retry_after_seconds(headers)
        )
    if status >= 500:
        return UpstreamError(
            "SERVER_ERROR", message, transient=True, status=status, retry_after=retry_after_seconds(headers)
        )
    if status == 408:
        return UpstreamError("TIMEOUT", message, transient=True, status=status)
    if status == 409:  # both SDKs treat a conflict as retryable
        return UpstreamError("SERVER_ERROR", message, transient=True, status=status)
    if status in (401, 402, 403):
        return UpstreamError("AUTHENTICATION", message, transient=False, status=status)
    if status >= 400:
        # 400 / 404 / 413 / 422 ...: the request itself is wrong (a 404 is usually a wrong model name).
        return UpstreamError("BAD_REQUEST", message, transient=False, status=status)
    return _by_error_type(_body_error_type(body), message, None)


def _refused(exc: BaseException) -> bool:
    """Whether a "timeout" was caused by a connection that failed at once (an OSError that is no timeout).

    The SDKs' aiohttp transport reports a refused connection as a connect timeout.
    """
    cause = exc.__cause__ or exc.__context__
    for _ in range(8):
        if cause is None:
            return False
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def classify(exc: Exception, sdk: SdkErrors, *, api_key: str, streaming: bool) -> UpstreamError | None:
    """The UpstreamError for an exception raised by an SDK call or while reading its stream.

    streaming: the response had started, so a broken connection is a cut stream.
    Returns None for an exception that is not an upstream failure (a bug of ours): the caller re-raises it.
    """
    import httpx2  # lazily, like the SDKs that depend on it

    if isinstance(exc, UpstreamError):
        return exc
    detail = str(exc)
    message = sanitize(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__, api_key)
    if isinstance(exc, sdk.validation):
        return UpstreamError("MALFORMED_RESPONSE", message, transient=True, status=getattr(exc, "status_code", None))
    if isinstance(exc, sdk.status):
        status = getattr(exc, "status_code", None)
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        body = getattr(exc, "body", None)
        if not isinstance(status, int):
            return _by_error_type(_body_error_type(body), message, None)
        return _by_status(status, message, headers if isinstance(headers, Mapping) else None, body)
    if isinstance(exc, sdk.timeout | httpx2.TimeoutException) and not _refused(exc):
        return UpstreamError("TIMEOUT", message, transient=True)
    if isinstance(exc, httpx2.DecodingError):
        return UpstreamError("MALFORMED_RESPONSE", message, transient=True)
    if isinstance(exc, sdk.connection | httpx2.TransportError):
        reason = "STREAM_CUT" if streaming else "CONNECTION"
        return UpstreamError(reason, message, transient=True)
    if isinstance(exc, sdk.api):
        # An error payload inside a stream (openai), with no HTTP status of its own.
        return _by_error_type(_body_error_type(getattr(exc, "body", None)), message, None)
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return UpstreamError("MALFORMED_RESPONSE", message, transient=True)
    if isinstance(exc, httpx2.StreamError):  # the response was closed under us
        return UpstreamError("STREAM_CUT" if streaming else "CONNECTION", message, transient=True)
    if isinstance(exc, sdk.base):
        # Client-side SDK errors (credentials, configuration): retrying will not help.
        return UpstreamError("BAD_REQUEST", message, transient=False)
    return None
