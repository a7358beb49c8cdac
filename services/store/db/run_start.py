"""A run's creation as one unit of work on the runner: SQLAlchemy Core statements built once.

Creating a run is on every run's first-token path, so it avoids the ORM (and, on SQLite, aiosqlite's thread hop
per statement): the whole transaction is one hop (runner.py). It finds an earlier run with the same run id or
request id (a duplicate returns it, with its input message), checks the agent is the owner's, creates the
conversation when asked (with the messages it starts with) or checks the owner's, appends the input message,
and inserts the run, claimed for a holder when asked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import grpc
from sqlalchemy import Connection, bindparam, insert, or_, select

from services.store.db import convert
from services.store.db.agents import agent_message
from services.store.db.conversations import append_messages
from services.store.db.models import AgentRow, ConversationRow, MessageRow, RunRow
from steward import timeutil
from steward.common.v1 import content_pb2, limits_pb2
from steward.errors import StewardError, not_found
from steward.store.v1 import agent_pb2, conversation_pb2, run_pb2


@dataclass(frozen=True)
class NewRun:
    run_id: str
    conversation_id: str
    agent_id: str
    mode: agent_pb2.RunMode.ValueType
    limits: limits_pb2.RunLimits
    request_id: str | None
    input_message: content_pb2.ChatMessage | None
    client_tools: list[content_pb2.ToolSpec] | None = None
    # A conversation to create for the run (conversation_id is then empty).
    new_conversation: conversation_pb2.NewConversation | None = None
    # Claim the new run for this holder, for this long, in the same transaction.
    claim: tuple[str, timedelta] | None = None
    # The agent by name, when agent_id is empty.
    agent_name: str = ""


@dataclass(frozen=True)
class Started:
    """What creating a run answers: the run, whether it existed, its input message, and its agent (a new run's
    stored agent; None for the default agent or a run that existed)."""

    run: run_pb2.Run
    existed: bool
    input_message: conversation_pb2.Message | None
    agent: agent_pb2.Agent | None = None


_EARLIER = select(RunRow.__table__).where(
    or_(
        RunRow.id == bindparam("run_id"),
        (RunRow.owner_id == bindparam("owner_id")) & (RunRow.request_id == bindparam("request_id")),
    )
)
_EARLIER_INPUT = (
    select(MessageRow.__table__)
    .where(MessageRow.run_id == bindparam("run_id"), MessageRow.role == content_pb2.ROLE_USER)
    .order_by(MessageRow.seq)
    .limit(1)
)
_AGENT_BY_ID = select(AgentRow.__table__).where(
    AgentRow.id == bindparam("key"), AgentRow.owner_id == bindparam("owner_id")
)
_AGENT_BY_NAME = select(AgentRow.__table__).where(
    AgentRow.name == bindparam("key"), AgentRow.owner_id == bindparam("owner_id")
)
_CONVERSATION_AGENT = select(ConversationRow.agent_id).where(
    ConversationRow.id == bindparam("conversation_id"), ConversationRow.owner_id == bindparam("owner_id")
)
_INSERT_CONVERSATION = insert(ConversationRow)
_INSERT_RUN = insert(RunRow)


def _conflict() -> StewardError:
    return StewardError(grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_CONFLICT", "run id or request_id already used")


def _agent(connection: Connection, owner_id: str, agent_id: str, name: str) -> agent_pb2.Agent | None:
    """The owner's agent by id, else by name; None for neither; AGENT_NOT_FOUND for one the owner lacks."""
    if not agent_id and not name:
        return None
    statement, key = (_AGENT_BY_ID, agent_id) if agent_id else (_AGENT_BY_NAME, name)
    row = connection.execute(statement, {"key": key, "owner_id": owner_id}).first()
    if row is None:
        raise not_found("AGENT_NOT_FOUND", f"agent {agent_id} not found" if agent_id else "no agent has that name")
    return agent_message(row)


def _earlier(connection: Connection, owner_id: str, new: NewRun) -> Started | None:
    """The run an earlier create made for this run id or request id, if any."""
    params = {"run_id": new.run_id, "owner_id": owner_id, "request_id": new.request_id}
    rows = connection.execute(_EARLIER, params).all()
    if not rows:
        return None
    row = rows[0]
    same_conversation = new.new_conversation is not None or row.conversation_id == new.conversation_id
    if len(rows) > 1 or row.owner_id != owner_id or not same_conversation:
        raise _conflict()
    first = connection.execute(_EARLIER_INPUT, {"run_id": row.id}).first()
    return Started(convert.run_message(row), True, convert.message_message(first) if first is not None else None)


def _conversation(
    connection: Connection, owner_id: str, new: NewRun, agent_id: str, created: datetime
) -> tuple[str, str]:
    """The run's conversation (created now when asked, with the messages it starts with, answered by `agent_id`):
    its id and agent id."""
    if new.new_conversation is None:
        params = {"conversation_id": new.conversation_id, "owner_id": owner_id}
        answering: str | None = connection.execute(_CONVERSATION_AGENT, params).scalar()
        if answering is None:
            raise not_found("CONVERSATION_NOT_FOUND", f"conversation {new.conversation_id} not found")
        return new.conversation_id, answering
    conversation_id = str(uuid.uuid4())
    values = {
        "id": conversation_id,
        "owner_id": owner_id,
        "title": new.new_conversation.title,
        "agent_id": agent_id,
        "request_id": None,
        "last_message_seq": 0,
        "create_time": created,
        "update_time": created,
    }
    connection.execute(_INSERT_CONVERSATION, values)
    append_messages(connection, owner_id, conversation_id, list(new.new_conversation.messages), "", created)
    return conversation_id, agent_id


def create_run(connection: Connection, owner_id: str, new: NewRun) -> Started:
    """Create the run once (see the module docstring)."""
    earlier = _earlier(connection, owner_id, new)
    if earlier is not None:
        return earlier
    created = timeutil.now()
    agent = _agent(connection, owner_id, new.agent_id, new.agent_name)
    conversation_id, conversation_agent = _conversation(connection, owner_id, new, agent.id if agent else "", created)
    if agent is None and conversation_agent:  # the conversation's agent answers
        agent = _agent(connection, owner_id, conversation_agent, "")
    values: dict[str, Any] = {
        "id": new.run_id,
        "owner_id": owner_id,
        "conversation_id": conversation_id,
        "agent_id": agent.id if agent else "",
        "state": run_pb2.RUN_STATE_QUEUED,
        "pause_reason": run_pb2.PAUSE_REASON_UNSPECIFIED,
        "incomplete_reason": run_pb2.INCOMPLETE_REASON_UNSPECIFIED,
        "error": b"",
        "mode": new.mode,
        "limits": new.limits.SerializeToString(),
        "step_count": 0,
        "usage": b"",
        "lease_epoch": 0,
        "lease_holder": "",
        "lease_expire_time": None,
        "pause_expire_time": None,
        "last_event_seq": 0,
        "compacted_through_seq": 0,
        "request_id": new.request_id,
        "cancel_requested": False,
        "client_tools": run_pb2.Run(client_tools=new.client_tools).SerializeToString() if new.client_tools else None,
        "running_ms": 0,
        "agent_version": 0,
        "stop_reason": run_pb2.STOP_REASON_UNSPECIFIED,
        "create_time": created,
        "update_time": created,
        "end_time": None,
    }
    if new.claim is not None:  # as a claim would take it (leases._taken)
        holder, ttl = new.claim
        values |= {
            "lease_epoch": 1,
            "lease_holder": holder,
            "lease_expire_time": created + ttl,
            "state": run_pb2.RUN_STATE_RUNNING,
        }
    connection.execute(_INSERT_RUN, values)
    message = None
    if new.input_message is not None:
        (message,) = append_messages(connection, owner_id, conversation_id, [new.input_message], new.run_id, created)
    return Started(convert.run_from_columns(values), False, message, agent)
