"""Classification: does a tool call run at once (read) or wait for a person's confirmation (write)?

A pure function of the tool's MCP annotations, its server's trust level (and whether the operator says it honours
idempotency keys) and the agent's policy (docs/architecture.md §4, ADR 0008, 0016). Anything unknown falls on the
safe side: a tool is a write, needs confirmation, may be destructive and is not idempotent unless a trusted server
says otherwise.

| server | annotations | kind | destructive | idempotent |
|---|---|---|---|---|
| untrusted | (ignored) | write | yes | no |
| trusted | readOnlyHint=true | read | no | yes |
| trusted | readOnlyHint false or missing | write | destructiveHint, default yes | idempotentHint, default no (*) |

(*) yes whatever the hint when the server's config says it honours idempotency keys (`idempotency_keys: true`).

`idempotent` means: a call repeated with the same idempotency key has no further effect, so the runtime may make it
again (a write a crash left started; a call cut off by its server's outage, ADR 0016).

Then the agent's policy: a name matching `always_confirm` is a write that always needs
confirmation. A read runs at once. A write needs confirmation, except in autonomous mode when
`auto_approve` names it: exactly, or by a pattern if the write is not destructive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase

from services.runtime.tools.config import Trust


class ToolKind(StrEnum):
    """What a tool does to the world: `read` runs at once, `write` changes something."""

    READ = "read"
    WRITE = "write"


class RunMode(StrEnum):
    """Whether writes wait for a person (interactive) or may follow the auto-approve list (autonomous)."""

    INTERACTIVE = "interactive"
    AUTONOMOUS = "autonomous"


class Reason(StrEnum):
    """Why a tool was classified the way it was; stable codes for events and audit."""

    READ_ONLY = "read_only"
    ALWAYS_CONFIRM = "always_confirm"
    AUTO_APPROVED = "auto_approved"
    UNTRUSTED_SERVER = "untrusted_server"
    WRITE = "write"


@dataclass(frozen=True)
class ToolHints:
    """The behaviour hints a tool declares (MCP `ToolAnnotations`); None means not given."""

    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None


@dataclass(frozen=True)
class AgentPolicy:
    """An agent's approval policy (steward.store.v1.ApprovalPolicy with the run's mode resolved).

    Entries are qualified tool names ("notes.create_note") or fnmatch patterns ("notes.*").
    """

    mode: RunMode = RunMode.INTERACTIVE
    auto_approve: tuple[str, ...] = ()
    always_confirm: tuple[str, ...] = ()


@dataclass(frozen=True)
class Classification:
    kind: ToolKind
    needs_confirmation: bool
    destructive: bool
    idempotent: bool
    """True when repeating a call with the same idempotency key has no further effect (crash retries)."""
    reason: Reason


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether a qualified tool name matches any of the names or fnmatch patterns (case-sensitive)."""
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def classify(
    name: str, hints: ToolHints | None, trust: Trust, policy: AgentPolicy, *, honours_keys: bool = False
) -> Classification:
    """Classify the tool `name` (qualified) for one agent. Pure; see the module docstring for the table.
    `honours_keys`: the server's config says it applies a write once per idempotency key (believed when trusted)."""
    hints = hints or ToolHints()
    if trust is Trust.TRUSTED and hints.read_only is True:
        kind, destructive, idempotent = ToolKind.READ, False, True
    elif trust is Trust.TRUSTED:
        idempotent = hints.idempotent is True or honours_keys
        kind, destructive = ToolKind.WRITE, hints.destructive is not False
    else:
        kind, destructive, idempotent = ToolKind.WRITE, True, False

    if matches(name, policy.always_confirm):
        return Classification(ToolKind.WRITE, True, destructive, idempotent, Reason.ALWAYS_CONFIRM)
    if kind is ToolKind.READ:
        return Classification(kind, False, destructive, idempotent, Reason.READ_ONLY)
    if policy.mode is RunMode.AUTONOMOUS and (
        name in policy.auto_approve or (not destructive and matches(name, policy.auto_approve))
    ):
        return Classification(kind, False, destructive, idempotent, Reason.AUTO_APPROVED)
    reason = Reason.UNTRUSTED_SERVER if trust is Trust.UNTRUSTED else Reason.WRITE
    return Classification(kind, True, destructive, idempotent, reason)
