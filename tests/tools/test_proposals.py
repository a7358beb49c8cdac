"""How tools declare proposals and decision schemas (ADR 0017): `_meta`, the operator's config, built-in code."""

from __future__ import annotations

from typing import Any

import pytest

from services.runtime.tools.builtin import BuiltinTool
from services.runtime.tools.classify import ToolHints
from services.runtime.tools.config import ToolsConfigError, Trust, parse_config
from services.runtime.tools.model import (
    PreviewKind,
    Proposal,
    ProposalSpec,
    ToolCallStatus,
    ToolDefinition,
    ToolResult,
)
from services.runtime.tools.proposals import from_result, merged, render, spec_from_meta
from services.runtime.tools.registry import ToolRegistry

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"outcome": {"enum": ["approve", "reject"]}, "draft": {"enum": [1, 2, 3]}},
    "required": ["outcome", "draft"],
}


def test_meta_declares_a_companion_only_for_a_trusted_server_and_only_usable_schemas() -> None:
    meta = {
        "steward/proposal_tool": "preview_x",
        "steward/decision_schema": SCHEMA,
        "steward/decision_arguments": ["draft"],
    }
    trusted = spec_from_meta(meta, Trust.TRUSTED, "s.x")
    assert trusted == ProposalSpec(companion="preview_x", decision_schema=SCHEMA, decision_arguments=("draft",))
    untrusted = spec_from_meta(meta, Trust.UNTRUSTED, "s.x")
    assert untrusted is not None
    assert untrusted.companion is None
    assert untrusted.decision_schema == SCHEMA
    no_outcome = {"steward/decision_schema": {"type": "object", "properties": {"x": {}}}}
    assert spec_from_meta(no_outcome, Trust.TRUSTED, "s.x") is None  # dropped: the default applies
    assert spec_from_meta({"steward/decision_schema": {"$ref": "https://example.com/s"}}, Trust.TRUSTED, "s.x") is None


def test_the_operator_config_wins_and_refuses_an_unusable_schema() -> None:
    text = """
servers:
  s:
    transport: http
    url: http://127.0.0.1:1/mcp
    proposals:
      x: {title: "Send {to}", template: "To {to}: {text}"}
"""
    operator = parse_config(text).servers["s"].proposals["x"]
    spec = merged(operator, ProposalSpec(companion="preview_x", decision_schema=SCHEMA, decision_arguments=("draft",)))
    assert spec == ProposalSpec(
        companion="preview_x",
        decision_schema=SCHEMA,
        decision_arguments=("draft",),
        title="Send {to}",
        template=operator.template,
    )
    assert render("To {to}: {text} {missing} {n}", {"to": "ann", "text": "hi", "n": [1]}) == "To ann: hi  [1]"
    for bad in ("{decision_schema: {type: object}}", "{decision_arguments: [draft]}"):
        with pytest.raises(ToolsConfigError, match=r"proposals\.x"):
            parse_config(text.replace('{title: "Send {to}", template: "To {to}: {text}"}', bad))


def test_a_companion_answer_is_a_proposal_or_says_why_not() -> None:
    diff = {"kind": "diff", "title": "t", "content": "--- a\n+++ b\n", "decision_schema": SCHEMA}
    made = from_result(ToolResult(ToolCallStatus.OK, "", structured=diff), "s.x")
    assert made == Proposal(PreviewKind.DIFF, "--- a\n+++ b\n", "t", SCHEMA)
    assert from_result(ToolResult(ToolCallStatus.OK, "plain"), "s.x") == Proposal(PreviewKind.TEXT, "plain")
    for failed in (
        ToolResult.failure(ToolCallStatus.TIMEOUT, "s.x did not answer within 1 s"),
        ToolResult(ToolCallStatus.OK, "", structured={"kind": "html", "content": "x"}),
        ToolResult(ToolCallStatus.OK, "", structured={"kind": "json", "content": "{not json"}),
        ToolResult(ToolCallStatus.OK, "", structured={**diff, "decision_schema": {"type": "object"}}),
    ):
        assert isinstance(from_result(failed, "s.x"), str)


async def test_a_builtin_write_proposes_in_code_and_a_failing_proposer_says_why() -> None:
    def definition(name: str) -> ToolDefinition:
        return ToolDefinition(
            name=name,
            description=name,
            input_schema={"type": "object"},
            hints=ToolHints(read_only=False, destructive=True, idempotent=False),
            trust=Trust.TRUSTED,
            server=None,
            remote_name=name,
            proposal=ProposalSpec(decision_schema=SCHEMA, title="About {what}"),
        )

    def broken(arguments: Any) -> Proposal:
        raise RuntimeError("no backend")

    good = BuiltinTool(
        definition("w.good"), lambda a: ToolResult(ToolCallStatus.OK, ""), lambda a: Proposal(PreviewKind.TEXT, "c")
    )
    bad = BuiltinTool(definition("w.bad"), lambda a: ToolResult(ToolCallStatus.OK, ""), broken)
    registry = ToolRegistry(builtins=(good, bad))
    assert registry.proposes("w.good")
    assert not ToolRegistry().proposes("calc")
    made = await registry.propose(good.definition, {"what": "it"}, timeout=1.0)
    assert made == Proposal(PreviewKind.TEXT, "c", "About it")
    assert await registry.propose(bad.definition, {}, timeout=1.0) == "the proposal failed: RuntimeError: no backend"
