"""A run's cost limit and the owner's budgets, end to end: the real store, provider, confirm service, runtime and
notes MCP server, with the model served by the wire-faithful fake OpenAI-compatible upstream on a priced route.
The tests at the end go through the real gateway too: a user budget of $0.01 refuses a run on a model the price
table does not know (MODEL_UNPRICED: the run fails) and one on a model of the shipped table whose worst case does
not fit (incomplete, budget), neither reaching the upstream; a caching agent's second run reports the tokens it
read from the fake Anthropic's prompt cache, and an agent with caching off sends no hint and reads nothing.

Input tokens are free and output tokens cost 1 micro-dollar each, so a step's worst case is exactly its
max_tokens + 1 micro-dollars (the provider's estimate of the input does not matter), and what a step actually
costs is the output tokens the fake reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.field_mask_pb2 import FieldMask

from fakes.upstream import FakeToolCall, FakeUpstream, Reply
from gateway.app import create_app
from services.runtime.run.steps import MAX_OUTPUT_TOKENS
from steward.common.v1 import limits_pb2
from steward.errors import Reason
from steward.provider.v1 import budget_pb2
from steward.provider.v1 import provider_service_pb2 as provider_pb
from steward.provider.v1 import provider_service_pb2_grpc as provider_grpc
from steward.store.v1 import agent_pb2, run_event_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from tests.runtime.harness import Metadata, World, notes_agent, world
from tests.support.gateway_http import answer
from tests.support.grpc_helpers import principal_metadata
from tests.support.sse import read_sse
from tests.support.stack import store_user_token

ROUTE = "priced"
UPSTREAM = "fake-llm"
MODEL = f"{UPSTREAM}/fake-model"
STEP_WORST_CASE = MAX_OUTPUT_TOKENS + 1  # micro-dollars the provider reserves for one step
ANSWER_TOKENS = 40  # what the fake's final answer costs
UNPRICED_ROUTE, UNPRICED_MODEL = "unpriced", f"{UPSTREAM}/not-in-the-table"
SHIPPED_ROUTE, SHIPPED_MODEL = "shipped", "anthropic/claude-haiku-4-5"  # $1 in, $5 out per million (prices.json)
HAIKU_OUTPUT_PER_MILLION = 5.0
ONE_CENT = 10_000  # micro-dollars
Client = TestClient[Any, Any]


@dataclass
class Priced:
    world: World
    fake: FakeUpstream
    provider: provider_grpc.ProviderServiceAsyncStub

    async def as_new_user(self) -> World:
        """The world acting as a user of its own, with an agent of that user on the priced route."""
        user = principal_metadata(self.world.stack.secret, f"user-{uuid.uuid4().hex[:8]}")
        agent = notes_agent(model_route=ROUTE, prefix="priced")
        created = await self.world.agents.CreateAgent(store_pb.CreateAgentRequest(agent=agent), metadata=user)
        return dataclasses.replace(self.world, user=user, agent_id=created.agent.id)

    async def budget(
        self, user: Metadata, scope: budget_pb2.BudgetScope.ValueType, scope_id: str = ""
    ) -> budget_pb2.Budget:
        reply = await self.provider.GetBudget(
            provider_pb.GetBudgetRequest(scope=scope, scope_id=scope_id), metadata=user
        )
        return reply.budget

    def model_requests(self) -> int:
        """Model requests the fake upstream has answered so far (the tests here run one at a time)."""
        return sum(1 for request in self.fake.requests if request.path.endswith(("/chat/completions", "/messages")))


@pytest.fixture(scope="module")
async def priced(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Priced]:
    directory = tmp_path_factory.mktemp("budget")
    fake = FakeUpstream(default=Reply(text="Done.", output_tokens=ANSWER_TOKENS))
    await fake.start()
    routes = {
        "upstreams": {
            UPSTREAM: {"protocol": "openai", "base_url": fake.openai_base_url, "keyless": True},
            # The fake stands in for Anthropic itself, so that the shipped price table prices its models.
            "anthropic": {"protocol": "anthropic", "base_url": fake.anthropic_base_url, "keyless": True},
        },
        "routes": {
            ROUTE: {"description": "the fake upstream, priced", "primary": MODEL},
            UNPRICED_ROUTE: {"description": "a model the price table does not know", "primary": UNPRICED_MODEL},
            SHIPPED_ROUTE: {"description": "priced by the shipped table", "primary": SHIPPED_MODEL},
        },
    }
    (directory / "routes.json").write_text(json.dumps(routes))
    (directory / "prices.json").write_text(json.dumps({MODEL: {"input": 0.0, "output": 1.0}}))
    try:
        async with contextlib.AsyncExitStack() as exits:
            with pytest.MonkeyPatch.context() as env:  # read by the provider's settings at start-up only
                env.setenv("STEWARD_ROUTES_FILE", str(directory / "routes.json"))
                env.setenv("STEWARD_PRICES_FILE", str(directory / "prices.json"))
                running = await exits.enter_async_context(world(directory))
            channel = grpc.aio.insecure_channel(running.stack.address(running.stack.provider))
            exits.push_async_callback(channel.close)
            yield Priced(running, fake, provider_grpc.ProviderServiceStub(channel))
    finally:
        await fake.stop()


async def run_events(running: World, run_id: str) -> list[run_event_pb2.RunEvent]:
    stream = running.runs.StreamRunEvents(store_pb.StreamRunEventsRequest(run_id=run_id), metadata=running.user)
    return [item.event async for item in stream]


def kinds(events: list[run_event_pb2.RunEvent]) -> list[str]:
    return [str(event.WhichOneof("payload")) for event in events]


async def assert_ended_for_budget(running: World, run: run_pb2.Run) -> list[str]:
    """The run ended incomplete (budget), with a run_incomplete(budget) event last; the kinds of its events."""
    assert (run.state, run.incomplete_reason) == (run_pb2.RUN_STATE_INCOMPLETE, run_pb2.INCOMPLETE_REASON_BUDGET), run
    events = await run_events(running, run.id)
    assert events[-1].WhichOneof("payload") == "run_incomplete"
    assert events[-1].run_incomplete.reason == run_pb2.INCOMPLETE_REASON_BUDGET
    assert "run_completed" not in kinds(events)
    assert "run_failed" not in kinds(events)
    return kinds(events)


def list_notes_call(output_tokens: int) -> Reply:
    """A model turn that calls the notes server's read tool (named as the provider sends it upstream)."""
    return Reply(
        text="", tool_calls=[FakeToolCall("call_list", "notes__list_notes", "{}")], output_tokens=output_tokens
    )


async def test_a_run_without_a_cost_limit_is_priced_and_completes(priced: Priced) -> None:
    running = await priced.as_new_user()
    before = priced.model_requests()
    run = await running.start_run("Hello")
    ended = await running.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    assert ended.usage.cost_micros == ANSWER_TOKENS  # the route is really priced
    events = await run_events(running, run.id)
    usage = [event.usage for event in events if event.WhichOneof("payload") == "usage"]
    assert len(usage) == 1
    assert usage[0].usage.cost_micros == ANSWER_TOKENS > 0
    assert priced.model_requests() == before + 1
    assert priced.fake.requests[-1].body["max_tokens"] == MAX_OUTPUT_TOKENS  # what STEP_WORST_CASE assumes
    no_budget = await priced.budget(running.user, budget_pb2.BUDGET_SCOPE_RUN, run.id)
    assert no_budget.limit_micros == 0  # no cost limit: the runtime sets no run budget
    assert not no_budget.HasField("update_time")


async def test_a_first_step_whose_worst_case_does_not_fit_is_never_sent(priced: Priced) -> None:
    running = await priced.as_new_user()
    limit = STEP_WORST_CASE - 1
    before = priced.model_requests()
    run = await running.start_run("Hello", limits=limits_pb2.RunLimits(max_cost_micros=limit))
    ended = await running.wait(run.id)
    await assert_ended_for_budget(running, ended)
    assert ended.step_count == 0
    assert priced.model_requests() == before  # refused by the provider before any upstream call
    budget = await priced.budget(running.user, budget_pb2.BUDGET_SCOPE_RUN, run.id)
    assert (budget.limit_micros, budget.period) == (limit, budget_pb2.BUDGET_PERIOD_LIFETIME)
    assert (budget.spent_micros, budget.reserved_micros) == (0, 0)


async def test_a_limit_for_one_step_stops_the_run_before_a_second(priced: Priced) -> None:
    running = await priced.as_new_user()
    tool_step_tokens = 100
    # One step's worst case fits; after the first step spent 100, the second's worst case does not.
    limit = STEP_WORST_CASE + tool_step_tokens // 2
    priced.fake.enqueue(list_notes_call(tool_step_tokens))
    before = priced.model_requests()
    run = await running.start_run("Please list_notes", limits=limits_pb2.RunLimits(max_cost_micros=limit))
    ended = await running.wait(run.id)
    events = await assert_ended_for_budget(running, ended)
    assert ended.step_count == 1
    assert events.index("tool_call_started") < events.index("tool_call_finished") < events.index("run_incomplete")
    assert priced.model_requests() == before + 1  # the second step never reached the upstream
    assert ended.usage.cost_micros == tool_step_tokens
    budget = await priced.budget(running.user, budget_pb2.BUDGET_SCOPE_RUN, run.id)
    assert budget.spent_micros == tool_step_tokens <= limit
    assert budget.reserved_micros == 0


async def test_a_limit_for_two_steps_lets_the_run_complete(priced: Priced) -> None:
    running = await priced.as_new_user()
    tool_step_tokens = 100
    limit = tool_step_tokens + STEP_WORST_CASE  # exactly what the second step may still cost at most
    priced.fake.enqueue(list_notes_call(tool_step_tokens))
    run = await running.start_run("Please list_notes", limits=limits_pb2.RunLimits(max_cost_micros=limit))
    ended = await running.wait(run.id)
    assert ended.state == run_pb2.RUN_STATE_COMPLETED, ended
    assert ended.step_count == 2
    budget = await priced.budget(running.user, budget_pb2.BUDGET_SCOPE_RUN, run.id)
    assert budget.spent_micros == ended.usage.cost_micros == tool_step_tokens + ANSWER_TOKENS <= limit
    assert budget.reserved_micros == 0


async def test_a_user_budget_too_small_for_a_step_ends_the_run(priced: Priced) -> None:
    running = await priced.as_new_user()
    limit = STEP_WORST_CASE - 1
    await priced.provider.SetBudget(
        provider_pb.SetBudgetRequest(
            scope=budget_pb2.BUDGET_SCOPE_USER, limit_micros=limit, period=budget_pb2.BUDGET_PERIOD_MONTH
        ),
        metadata=running.user,
    )
    before = priced.model_requests()
    run = await running.start_run("Hello")  # no cost limit of its own
    ended = await running.wait(run.id)
    await assert_ended_for_budget(running, ended)
    assert priced.model_requests() == before
    user_budget = await priced.budget(running.user, budget_pb2.BUDGET_SCOPE_USER)
    assert (user_budget.limit_micros, user_budget.spent_micros, user_budget.reserved_micros) == (limit, 0, 0)


async def test_spend_from_before_the_run_had_a_cost_limit_counts(priced: Priced) -> None:
    # The run spends on its first step with no cost limit, pauses for a write, and its agent gets a limit
    # meanwhile: the resumed run's budget must leave out what it already spent.
    running = await priced.as_new_user()
    first_step_tokens = 300
    priced.fake.enqueue(
        Reply(
            text="",
            tool_calls=[FakeToolCall("call_write", "notes__create_note", json.dumps({"title": "Budget"}))],
            output_tokens=first_step_tokens,
        )
    )
    writes = len(running.applied_writes())
    run = await running.start_run("create_note Budget")
    paused = await running.wait(run.id, paused=True)
    assert paused.state == run_pb2.RUN_STATE_PAUSED, paused
    assert paused.usage.cost_micros == first_step_tokens
    # Enough for one more step's worst case on its own, not on top of what the run has spent.
    limit = STEP_WORST_CASE + first_step_tokens // 2
    await running.agents.UpdateAgent(
        store_pb.UpdateAgentRequest(
            agent=agent_pb2.Agent(id=running.agent_id, limits=limits_pb2.RunLimits(max_cost_micros=limit)),
            update_mask=FieldMask(paths=["limits"]),
        ),
        metadata=running.user,
    )
    before = priced.model_requests()
    confirmation = await running.pending_confirmation(run.id)
    await running.decide(confirmation.id, {"outcome": "approve"})
    ended = await running.wait(run.id)
    events = await assert_ended_for_budget(running, ended)
    assert "tool_call_finished" in events  # the approved write ran; the next model step was refused
    assert len(running.applied_writes()) == writes + 1
    assert priced.model_requests() == before
    assert ended.usage.cost_micros == first_step_tokens <= limit


# -- Over HTTP: budgets that bind on unpriced and shipped-table models, and prompt caching (ADR 0022) ----------------


@pytest.fixture(scope="module")
async def gateway(priced: Priced) -> AsyncIterator[Client]:
    server = TestServer(create_app(priced.world.stack.gateway_settings()), host="127.0.0.1", port=0)
    async with TestClient(server) as client:
        yield client


async def _user(priced: Priced, gateway: Client, budget_micros: int = 0) -> dict[str, str]:
    user = {"Authorization": f"Bearer {await store_user_token(priced.world.stack)}"}
    if budget_micros:
        body = {"limit_micros": budget_micros, "period": "month"}
        await answer(await gateway.put("/api/v1/budget", json=body, headers=user), 200)
    return user


async def _agent(gateway: Client, user: dict[str, str], route: str, **fields: Any) -> str:
    body = {"name": f"budget-{uuid.uuid4().hex[:6]}", "system_prompt": f"You help ({uuid.uuid4()}).", **fields}
    created = await answer(await gateway.post("/api/v1/agents", json=body | {"model_route": route}, headers=user), 201)
    return str(created["id"])


async def _run(gateway: Client, user: dict[str, str], agent_id: str) -> dict[str, Any]:
    """A run of the agent, read to its end over SSE; the run as GET /api/v1/runs/{id} then answers it."""
    conversation = await answer(await gateway.post("/api/v1/conversations", json={}, headers=user), 201)
    body = {"conversation_id": conversation["id"], "content": "Hello", "agent_id": agent_id}
    started = await answer(await gateway.post("/api/v1/runs", json=body, headers=user), 202)
    await read_sse(gateway, started["events_url"], user)
    run: dict[str, Any] = await answer(await gateway.get(f"/api/v1/runs/{started['run']['id']}", headers=user), 200)
    return run


async def test_an_unpriced_model_under_a_user_budget_fails_the_run(priced: Priced, gateway: Client) -> None:
    user = await _user(priced, gateway, ONE_CENT)
    agent = await _agent(gateway, user, UNPRICED_ROUTE)
    before = priced.model_requests()
    run = await _run(gateway, user, agent)
    assert run["state"] == "failed", run
    assert run["error"]["reason"] == Reason.MODEL_UNPRICED
    assert UNPRICED_MODEL in run["error"]["message"]
    assert run["error"]["transient"] is False  # terminal: the price table must change first
    assert priced.model_requests() == before  # refused before any upstream request


async def test_with_the_shipped_table_a_run_that_would_exceed_the_budget_is_refused_before_the_call(
    priced: Priced, gateway: Client
) -> None:
    worst_output_micros = MAX_OUTPUT_TOKENS * HAIKU_OUTPUT_PER_MILLION  # a step's output alone, at most
    assert worst_output_micros > ONE_CENT
    user = await _user(priced, gateway, ONE_CENT)
    agent = await _agent(gateway, user, SHIPPED_ROUTE)
    before = priced.model_requests()
    run = await _run(gateway, user, agent)
    assert (run["state"], run["incomplete_reason"]) == ("incomplete", "budget"), run
    assert priced.model_requests() == before
    budget = await answer(await gateway.get("/api/v1/budget", headers=user), 200)
    assert (budget["spent_micros"], budget["reserved_micros"]) == (0, 0)

    roomy = await _user(priced, gateway, 10 * ONE_CENT)  # $0.10 holds the same step's worst case
    run = await _run(gateway, roomy, await _agent(gateway, roomy, SHIPPED_ROUTE))
    assert run["state"] == "completed", run
    assert run["usage"]["cost_micros"] > 0
    assert run["usage"]["cost_unknown"] is False
    budget = await answer(await gateway.get("/api/v1/budget", headers=roomy), 200)
    assert budget["spent_micros"] == run["usage"]["cost_micros"]


async def test_a_second_run_on_a_caching_agent_reads_the_prompt_cache(priced: Priced, gateway: Client) -> None:
    user = await _user(priced, gateway)
    caching = await _agent(gateway, user, SHIPPED_ROUTE)  # prompt_caching unset: on
    first = await _run(gateway, user, caching)
    second = await _run(gateway, user, caching)
    assert first["state"] == second["state"] == "completed"
    written = first["usage"]["cache_write_input_tokens"]
    assert (first["usage"]["cache_read_input_tokens"], written > 0) == (0, True)
    assert second["usage"]["cache_read_input_tokens"] == written  # the same system prompt and tools: a hit
    assert second["usage"]["cache_write_input_tokens"] == 0
    hint = priced.fake.requests[-1].body
    assert hint["system"][0]["cache_control"] == {"type": "ephemeral"}
    # Cache reads cost a tenth of input: the second run is the cheaper one.
    assert second["usage"]["cost_micros"] < first["usage"]["cost_micros"]
    records = await answer(await gateway.get(f"/api/v1/usage/records?run_id={second['id']}", headers=user), 200)
    assert [r["usage"]["cache_read_input_tokens"] for r in records["records"]] == [written]

    off = await _agent(gateway, user, SHIPPED_ROUTE, model_params={"prompt_caching": False})
    for _ in range(2):
        run = await _run(gateway, user, off)
        assert (run["usage"]["cache_read_input_tokens"], run["usage"]["cache_write_input_tokens"]) == (0, 0)
        assert "cache_control" not in str(priced.fake.requests[-1].body)
