"""How a write tool declares its proposal and its decision schema, and how a proposal is made (ADR 0017).

Three sources, the first that declares something winning field by field:
- the operator's tools config (`servers.<name>.proposals.<tool>`; config.ProposalConfig);
- an MCP tool's `_meta` in its tools/list entry:
    `steward/proposal_tool`       the server's own name of a read-only companion tool, called with the write's
                                  arguments, whose structured result is the proposal (honoured from trusted servers
                                  only: an untrusted server's "read-only" tool is not taken at its word);
    `steward/decision_schema`     the decision JSON Schema (draft 2020-12; must require "outcome");
    `steward/decision_arguments`  decision properties whose values, when approved, become arguments of that name;
- a built-in's code (builtin.BuiltinTool.propose, and its definition's ProposalSpec).

A companion answers `structuredContent` {"kind": "text" | "json" | "diff", "content": str, "title"?: str,
"decision_schema"?: object} (a per-call schema overrides the tool's), or plain text (a text proposal). A declared
schema that is not a usable decision schema is logged and dropped (the default applies), never sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import structlog

from services.runtime.tools.config import ProposalConfig, Trust
from services.runtime.tools.model import PreviewKind, Proposal, ProposalSpec, ToolResult
from steward.decision_schemas import decision_schema_problem

COMPANION_META_KEY = "steward/proposal_tool"
DECISION_SCHEMA_META_KEY = "steward/decision_schema"
DECISION_ARGUMENTS_META_KEY = "steward/decision_arguments"
MAX_TITLE = 500
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

log = structlog.get_logger(__name__)


def checked_schema(schema: Any, tool: str, source: str) -> Mapping[str, Any] | None:
    """`schema` when it is a usable decision schema; None (logged) otherwise."""
    if schema is None:
        return None
    problem = decision_schema_problem(schema)
    if problem is None:
        return dict(schema)
    log.warning("tool_decision_schema_invalid", tool=tool, source=source, problem=f"the decision schema {problem}")
    return None


def _names(value: Any, tool: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(item, str) and item for item in value):
        return tuple(value)
    log.warning("tool_decision_arguments_invalid", tool=tool, problem=f"{DECISION_ARGUMENTS_META_KEY} must list names")
    return ()


def spec_from_meta(meta: Mapping[str, Any] | None, trust: Trust, tool: str) -> ProposalSpec | None:
    """What an MCP tool's `_meta` declares; None when it declares nothing usable."""
    if not meta:
        return None
    companion = meta.get(COMPANION_META_KEY)
    if companion is not None and not (isinstance(companion, str) and companion):
        log.warning("tool_proposal_tool_invalid", tool=tool, problem=f"{COMPANION_META_KEY} must be a tool name")
        companion = None
    if companion is not None and trust is not Trust.TRUSTED:
        log.warning("tool_proposal_tool_ignored", tool=tool, reason="the server is not trusted", companion=companion)
        companion = None
    schema = checked_schema(meta.get(DECISION_SCHEMA_META_KEY), tool, "_meta")
    arguments = _names(meta.get(DECISION_ARGUMENTS_META_KEY), tool) if schema is not None else ()
    if companion is None and schema is None:
        return None
    return ProposalSpec(companion=companion, decision_schema=schema, decision_arguments=arguments)


def merged(operator: ProposalConfig | None, declared: ProposalSpec | None) -> ProposalSpec | None:
    """The operator's declaration over the tool's own, field by field (the decision arguments go with the schema)."""
    if operator is None:
        return declared
    base = declared or ProposalSpec()
    schema, arguments = base.decision_schema, base.decision_arguments
    if operator.decision_schema is not None:
        schema, arguments = operator.decision_schema, operator.decision_arguments
    return ProposalSpec(
        companion=operator.companion or base.companion,
        decision_schema=schema,
        decision_arguments=arguments,
        title=operator.title,
        template=operator.template,
    )


def render(template: str, arguments: Mapping[str, Any]) -> str:
    """`template` with each `{name}` replaced by the argument `name` (text as is, anything else as JSON; "" when
    absent). Only plain names: nothing else of the arguments is reachable from a template."""

    def value(match: re.Match[str]) -> str:
        found = arguments.get(match.group(1))
        if found is None:
            return ""
        return found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)

    return _PLACEHOLDER.sub(value, template)


def from_result(result: ToolResult, tool: str) -> Proposal | str:
    """The proposal a companion answered, or why it is not one."""
    if result.is_error:
        return f"the proposal tool failed ({result.status.value}): {result.text[:200]}"
    structured = result.structured
    if structured is None:
        if not result.text:
            return "the proposal tool answered nothing"
        return Proposal(kind=PreviewKind.TEXT, content=result.text)
    if not isinstance(structured, dict):
        return "the proposal tool's structured result is not an object"
    try:
        kind = PreviewKind(structured.get("kind", "text"))
    except ValueError:
        return 'the proposal\'s "kind" must be "text", "json" or "diff"'
    content, title = structured.get("content"), structured.get("title", "")
    if not isinstance(content, str) or not content or not isinstance(title, str):
        return 'the proposal needs a non-empty "content" text (and a "title" text, if any)'
    if kind is PreviewKind.JSON:
        try:
            json.loads(content)
        except ValueError:
            return "a JSON proposal's content must be JSON text"
    schema = structured.get("decision_schema")
    checked = checked_schema(schema, tool, "proposal") if schema is not None else None
    if schema is not None and checked is None:
        return "the proposal's decision schema is not a usable decision schema"
    return Proposal(kind=kind, content=content, title=title[:MAX_TITLE], decision_schema=checked)
