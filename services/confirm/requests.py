"""CreateConfirmation and FinishExecution requests, validated into what the repositories take."""

from __future__ import annotations

import json

from services.confirm import validation as v
from services.confirm.db.confirmations import NewConfirmation
from services.confirm.db.executions import Finish
from services.confirm.decisions import arguments_schema, decision_schema
from steward import canonical
from steward.confirm.v1 import confirm_service_pb2 as pb
from steward.confirm.v1 import confirmation_pb2
from steward.errors import invalid_argument

PREVIEW_KINDS = frozenset(
    {confirmation_pb2.PREVIEW_KIND_TEXT, confirmation_pb2.PREVIEW_KIND_JSON, confirmation_pb2.PREVIEW_KIND_DIFF}
)
MAX_DECISION_ARGUMENTS = 32
RESERVED_DECISION_PROPERTIES = frozenset({"outcome", "reason", "edited_arguments"})
CONFIRMATION_KINDS = frozenset(
    {confirmation_pb2.CONFIRMATION_KIND_TOOL_WRITE, confirmation_pb2.CONFIRMATION_KIND_OUTCOME_UNKNOWN}
)


def new_confirmation(
    request: pb.CreateConfirmationRequest, *, default_ttl: float, max_ttl: float, actor: str
) -> NewConfirmation:
    """A CreateConfirmation request, validated; INVALID_ARGUMENT (or TOO_LARGE) naming the first bad field."""
    request_id = v.plain_text(request.request_id, "request_id", v.MAX_REQUEST_ID_LENGTH) or None
    run_id = v.require_id(request.run_id, "run_id")
    conversation_id = v.plain_text(request.conversation_id, "conversation_id", v.MAX_ID_LENGTH)
    tool_call_id = v.require_id(request.tool_call_id, "tool_call_id", v.MAX_TOOL_CALL_ID_LENGTH)
    tool_name = v.require_id(request.tool_name, "tool_name", v.MAX_TOOL_NAME_LENGTH)
    if not request.arguments_json:
        raise invalid_argument("arguments_json", "arguments_json is required")
    arguments = v.json_object(request.arguments_json, "arguments_json", v.MAX_ARGUMENTS_LENGTH)
    preview = _preview(request)
    schema = decision_schema(request.decision_schema_json)
    tool_schema = arguments_schema(request.arguments_schema_json)  # not in request_hash: see the proto
    decision_arguments = _decision_arguments(request, schema, tool_schema)
    if request.kind not in CONFIRMATION_KINDS:
        raise invalid_argument("kind", "kind must be TOOL_WRITE or OUTCOME_UNKNOWN")
    related = v.plain_text(request.related_confirmation_id, "related_confirmation_id", v.MAX_ID_LENGTH)
    if (request.kind == confirmation_pb2.CONFIRMATION_KIND_OUTCOME_UNKNOWN) != bool(related):
        raise invalid_argument(
            "related_confirmation_id", "related_confirmation_id is required for OUTCOME_UNKNOWN and only for it"
        )
    if request.approved_by_policy and request.kind != confirmation_pb2.CONFIRMATION_KIND_TOOL_WRITE:
        raise invalid_argument("approved_by_policy", "only a TOOL_WRITE confirmation may be approved by policy")
    ttl = v.ttl(request.ttl, default_ttl, max_ttl)
    epoch = v.lease_epoch(request.lease_epoch)
    arguments_hash = canonical.sha256_hex(arguments)
    asked = {
        "run_id": run_id,
        "conversation_id": conversation_id,
        "tool_call_id": tool_call_id,
        "tool_name": tool_name,
        "arguments_hash": arguments_hash,
        "preview": [preview.kind, preview.title, preview.content],
        "decision_schema": canonical.canonical(canonical.parse(request.decision_schema_json))
        if request.decision_schema_json
        else "",
        "kind": request.kind,
        "related_confirmation_id": related,
        "ttl": [request.ttl.seconds, request.ttl.nanos],
        "approved_by_policy": request.approved_by_policy,
    }
    if decision_arguments:  # only when given, so the hash of a request without them is what it always was
        asked["decision_arguments"] = list(decision_arguments)
    return NewConfirmation(
        request_id=request_id,
        request_hash=canonical.sha256_hex(asked),
        run_id=run_id,
        conversation_id=conversation_id,
        tool_call_id=tool_call_id,
        tool_name=tool_name,
        arguments_json=request.arguments_json,
        arguments_hash=arguments_hash,
        preview=preview,
        decision_schema_json=schema,
        arguments_schema_json=tool_schema,
        kind=request.kind,
        related_confirmation_id=related,
        ttl=ttl,
        lease_epoch=epoch,
        actor=actor,
        approved_by_policy=request.approved_by_policy,
        decision_arguments=decision_arguments,
    )


def _decision_arguments(request: pb.CreateConfirmationRequest, schema_text: str, tool_schema: str) -> tuple[str, ...]:
    """The decision schema's properties that become arguments when approved (see the proto)."""
    names = tuple(request.decision_arguments)
    if not names:
        return ()
    field = "decision_arguments"
    if not request.decision_schema_json or not tool_schema:
        message = "decision_arguments needs a custom decision_schema_json and arguments_schema_json"
        raise invalid_argument(field, message)
    if len(names) > MAX_DECISION_ARGUMENTS or len(set(names)) != len(names):
        raise invalid_argument(field, f"decision_arguments must be at most {MAX_DECISION_ARGUMENTS} distinct names")
    declared = json.loads(schema_text).get("properties")
    for name in names:
        v.plain_text(name, field, v.MAX_ID_LENGTH)
        if name in RESERVED_DECISION_PROPERTIES:
            raise invalid_argument(field, f"decision_arguments may not name {name!r}: it is part of every decision")
        if not isinstance(declared, dict) or name not in declared:
            message = f"decision_arguments names {name!r}, which the decision schema does not declare"
            raise invalid_argument(field, message)
    return names


def _preview(request: pb.CreateConfirmationRequest) -> confirmation_pb2.Preview:
    if not request.HasField("preview"):
        raise invalid_argument("preview", "preview is required")
    preview = request.preview
    if preview.kind not in PREVIEW_KINDS:
        raise invalid_argument("preview.kind", "preview.kind must be TEXT, JSON or DIFF")
    if not preview.content:
        raise invalid_argument("preview.content", "preview.content is required")
    if len(preview.content) > v.MAX_PREVIEW_LENGTH:
        raise v.too_large("preview.content", v.MAX_PREVIEW_LENGTH)
    v.plain_text(preview.content, "preview.content", v.MAX_PREVIEW_LENGTH)
    v.plain_text(preview.title, "preview.title", v.MAX_TITLE_LENGTH)
    if preview.kind == confirmation_pb2.PREVIEW_KIND_JSON:
        try:
            json.loads(preview.content)
        except ValueError as exc:
            raise invalid_argument("preview.content", "a JSON preview must be JSON text") from exc
    return preview


def finish(request: pb.FinishExecutionRequest, actor: str) -> Finish:
    """A FinishExecution request, validated; result_json must be JSON unless the outcome is unknown."""
    if not request.outcome_unknown:
        if len(request.result_json) > v.MAX_RESULT_LENGTH:
            raise v.too_large("result_json", v.MAX_RESULT_LENGTH)
        try:
            json.loads(request.result_json)
        except ValueError as exc:
            raise invalid_argument("result_json", "result_json must be JSON text") from exc
    return Finish(
        result_json=request.result_json,
        is_error=request.is_error,
        outcome_unknown=request.outcome_unknown,
        lease_epoch=v.lease_epoch(request.lease_epoch),
        actor=actor,
    )
