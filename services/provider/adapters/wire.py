"""Reading raw stream payloads (decoded JSON) defensively.

The adapters let the SDKs send the request, check the status, decode the SSE
stream and raise for error events, but take each event as the decoded JSON
object rather than the SDK's typed model: building those models costs more CPU
per token than everything else the provider does (see ADR 0006). These helpers
read fields without trusting their types: a field of the wrong type reads as
absent, never as a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.provider.adapters.base import UpstreamError

Json = Mapping[str, Any]
EMPTY: Json = {}


def as_object(value: object) -> Json:
    """`value` if it is a JSON object, else an empty one."""
    return value if isinstance(value, Mapping) else EMPTY


def event_object(value: object) -> Json:
    """A stream event, which must be a JSON object: anything else is a malformed stream."""
    if not isinstance(value, Mapping):
        raise UpstreamError("MALFORMED_RESPONSE", "a stream event is not a JSON object", transient=True)
    return value


def get_object(parent: Json, key: str) -> Json | None:
    value = parent.get(key)
    return value if isinstance(value, Mapping) else None


def get_list(parent: Json, key: str) -> list[Any]:
    value = parent.get(key)
    return value if isinstance(value, list) else []


def get_str(parent: Json, key: str) -> str | None:
    value = parent.get(key)
    return value if isinstance(value, str) else None


def get_int(parent: Json, key: str) -> int | None:
    value = parent.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
