"""The MCP tools that act: chat (run an agent) and decide_confirmation (approve or reject a proposed write).

chat starts a run, in a new conversation (created with the run by the one runtime call, so a run that cannot
be created leaves no conversation behind) or the given one, and answers with what the agent said when the run
ends, or, when the run pauses for a person's confirmation, with the pending confirmation: its id, the tool,
its arguments and preview, and how to decide it. When the client asked for progress, the first notification
names the run and its conversation (a client that stops waiting can still find the run with get_run), and
text deltas and tool calls follow as the run goes (`run_outcomes.follow`). An optional `request_id` makes a
retried chat answer from the run the first attempt started instead of starting another.

decide_confirmation records the decision (surface MCP, decided by the caller) and then answers with the rest
of the run, read from the log after that decision, up to its next pause or its end.
"""

from __future__ import annotations

import json
from typing import Literal

import mcp_types as types
from pydantic import Field

from gateway import run_log
from gateway.mcp.read_tools import MAX_ID, find_agent
from gateway.mcp.run_outcomes import (
    confirmation_data,
    follow,
    notice,
    outcome_answer,
    pending_confirmations,
    read_run,
    run_data,
    started,
)
from gateway.mcp.tooling import Answer, Arguments, Call, ToolDef, ToolError
from steward.agents import DEFAULT_AGENT_NAME
from steward.common.v1 import content_pb2
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb

MAX_MESSAGE = 100_000
MAX_REASON = 2_000
TITLE_LENGTH = 80
REQUEST_ID_PREFIX = "mcp:"  # MCP's idempotency keys never meet the HTTP API's Idempotency-Key values
MAX_REQUEST_ID = 128 - len(REQUEST_ID_PREFIX)  # the store's limit on request ids


class ChatArguments(Arguments):
    message: str = Field(min_length=1, max_length=MAX_MESSAGE, description="What to say to the agent.")
    agent: str = Field(
        "",
        max_length=200,
        description="The agent's name or id (see list_agents). Empty: the conversation's agent, or the built-in "
        f"default agent `{DEFAULT_AGENT_NAME}` in a new conversation. The default agent cannot continue a conversation "
        "of another agent.",
    )
    conversation_id: str = Field(
        "", max_length=MAX_ID, description="Continue this conversation (chat answers with its id); empty: a new one."
    )
    request_id: str = Field(
        "",
        max_length=MAX_REQUEST_ID,
        pattern=r"^[\x21-\x7e]*$",
        description="An idempotency key of yours (printable ASCII, no spaces): a retried chat with the same key "
        "answers from the run the first call started, and starts no second run.",
    )


async def _refuse_default_agent_in(call: Call, conversation_id: str) -> None:
    """The default agent, asked for by name, in a conversation of another agent: refused. (A run records its
    conversation's agent when it names none, and a run resumed later would run that agent instead.)"""
    reply = await call.clients.conversations.GetConversation(
        store_pb.GetConversationRequest(id=conversation_id), timeout=call.timeout
    )
    if reply.conversation.agent_id:
        raise ToolError(
            "INVALID_ARGUMENT",
            f"conversation {conversation_id!r} belongs to agent {reply.conversation.agent_id!r}; the default agent "
            f"`{DEFAULT_AGENT_NAME}` cannot continue it: leave `agent` empty to continue with that agent, or leave "
            "`conversation_id` empty to start a new conversation",
            {"field": "agent"},
        )


def _run_request(args: ChatArguments, agent_id: str) -> runtime_pb.CreateRunRequest:
    request = runtime_pb.CreateRunRequest(
        input=[content_pb2.ContentBlock(text=content_pb2.TextBlock(text=args.message))], agent_id=agent_id
    )
    if args.request_id:
        request.request_id = REQUEST_ID_PREFIX + args.request_id
    if args.conversation_id:
        request.conversation_id = args.conversation_id
    else:
        request.new_conversation.title = (
            args.message.strip().splitlines()[0][:TITLE_LENGTH] if args.message.strip() else "MCP chat"
        )
    return request


async def chat(call: Call, args: ChatArguments) -> Answer:
    agent = await find_agent(call, args.agent) if args.agent else None
    if args.agent and agent is None and args.conversation_id:
        await _refuse_default_agent_in(call, args.conversation_id)
    request = _run_request(args, agent.id if agent is not None else "")
    run = (await call.clients.runtime.CreateRun(request, timeout=call.timeout)).run
    await call.progress(started(run))
    return outcome_answer(await follow(call, run, run_log.from_start))


class DecideArguments(Arguments):
    confirmation_id: str = Field(min_length=1, max_length=MAX_ID, description="The confirmation to decide.")
    outcome: Literal["approve", "reject"] = Field(description="approve lets the write happen; reject refuses it.")
    reason: str = Field("", max_length=MAX_REASON, description="Why, in a few words; the agent is told on a reject.")
    expected_arguments_hash: str = Field(
        "",
        max_length=64,
        description="The arguments_hash you were shown: the decision is refused if the arguments changed since.",
    )
    wait_for_run: bool = Field(
        True, description="Answer with the rest of the run (to its next pause or end); false: answer at once."
    )


async def decide_confirmation(call: Call, args: DecideArguments) -> Answer:
    decision: dict[str, str] = {"outcome": args.outcome}
    if args.reason:
        decision["reason"] = args.reason
    reply = await call.clients.confirm.DecideConfirmation(
        confirm_pb.DecideConfirmationRequest(
            confirmation_id=args.confirmation_id,
            decision_json=json.dumps(decision, ensure_ascii=False),
            expected_arguments_hash=args.expected_arguments_hash,
            surface=confirmation_pb2.SURFACE_MCP,
        ),
        timeout=call.timeout,
    )
    confirmation = reply.confirmation
    decided = confirmation_data(confirmation)
    others = [c for c in await pending_confirmations(call, confirmation.run_id) if c.id != confirmation.id]
    run = await read_run(call, confirmation.run_id)
    if not args.wait_for_run or others:
        # With other writes of the run still undecided, the run waits for them too: say so now, not after a wait.
        still = [confirmation_data(c) for c in others]
        data = {"confirmation": decided, **run_data(run), "pending_confirmations": still}
        return Answer(
            data, f"Recorded: {args.outcome} on confirmation `{confirmation.id}`.\n\n{notice(others)}".strip()
        )
    if run.state == run_pb2.RUN_STATE_PAUSED:
        # The decision was just recorded: the run is about to move on, so read its log as it grows.
        moving = run_pb2.Run()
        moving.CopyFrom(run)
        moving.state = run_pb2.RUN_STATE_RUNNING
        run = moving
    outcome = await follow(call, run, run_log.after_decisions(frozenset({confirmation.id})))
    return outcome_answer(outcome, confirmation=decided)


TOOLS = [
    ToolDef(
        name="chat",
        scope="runs:write",
        title="Chat with an agent",
        description=(
            "Send a message to one of your Steward agents and get its answer. The agent runs on the server and may "
            "call tools; when it wants to write something, the run pauses and the answer is the pending "
            "confirmation (id, tool, arguments, preview): ask the person, then call decide_confirmation. Answers "
            "with run_id and conversation_id; pass conversation_id again to continue the conversation. A run "
            "still going when the wait ends goes on: get_run reads its answer later. Pass request_id to retry "
            "safely."
        ),
        arguments=ChatArguments,
        annotations=types.ToolAnnotations(
            title="Chat with an agent",
            read_only_hint=False,
            destructive_hint=False,  # it adds a conversation, messages and a run; writes wait for a decision
            idempotent_hint=False,  # without request_id, each call starts a run
            open_world_hint=True,  # the agent calls a model and may call outside tools
        ),
        run=chat,
    ),
    ToolDef(
        name="decide_confirmation",
        scope="confirmations:decide",
        title="Decide a confirmation",
        description=(
            "Approve or reject a write an agent proposed (see list_pending_confirmations, or chat's answer). Only "
            "call it with the person's decision. Answers with the rest of the run after the decision."
        ),
        arguments=DecideArguments,
        annotations=types.ToolAnnotations(
            title="Decide a confirmation",
            read_only_hint=False,
            destructive_hint=True,  # an approval lets the proposed write happen
            idempotent_hint=True,  # the same decision again changes nothing; a different one is refused
            open_world_hint=True,
        ),
        run=decide_confirmation,
    ),
]
