"""Request validation shared by the store's servicers (text policy: services/store/text.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from services.store.text import plain_text as plain_text
from steward import paging
from steward.common.v1 import content_pb2
from steward.errors import invalid_argument

MAX_ID_LENGTH = 64
MAX_REQUEST_ID_LENGTH = 128
MAX_TITLE_LENGTH = 500
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def require_id(value: str, field: str) -> str:
    """A non-empty id of sane length."""
    if not value:
        raise invalid_argument(field, f"{field} is required")
    return plain_text(value, field, MAX_ID_LENGTH)


def optional_request_id(value: str, field: str = "request_id") -> str | None:
    """An idempotency key, or None when not given."""
    return plain_text(value, field, MAX_REQUEST_ID_LENGTH) or None


def client_run_id(value: str) -> str:
    """A client-minted run id must be a UUID; empty means the store mints one."""
    if not value:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise invalid_argument("run_id", "run_id must be a UUID") from exc


def message_ids(values: Sequence[str], messages: int) -> list[str] | None:
    """Caller-minted message ids: none (the store mints them), or one canonical UUID per message (events may
    carry them verbatim, so no other spelling is accepted)."""
    if not values:
        return None
    if len(values) != messages:
        raise invalid_argument("message_ids", "message_ids must have one id per message")
    for value in values:
        try:
            canonical = str(uuid.UUID(value))
        except ValueError:
            canonical = ""
        if canonical != value:
            raise invalid_argument("message_ids", "message_ids must be UUIDs in canonical form")
    return list(values)


def page_size(value: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """The store's page sizes: DEFAULT_PAGE_SIZE unless a list says otherwise (steward.paging's rule)."""
    return paging.page_size(value, default, maximum)


def chat_message(message: content_pb2.ChatMessage, field: str) -> content_pb2.ChatMessage:
    """A message with a role and at least one content block."""
    if message.role == content_pb2.ROLE_UNSPECIFIED:
        raise invalid_argument(f"{field}.role", "role is required")
    if not message.content:
        raise invalid_argument(f"{field}.content", "content must not be empty")
    for index, block in enumerate(message.content):
        if block.WhichOneof("block") is None:
            raise invalid_argument(f"{field}.content[{index}]", "content block has no content")
    return message


MAX_CLIENT_TOOLS = 64
MAX_TOOL_SCHEMA_BYTES = 64 * 1024


def tool_specs(specs: list[content_pb2.ToolSpec], field: str) -> list[content_pb2.ToolSpec] | None:
    """Client tool specs: each named, with a unique name and a bounded schema; None when there are none."""
    if not specs:
        return None
    if len(specs) > MAX_CLIENT_TOOLS:
        raise invalid_argument(field, f"at most {MAX_CLIENT_TOOLS} tools")
    names: set[str] = set()
    for index, spec in enumerate(specs):
        name = plain_text(spec.name, f"{field}[{index}].name", MAX_ID_LENGTH)
        if not name or name in names:
            raise invalid_argument(f"{field}[{index}].name", "tool names must be present and unique")
        names.add(name)
        plain_text(spec.description, f"{field}[{index}].description", 4000)
        if len(spec.input_schema_json.encode()) > MAX_TOOL_SCHEMA_BYTES:
            raise invalid_argument(f"{field}[{index}].input_schema_json", "the schema is too large")
    return specs
