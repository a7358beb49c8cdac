"""The MCP tools that act: chat (run an agent) and decide_confirmation (approve or reject a proposed write).

chat starts a run in a new conversation (or the given one) and answers with what the agent said when the
run ends, or, when the run pauses for a person's confirmation, with the pending confirmation: its id, the
tool, its arguments and preview, and how to decide it. decide_confirmation records the decision (surface
MCP, decided by the caller) and then answers with the rest of the run, read from the log after that
decision, up to its next pause or its end. Text deltas are sent as progress notifications while the run
goes, when the client asked for progress.
"""

from __future__ import annotations

import json
from typing import Literal

import mcp_types as types
from pydantic import Field

from gateway.mcp.calls import Answer, Arguments, Call, ToolDef
from gateway.mcp.runs import confirmation_data, follow, notice, outcome_answer, pending_confirmations, run_data
from gateway.mcp.tools import MAX_ID, find_agent
from gateway.openai_api import events
from steward.common.v1 import content_pb2
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb

MAX_MESSAGE = 100_000
MAX_REASON = 2_000
TITLE_LENGTH = 80


class ChatArguments(Arguments):
    message: str = Field(min_length=1, max_length=MAX_MESSAGE, description="What to say to the agent.")
    agent: str = Field(
        "",
        max_length=200,
        description="The agent's name or id (see list_agents). Empty: the conversation's agent, or the built-in "
        "default agent `steward` in a new conversation.",
    )
    conversation_id: str = Field(
        "", max_length=MAX_ID, description="Continue this conversation (chat answers with its id); empty: a new one."
    )


async def chat(call: Call, args: ChatArguments) -> Answer:
    clients = call.clients
    agent = await find_agent(clients, args.agent) if args.agent else None
    agent_id = agent.id if agent is not None else ""
    conversation_id = args.conversation_id
    if not conversation_id:
        title = args.message.strip().splitlines()[0][:TITLE_LENGTH] if args.message.strip() else "MCP chat"
        reply = await clients.conversations.CreateConversation(
            store_pb.CreateConversationRequest(title=title, agent_id=agent_id)
        )
        conversation_id = reply.conversation.id
    text = content_pb2.ContentBlock(text=content_pb2.TextBlock(text=args.message))
    run = (
        await clients.runtime.CreateRun(
            runtime_pb.CreateRunRequest(conversation_id=conversation_id, input=[text], agent_id=agent_id)
        )
    ).run
    return outcome_answer(await follow(call, run, events.from_start))


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
        )
    )
    confirmation = reply.confirmation
    decided = confirmation_data(confirmation)
    others = [c for c in await pending_confirmations(call.clients, confirmation.run_id) if c.id != confirmation.id]
    if not args.wait_for_run or others:
        # With other writes of the run still undecided, the run waits for them too: say so now, not after a wait.
        run = (await call.clients.runs.GetRun(store_pb.GetRunRequest(id=confirmation.run_id))).run
        still = [confirmation_data(c) for c in others]
        data = {"confirmation": decided, **run_data(run), "pending_confirmations": still}
        return Answer(
            data, f"Recorded: {args.outcome} on confirmation `{confirmation.id}`.\n\n{notice(others)}".strip()
        )
    run = (await call.clients.runs.GetRun(store_pb.GetRunRequest(id=confirmation.run_id))).run
    if run.state == run_pb2.RUN_STATE_PAUSED:
        # The decision was just recorded: the run is about to move on, so read its log as it grows.
        moving = run_pb2.Run()
        moving.CopyFrom(run)
        moving.state = run_pb2.RUN_STATE_RUNNING
        run = moving
    outcome = await follow(call, run, events.after_decisions(frozenset({confirmation.id})))
    return outcome_answer(outcome, confirmation=decided)


TOOLS = [
    ToolDef(
        name="chat",
        title="Chat with an agent",
        description=(
            "Send a message to one of your Steward agents and get its answer. The agent runs on the server and may "
            "call tools; when it wants to write something, the run pauses and the answer is the pending "
            "confirmation (id, tool, arguments, preview): ask the person, then call decide_confirmation. Answers "
            "with run_id and conversation_id; pass conversation_id again to continue the conversation."
        ),
        arguments=ChatArguments,
        annotations=types.ToolAnnotations(
            title="Chat with an agent",
            read_only_hint=False,
            destructive_hint=False,  # it adds a conversation, messages and a run; writes wait for a decision
            idempotent_hint=False,
            open_world_hint=True,  # the agent calls a model and may call outside tools
        ),
        run=chat,
    ),
    ToolDef(
        name="decide_confirmation",
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
