"""The notes MCP server: read and write tools over a `NotesStore`, built on the SDK's low-level `Server`.

Idempotency: a write call may carry `_meta["steward/idempotency_key"]` (a string of 1 to 200
characters). The first call with a key is applied and recorded together with its result; every
later call with the same key, tool and arguments returns the recorded result, applies nothing, and
carries `_meta["steward/replayed"] = true`. The same key with another tool or other arguments is a
tool error. Calls without a key are applied every time (and recorded with no key).

Slow writes, for crash tests: a write waits `delay_seconds` (its argument, else the server's
`write_delay`) before it applies. Once accepted, a write runs to completion even if the caller
cancels or goes away, as a real backend would: its outcome is then unknown to the caller, and the
record says whether it happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
from jsonschema import Draft202012Validator
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from examples.notes_mcp import proposals
from examples.notes_mcp import store as notes
from examples.notes_mcp.store import KeyReuseError, NotesStore, Outcome

IDEMPOTENCY_META_KEY = "steward/idempotency_key"
REPLAYED_META_KEY = "steward/replayed"
MAX_DELAY_SECONDS = 30.0

log = logging.getLogger(__name__)

_NOTE_ID = {"type": "string", "pattern": "^n_[0-9a-f]{12}$", "description": "A note id, as returned by create_note."}
_TITLE = {"type": "string", "minLength": 1, "maxLength": 200, "description": "The note's title."}
_BODY = {"type": "string", "maxLength": 10000, "description": "The note's text."}
_TAGS = {
    "type": "array",
    "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,31}$"},
    "maxItems": 10,
    "uniqueItems": True,
    "description": "Lower-case tags.",
}
_DELAY = {
    "type": "number",
    "minimum": 0,
    "maximum": MAX_DELAY_SECONDS,
    "description": "Testing aid: seconds to wait before applying the write.",
}


_HUNKS = {
    "type": "array",
    "items": {"type": "integer", "minimum": 1},
    "minItems": 1,
    "uniqueItems": True,
    "description": "Apply only these hunks of the body's change (1-based, as numbered in the proposal's diff).",
}


def _object(properties: dict[str, Any], required: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False, **extra}


@dataclass(frozen=True)
class _Spec:
    tool: types.Tool
    write: Callable[[dict[str, Any]], notes.Apply] | None  # None: a read tool


def _read(name: str, description: str, schema: dict[str, Any]) -> _Spec:
    annotations = types.ToolAnnotations(read_only_hint=True, open_world_hint=False)
    return _Spec(types.Tool(name=name, description=description, input_schema=schema, annotations=annotations), None)


def _proposer(write: str, schema: dict[str, Any]) -> _Spec:
    """The read-only companion that proposes `write` (the same arguments; docs/proposals.md)."""
    return _read(f"propose_{write}", f"What {write} would do with these arguments, changing nothing.", schema)


def _write(
    name: str,
    description: str,
    schema: dict[str, Any],
    write: Callable[[dict[str, Any]], notes.Apply],
    *,
    destructive: bool,
    idempotent: bool,
    meta: dict[str, Any] | None = None,
) -> _Spec:
    annotations = types.ToolAnnotations(
        read_only_hint=False, destructive_hint=destructive, idempotent_hint=idempotent, open_world_hint=False
    )
    # Steward's proposal convention: the companion that proposes this write, and how it may be decided.
    meta = {proposals.PROPOSAL_TOOL_META_KEY: f"propose_{name}", **(meta or {})}
    tool = types.Tool(name=name, description=description, input_schema=schema, annotations=annotations, _meta=meta)
    return _Spec(tool, write)


_CREATE_SCHEMA = _object({"title": _TITLE, "body": _BODY, "tags": _TAGS, "delay_seconds": _DELAY}, ["title"])
_UPDATE_SCHEMA = _object(
    {"id": _NOTE_ID, "title": _TITLE, "body": _BODY, "tags": _TAGS, "hunks": _HUNKS, "delay_seconds": _DELAY},
    ["id"],
    anyOf=[{"required": ["title"]}, {"required": ["body"]}, {"required": ["tags"]}],
)
_DELETE_SCHEMA = _object({"id": _NOTE_ID, "delay_seconds": _DELAY}, ["id"])


SPECS: dict[str, _Spec] = {
    spec.tool.name: spec
    for spec in (
        _read(
            "list_notes",
            "List notes, oldest first, optionally only those with a tag.",
            _object({"tag": _TAGS["items"], "limit": {"type": "integer", "minimum": 1, "maximum": 100}}, []),
        ),
        _read("read_note", "Read one note by id.", _object({"id": _NOTE_ID}, ["id"])),
        _read(
            "list_applied_writes",
            "List the server's append-only record of applied write calls (idempotency key, tool, arguments, result).",
            _object(
                {
                    "after_seq": {"type": "integer", "minimum": 0},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
                [],
            ),
        ),
        _write(
            "create_note",
            "Create a note. Each call creates a new note.",
            _CREATE_SCHEMA,
            notes.create_note,
            destructive=False,
            idempotent=False,
        ),
        _write(
            "update_note",
            "Replace a note's title, body or tags (at least one). Repeating a call changes nothing more. With "
            "hunks, only those hunks of the body's change apply.",
            _UPDATE_SCHEMA,
            notes.update_note,
            destructive=True,
            idempotent=True,
            meta={
                proposals.DECISION_SCHEMA_META_KEY: proposals.HUNKS_DECISION_SCHEMA,
                proposals.DECISION_ARGUMENTS_META_KEY: ["hunks"],
            },
        ),
        _write(
            "delete_note",
            "Delete a note. Deleting a note that does not exist succeeds with deleted=false.",
            _DELETE_SCHEMA,
            notes.delete_note,
            destructive=True,
            idempotent=True,
        ),
        _proposer("create_note", _CREATE_SCHEMA),
        _proposer("update_note", _UPDATE_SCHEMA),
        _proposer("delete_note", _DELETE_SCHEMA),
    )
}
_VALIDATORS = {name: Draft202012Validator(spec.tool.input_schema) for name, spec in SPECS.items()}


def _result(outcome: Outcome, *, replayed: bool = False) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=outcome.text)],
        structured_content=outcome.structured,
        is_error=outcome.is_error,
        meta={REPLAYED_META_KEY: True} if replayed else None,
    )


def _error(message: str) -> types.CallToolResult:
    return _result(Outcome(structured={"error": message}, is_error=True))


def _idempotency_key(meta: types.RequestParamsMeta | None) -> str | None:
    key = (meta or {}).get(IDEMPOTENCY_META_KEY)
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= 200:
        raise ValueError(f"_meta[{IDEMPOTENCY_META_KEY!r}] must be a string of 1 to 200 characters")
    return key


def _read_tool(store: NotesStore, name: str, args: dict[str, Any]) -> Outcome:
    if name == "list_notes":
        return Outcome(structured={"notes": store.list_notes(args.get("tag"), args.get("limit", 100))})
    if name == "read_note":
        note = store.get_note(args["id"])
        if note is None:
            return Outcome(structured={"error": f"note {args['id']} not found"}, is_error=True)
        return Outcome(structured={"note": note})
    if name == "propose_create_note":
        return Outcome(structured=proposals.propose_create(args))
    if name == "propose_update_note":
        return Outcome(structured=proposals.propose_update(store.get_note(args["id"]), args))
    if name == "propose_delete_note":
        return Outcome(structured=proposals.propose_delete(store.get_note(args["id"]), args["id"]))
    writes = store.applied_writes(args.get("after_seq", 0), args.get("limit", 1000))
    return Outcome(
        structured={
            "writes": [
                {
                    "seq": w.seq,
                    "idempotency_key": w.idempotency_key,
                    "tool": w.tool,
                    "arguments": w.arguments,
                    "result": w.result,
                    "applied_at": w.applied_at,
                }
                for w in writes
            ]
        }
    )


def build_server(store: NotesStore, *, write_delay: float = 0.0) -> Server[Any]:
    """The notes server over `store`; `write_delay` is the default wait before each write applies."""

    async def on_list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[spec.tool for spec in SPECS.values()])

    async def on_call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        spec = SPECS.get(params.name)
        if spec is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"unknown tool {params.name!r}")
        args = params.arguments or {}
        problems = sorted(_VALIDATORS[params.name].iter_errors(args), key=lambda e: list(e.path))
        if problems:
            return _error("; ".join(f"{'/'.join(map(str, p.path)) or '(arguments)'}: {p.message}" for p in problems))
        if spec.write is None:
            return _result(_read_tool(store, params.name, args))
        try:
            key = _idempotency_key(params.meta)
        except ValueError as exc:
            return _error(str(exc))
        apply = spec.write({k: v for k, v in args.items() if k != "delay_seconds"})
        try:
            if key is not None and (recorded := store.recorded(key, params.name, args)) is not None:
                return _result(recorded, replayed=True)  # nothing to apply, so no delay either
            # Shielded: an accepted write completes even if the caller cancels or disconnects.
            with anyio.CancelScope(shield=True):
                await anyio.sleep(float(args.get("delay_seconds", write_delay)))
                outcome, replayed = store.apply_write(key, params.name, args, apply)
        except KeyReuseError as exc:
            return _error(str(exc))
        log.info("write %s key=%s replayed=%s error=%s", params.name, key, replayed, outcome.is_error)
        return _result(outcome, replayed=replayed)

    return Server(
        "steward-notes",
        version="1.0.0",
        instructions="Notes and tasks. Read tools are safe; write tools accept _meta['steward/idempotency_key'].",
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )
