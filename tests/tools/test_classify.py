"""Classification: annotations, server trust and agent policy decide read or write, confirm or not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.runtime.tools.classify import (
    AgentPolicy,
    Classification,
    Reason,
    RunMode,
    ToolHints,
    ToolKind,
    classify,
)
from services.runtime.tools.config import Trust

READ, WRITE = ToolKind.READ, ToolKind.WRITE
T, U = Trust.TRUSTED, Trust.UNTRUSTED
INTERACTIVE = AgentPolicy()
AUTO_ALL = AgentPolicy(mode=RunMode.AUTONOMOUS, auto_approve=("notes.*",))
AUTO_DELETE = AgentPolicy(mode=RunMode.AUTONOMOUS, auto_approve=("notes.delete_note",))
CREATE = ToolHints(read_only=False, destructive=False, idempotent=False)  # the example server's create_note
UPDATE = ToolHints(read_only=False, destructive=True, idempotent=True)
READ_ONLY = ToolHints(read_only=True)


def c(kind: ToolKind, confirm: bool, destructive: bool, idempotent: bool, reason: Reason) -> Classification:
    return Classification(kind, confirm, destructive, idempotent, reason)


# (tool name, hints, trust, policy) -> expected classification
MATRIX = [
    # Trusted servers: annotations are believed, missing ones take the safe default.
    ("notes.list_notes", READ_ONLY, T, INTERACTIVE, c(READ, False, False, True, Reason.READ_ONLY)),
    ("notes.x", ToolHints(read_only=True, destructive=True), T, INTERACTIVE,
     c(READ, False, False, True, Reason.READ_ONLY)),
    ("notes.x", None, T, INTERACTIVE, c(WRITE, True, True, False, Reason.WRITE)),  # no annotations at all
    ("notes.x", ToolHints(), T, INTERACTIVE, c(WRITE, True, True, False, Reason.WRITE)),  # annotations, all unset
    ("notes.x", ToolHints(destructive=False), T, INTERACTIVE, c(WRITE, True, False, False, Reason.WRITE)),
    ("notes.x", ToolHints(idempotent=True), T, INTERACTIVE, c(WRITE, True, True, True, Reason.WRITE)),
    ("notes.create_note", CREATE, T, INTERACTIVE, c(WRITE, True, False, False, Reason.WRITE)),
    ("notes.update_note", UPDATE, T, INTERACTIVE, c(WRITE, True, True, True, Reason.WRITE)),
    # Untrusted servers: annotations are ignored; everything is a destructive, non-idempotent write.
    ("web.search", READ_ONLY, U, INTERACTIVE, c(WRITE, True, True, False, Reason.UNTRUSTED_SERVER)),
    ("web.x", None, U, INTERACTIVE, c(WRITE, True, True, False, Reason.UNTRUSTED_SERVER)),
    ("web.put", CREATE, U, INTERACTIVE, c(WRITE, True, True, False, Reason.UNTRUSTED_SERVER)),
    ("web.put", UPDATE, U, INTERACTIVE, c(WRITE, True, True, False, Reason.UNTRUSTED_SERVER)),
    # always_confirm makes anything a confirmed write, by name or pattern, even in autonomous mode.
    ("notes.list_notes", READ_ONLY, T, AgentPolicy(always_confirm=("notes.list_notes",)),
     c(WRITE, True, False, True, Reason.ALWAYS_CONFIRM)),
    ("notes.read_note", READ_ONLY, T, AgentPolicy(always_confirm=("notes.*",)),
     c(WRITE, True, False, True, Reason.ALWAYS_CONFIRM)),
    ("notes.create_note", CREATE, T,
     AgentPolicy(mode=RunMode.AUTONOMOUS, auto_approve=("notes.create_note",), always_confirm=("notes.create_note",)),
     c(WRITE, True, False, False, Reason.ALWAYS_CONFIRM)),
    # auto_approve applies in autonomous mode only.
    ("notes.create_note", CREATE, T, AgentPolicy(auto_approve=("notes.create_note",)),
     c(WRITE, True, False, False, Reason.WRITE)),
    ("notes.create_note", CREATE, T, AUTO_ALL, c(WRITE, False, False, False, Reason.AUTO_APPROVED)),
    # A destructive write is auto-approved only when named exactly, never by a pattern.
    ("notes.delete_note", UPDATE, T, AUTO_ALL, c(WRITE, True, True, True, Reason.WRITE)),
    ("notes.delete_note", UPDATE, T, AUTO_DELETE, c(WRITE, False, True, True, Reason.AUTO_APPROVED)),
    ("notes.x", None, T, AUTO_ALL, c(WRITE, True, True, False, Reason.WRITE)),  # missing hints: destructive
    ("web.put", CREATE, U, AgentPolicy(mode=RunMode.AUTONOMOUS, auto_approve=("web.*",)),
     c(WRITE, True, True, False, Reason.UNTRUSTED_SERVER)),
    ("web.put", CREATE, U, AgentPolicy(mode=RunMode.AUTONOMOUS, auto_approve=("web.put",)),
     c(WRITE, False, True, False, Reason.AUTO_APPROVED)),
    # Reads are never affected by auto_approve.
    ("notes.list_notes", READ_ONLY, T, AUTO_ALL, c(READ, False, False, True, Reason.READ_ONLY)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "hints", "trust", "policy", "expected"), MATRIX)
def test_classification_matrix(
    name: str, hints: ToolHints | None, trust: Trust, policy: AgentPolicy, expected: Classification
) -> None:
    assert classify(name, hints, trust, policy) == expected


optional_bool = st.none() | st.booleans()
hints_strategy = st.none() | st.builds(ToolHints, optional_bool, optional_bool, optional_bool)
policies = st.builds(
    AgentPolicy,
    st.sampled_from(RunMode),
    st.lists(st.sampled_from(["notes.*", "*", "notes.tool", "other.*"]), max_size=3).map(tuple),
    st.lists(st.sampled_from(["notes.*", "other.tool"]), max_size=2).map(tuple),
)


@given(hints=hints_strategy, policy=policies)
def test_nothing_but_a_trusted_read_only_hint_makes_a_read(hints: ToolHints | None, policy: AgentPolicy) -> None:
    untrusted = classify("notes.tool", hints, Trust.UNTRUSTED, policy)
    assert untrusted.kind is ToolKind.WRITE
    assert not untrusted.idempotent
    trusted = classify("notes.tool", hints, Trust.TRUSTED, policy)
    if hints is None or hints.read_only is not True:
        assert trusted.kind is ToolKind.WRITE
    if trusted.kind is ToolKind.WRITE and policy.mode is RunMode.INTERACTIVE:
        assert trusted.needs_confirmation


@pytest.mark.parametrize("hints", [None, ToolHints(), ToolHints(read_only=False, idempotent=False)])
def test_a_trusted_server_that_honours_keys_makes_its_writes_idempotent(hints: ToolHints | None) -> None:
    # idempotentHint speaks of the same arguments without a key; the operator's `idempotency_keys` of the key itself.
    policy = AgentPolicy()
    assert not classify("notes.create_note", hints, Trust.TRUSTED, policy).idempotent
    keyed = classify("notes.create_note", hints, Trust.TRUSTED, policy, honours_keys=True)
    assert keyed == Classification(WRITE, True, True, True, Reason.WRITE)
    # An untrusted server's word is not taken, even if a config said so (config.py refuses it).
    assert not classify("notes.create_note", hints, Trust.UNTRUSTED, policy, honours_keys=True).idempotent
