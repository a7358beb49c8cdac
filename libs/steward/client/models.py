"""Typed values the client returns and takes: the JSON shapes of `gateway/openapi.yaml` as dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

__all__ = [
    "END_EVENT_TYPES",
    "Agent",
    "AppliedAgent",
    "ClientTool",
    "Confirmation",
    "ContentBlock",
    "Conversation",
    "Decision",
    "Limits",
    "Message",
    "Page",
    "Preview",
    "Run",
    "RunError",
    "RunEvent",
    "RunStarted",
    "Tool",
    "ToolCallDelta",
    "ToolCatalog",
    "ToolResult",
    "ToolServer",
    "Usage",
]

T = TypeVar("T")
Json = dict[str, Any]

# The events after which a run's log never grows again (the gateway ends the stream after one of them).
END_EVENT_TYPES = frozenset({"run_completed", "run_failed", "run_cancelled", "run_incomplete", "run_expired"})
_ENDED_STATES = frozenset({"completed", "failed", "cancelled", "incomplete", "expired"})


def _time(value: object) -> datetime | None:
    """RFC 3339 text (the gateway's `Time`, null when unset) as an aware datetime."""
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; `next_page_token` is None on the last page."""

    items: list[T]
    next_page_token: str | None


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    agent_id: str | None
    create_time: datetime | None
    update_time: datetime | None

    @classmethod
    def from_json(cls, body: Json) -> Conversation:
        return cls(
            body["id"],
            body["title"],
            body.get("agent_id"),
            _time(body.get("create_time")),
            _time(body.get("update_time")),
        )


@dataclass(frozen=True)
class ContentBlock:
    """One block of a message: `text`/`reasoning` carry `text`; `tool_call` carries `id`, `name`, `arguments`;
    `tool_result` carries `tool_call_id`, `content`, `is_error`. Fields a kind does not have are None."""

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    arguments: Any = None
    tool_call_id: str | None = None
    content: str | None = None
    is_error: bool | None = None

    @classmethod
    def from_json(cls, body: Json) -> ContentBlock:
        return cls(
            type=body["type"],
            text=body.get("text"),
            id=body.get("id"),
            name=body.get("name"),
            arguments=body.get("arguments"),
            tool_call_id=body.get("tool_call_id"),
            content=body.get("content"),
            is_error=body.get("is_error"),
        )


@dataclass(frozen=True)
class Message:
    id: str
    conversation_id: str
    seq: int
    role: str | None
    content: list[ContentBlock]
    run_id: str | None
    create_time: datetime | None

    @property
    def text(self) -> str:
        """The message's text blocks, joined."""
        return "".join(block.text or "" for block in self.content if block.type == "text")

    @classmethod
    def from_json(cls, body: Json) -> Message:
        blocks = [ContentBlock.from_json(block) for block in body["content"]]
        return cls(
            body["id"],
            body["conversation_id"],
            body["seq"],
            body.get("role"),
            blocks,
            body.get("run_id"),
            _time(body.get("create_time")),
        )


@dataclass(frozen=True)
class Limits:
    """A run's limits; None takes the next default (the agent's, then the deployment's). Also what a create takes."""

    max_steps: int | None = None
    max_tokens: int | None = None
    max_cost_micros: int | None = None
    timeout_seconds: float | None = None
    tool_timeout_seconds: float | None = None
    first_token_timeout_seconds: float | None = None
    pause_timeout_seconds: float | None = None  # how long a pause may last before the run ends expired

    @classmethod
    def from_json(cls, body: Json) -> Limits:
        return cls(**{name: body.get(name) for name in cls.__dataclass_fields__})

    def to_json(self) -> Json:
        return {name: value for name, value in self.__dict__.items() if value is not None}


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    cost_micros: int = 0  # millionths of a US dollar; only the priced tokens when cost_unknown
    cost_unknown: bool = False  # some tokens were on a model with no price (docs/budgets.md)

    @classmethod
    def from_json(cls, body: Json) -> Usage:
        counts = {name: int(body.get(name) or 0) for name in cls.__dataclass_fields__ if name != "cost_unknown"}
        return cls(**counts, cost_unknown=bool(body.get("cost_unknown")))


@dataclass(frozen=True)
class RunError:
    reason: str
    message: str
    transient: bool


@dataclass(frozen=True)
class ClientTool:
    """A tool the caller runs itself: the run pauses with `client_tool_requested` until `submit_tool_results`."""

    name: str
    description: str
    input_schema: Json

    def to_json(self) -> Json:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


@dataclass(frozen=True)
class ToolResult:
    """The answer to one client tool call (its id is in the `client_tool_requested` event's data)."""

    tool_call_id: str
    content: str
    is_error: bool = False

    def to_json(self) -> Json:
        return {"tool_call_id": self.tool_call_id, "content": self.content, "is_error": self.is_error}


@dataclass(frozen=True)
class Run:
    id: str
    conversation_id: str
    agent_id: str | None
    state: str | None
    pause_reason: str | None
    incomplete_reason: str | None
    error: RunError | None
    mode: str | None
    limits: Limits
    client_tools: list[ClientTool]
    step_count: int
    usage: Usage
    running_seconds: float
    stop_reason: str | None  # why the model stopped in the last step: "end_turn", "max_tokens", ... (None: none yet)
    last_event_seq: int
    cancel_requested: bool
    create_time: datetime | None
    update_time: datetime | None
    end_time: datetime | None
    agent_version: int | None = None  # the agent version the run started with; None before, or the default agent
    pause_expire_time: datetime | None = None  # when a paused run ends expired unless it resumes before

    @property
    def ended(self) -> bool:
        """True once the run is in a final state (its event log is complete)."""
        return self.state in _ENDED_STATES

    @classmethod
    def from_json(cls, body: Json) -> Run:
        error = body.get("error")
        return cls(
            id=body["id"],
            conversation_id=body["conversation_id"],
            agent_id=body.get("agent_id"),
            state=body.get("state"),
            pause_reason=body.get("pause_reason"),
            incomplete_reason=body.get("incomplete_reason"),
            error=RunError(error["reason"], error["message"], bool(error["transient"])) if error else None,
            mode=body.get("mode"),
            limits=Limits.from_json(body.get("limits") or {}),
            client_tools=[ClientTool(t["name"], t["description"], t["input_schema"]) for t in body["client_tools"]],
            step_count=body["step_count"],
            usage=Usage.from_json(body.get("usage") or {}),
            running_seconds=float(body.get("running_seconds") or 0),
            stop_reason=body.get("stop_reason"),
            last_event_seq=body["last_event_seq"],
            cancel_requested=bool(body.get("cancel_requested")),
            create_time=_time(body.get("create_time")),
            update_time=_time(body.get("update_time")),
            end_time=_time(body.get("end_time")),
            agent_version=body.get("agent_version"),
            pause_expire_time=_time(body.get("pause_expire_time")),
        )


@dataclass(frozen=True)
class RunStarted:
    """A created run; `existed` is True when the create was a duplicate (same idempotency key or run id)."""

    run: Run
    existed: bool
    events_url: str

    @classmethod
    def from_json(cls, body: Json) -> RunStarted:
        return cls(Run.from_json(body["run"]), bool(body["existed"]), body["events_url"])


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call's arguments as the model writes them (a `text_delta` event's `tool_call`). The pieces
    of one call, in order, join to the arguments its `tool_call_started` event then carries whole."""

    tool_call_id: str
    tool_name: str
    arguments_json_delta: str

    @classmethod
    def from_json(cls, body: Json) -> ToolCallDelta:
        return cls(body["tool_call_id"], body["tool_name"], body["arguments_json_delta"])


@dataclass(frozen=True)
class RunEvent:
    """One event of a run's log; `seq` is its place in the log (the SSE `id:`)."""

    seq: int
    run_id: str
    step: int
    type: str
    time: datetime | None
    data: Json = field(default_factory=dict)

    @property
    def is_end(self) -> bool:
        """True for the run's last event (`run_completed`, `run_failed`, ...)."""
        return self.type in END_EVENT_TYPES

    @property
    def text(self) -> str:
        """The model text a `text_delta` adds ("" for any other event, and for a piece of a tool call)."""
        return str(self.data.get("text") or "") if self.type == "text_delta" else ""

    @property
    def tool_call(self) -> ToolCallDelta | None:
        """The piece of a tool call's arguments a `text_delta` carries; None for text and other events."""
        body = self.data.get("tool_call") if self.type == "text_delta" else None
        return ToolCallDelta.from_json(body) if isinstance(body, dict) else None

    @property
    def stop_reason(self) -> str | None:
        """Why the model stopped, on `usage` (the step's), `run_completed` and `run_incomplete`; None otherwise."""
        value = self.data.get("stop_reason")
        return value if isinstance(value, str) else None

    @classmethod
    def from_json(cls, body: Json) -> RunEvent:
        return cls(body["seq"], body["run_id"], body["step"], body["type"], _time(body.get("time")), body["data"])


@dataclass(frozen=True)
class Preview:
    kind: str | None
    title: str
    content: str


@dataclass(frozen=True)
class Decision:
    outcome: str | None
    reason: str | None
    edited_arguments: Any
    decided_by: str | None
    surface: str | None
    decide_time: datetime | None


@dataclass(frozen=True)
class Confirmation:
    """A write waiting for (or given) a person's decision."""

    id: str
    run_id: str
    conversation_id: str
    tool_call_id: str
    tool_name: str
    arguments: Any
    arguments_hash: str
    preview: Preview
    decision_schema: Any
    kind: str | None
    related_confirmation_id: str | None
    state: str | None
    decision: Decision | None
    create_time: datetime | None
    expire_time: datetime | None
    acknowledge_time: datetime | None

    @classmethod
    def from_json(cls, body: Json) -> Confirmation:
        preview, decided = body["preview"], body.get("decision")
        decision = None
        if decided:
            decision = Decision(
                decided.get("outcome"),
                decided.get("reason"),
                decided.get("edited_arguments"),
                decided.get("decided_by"),
                decided.get("surface"),
                _time(decided.get("decide_time")),
            )
        return cls(
            id=body["id"],
            run_id=body["run_id"],
            conversation_id=body["conversation_id"],
            tool_call_id=body["tool_call_id"],
            tool_name=body["tool_name"],
            arguments=body.get("arguments"),
            arguments_hash=body["arguments_hash"],
            preview=Preview(preview.get("kind"), preview.get("title", ""), preview.get("content", "")),
            decision_schema=body.get("decision_schema"),
            kind=body.get("kind"),
            related_confirmation_id=body.get("related_confirmation_id"),
            state=body.get("state"),
            decision=decision,
            create_time=_time(body.get("create_time")),
            expire_time=_time(body.get("expire_time")),
            acknowledge_time=_time(body.get("acknowledge_time")),
        )


@dataclass(frozen=True)
class Agent:
    """An agent; `json` is the whole agent JSON (what an agent file holds, plus `id`, `version` and the times)."""

    id: str
    name: str
    model_route: str
    version: int
    json: Json = field(repr=False)

    @classmethod
    def from_json(cls, body: Json) -> Agent:
        return cls(body["id"], body["name"], body["model_route"], int(body["version"]), dict(body))


@dataclass(frozen=True)
class AppliedAgent:
    """What applying one agent document did: `result` is "created", "updated" or "unchanged"."""

    file: str
    document: int
    result: str
    agent: Agent

    @classmethod
    def from_json(cls, body: Json) -> AppliedAgent:
        return cls(body["file"], int(body["document"]), body["result"], Agent.from_json(body["agent"]))


@dataclass(frozen=True)
class Tool:
    """A tool as an agent (or the catalogue) sees it: `kind` read/write/client, and why (`reason`, `explanation`)."""

    name: str
    description: str
    input_schema: Json
    kind: str
    needs_confirmation: bool
    destructive: bool
    idempotent: bool
    reason: str | None
    explanation: str
    server: str | None

    @classmethod
    def from_json(cls, body: Json) -> Tool:
        return cls(
            body["name"],
            body["description"],
            body.get("input_schema") or {},
            body["kind"],
            bool(body["needs_confirmation"]),
            bool(body["destructive"]),
            bool(body["idempotent"]),
            body.get("reason"),
            body.get("explanation") or "",
            body.get("server"),
        )


@dataclass(frozen=True)
class ToolServer:
    """A configured MCP server: `status` is "connected" or "unavailable"."""

    name: str
    trusted: bool
    status: str
    tool_count: int


@dataclass(frozen=True)
class ToolCatalog:
    """Every tool the deployment knows, and its MCP servers."""

    tools: list[Tool]
    servers: list[ToolServer]

    @classmethod
    def from_json(cls, body: Json) -> ToolCatalog:
        servers = [
            ToolServer(server["name"], bool(server["trusted"]), server["status"], int(server["tool_count"]))
            for server in body["servers"]
        ]
        return cls([Tool.from_json(tool) for tool in body["tools"]], servers)
