"""AgentService over real gRPC on both backends: CRUD, masks, names, pages and per-user scoping."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from steward.common.v1 import limits_pb2
from steward.errors import Reason, from_rpc_error
from steward.store.v1 import agent_pb2
from steward.store.v1 import store_service_pb2 as pb
from tests.store.conftest import Metadata, StoreUnderTest

LIMITS = limits_pb2.RunLimits(
    max_steps=12,
    max_tokens=50_000,
    max_cost_micros=2_500_000,
    timeout=Duration(seconds=600),
    tool_timeout=Duration(seconds=30, nanos=500_000_000),
    first_token_timeout=Duration(seconds=20),
)
POLICY = agent_pb2.ApprovalPolicy(
    mode=agent_pb2.RUN_MODE_AUTONOMOUS,
    auto_approved_tools=["files.write"],
    always_confirm_tools=["mail.send"],
)


def _agent(name: str = "helper", **fields: Any) -> agent_pb2.Agent:
    values: dict[str, Any] = {
        "name": name,
        "description": "Helps.",
        "system_prompt": "You are helpful.",
        "model_route": "smart",
        "tools": ["files.read", "files.write"],
        "approval_policy": POLICY,
        "limits": LIMITS,
    }
    values.update(fields)
    return agent_pb2.Agent(**values)


async def _create(
    store: StoreUnderTest, user: Metadata, agent: agent_pb2.Agent, request_id: str = ""
) -> agent_pb2.Agent:
    response = await store.agents.CreateAgent(pb.CreateAgentRequest(agent=agent, request_id=request_id), metadata=user)
    created: agent_pb2.Agent = response.agent
    return created


async def _expect(code: grpc.StatusCode, reason: str, call: Awaitable[Any]) -> dict[str, str]:
    """Await `call`, assert it failed with `code` and `reason`, and return the error's metadata."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = from_rpc_error(raised.value)
    assert (error.code, error.reason) == (code, reason)
    return error.metadata


async def test_crud_round_trip(store: StoreUnderTest) -> None:
    user = store.user()
    created = await _create(store, user, _agent())
    assert created.id
    assert created.HasField("create_time")
    assert created.update_time == created.create_time
    assert (created.limits, created.approval_policy) == (LIMITS, POLICY)
    assert list(created.tools) == ["files.read", "files.write"]

    got = await store.agents.GetAgent(pb.GetAgentRequest(id=created.id), metadata=user)
    assert got.agent == created
    listed = await store.agents.ListAgents(pb.ListAgentsRequest(), metadata=user)
    assert list(listed.agents) == [created]

    changed = _agent("helper-2", id=created.id, limits=limits_pb2.RunLimits(max_steps=3), tools=[])
    updated = (await store.agents.UpdateAgent(pb.UpdateAgentRequest(agent=changed), metadata=user)).agent
    assert (updated.name, updated.limits, list(updated.tools)) == ("helper-2", limits_pb2.RunLimits(max_steps=3), [])
    assert updated.create_time == created.create_time
    assert updated.update_time.ToDatetime() >= created.update_time.ToDatetime()

    await store.agents.DeleteAgent(pb.DeleteAgentRequest(id=created.id), metadata=user)
    await _expect(
        grpc.StatusCode.NOT_FOUND,
        "AGENT_NOT_FOUND",
        store.agents.GetAgent(pb.GetAgentRequest(id=created.id), metadata=user),
    )
    # Rows are removed, so a repeated delete cannot be told from an unknown id.
    await _expect(
        grpc.StatusCode.NOT_FOUND,
        "AGENT_NOT_FOUND",
        store.agents.DeleteAgent(pb.DeleteAgentRequest(id=created.id), metadata=user),
    )


async def test_model_params_are_kept_and_only_a_real_change_bumps_the_version(store: StoreUnderTest) -> None:
    user = store.user()
    params = agent_pb2.ModelParams(
        temperature=0.0, max_output_tokens=512, reasoning_effort=agent_pb2.REASONING_EFFORT_LOW, prompt_caching=False
    )
    created = await _create(store, user, _agent(model_params=params))
    assert (created.version, created.model_params) == (1, params)
    assert created.model_params.HasField("temperature")  # 0.0 is kept as set, not as "the default"

    unchanged = _agent(id=created.id, model_params=params)
    same = await store.agents.UpdateAgent(pb.UpdateAgentRequest(agent=unchanged), metadata=user)
    assert same.agent == created  # nothing changed: same version, same update time
    mask = FieldMask(paths=["model_params"])
    changed = _agent(id=created.id, model_params=agent_pb2.ModelParams(max_output_tokens=256))
    updated = (
        await store.agents.UpdateAgent(pb.UpdateAgentRequest(agent=changed, update_mask=mask), metadata=user)
    ).agent
    assert (updated.version, updated.model_params) == (2, agent_pb2.ModelParams(max_output_tokens=256))
    assert not updated.model_params.HasField("prompt_caching")
    got = await store.agents.GetAgent(pb.GetAgentRequest(id=created.id), metadata=user)
    assert got.agent == updated


async def test_create_is_idempotent_by_request_id(store: StoreUnderTest) -> None:
    user = store.user()
    first = await _create(store, user, _agent(), request_id="agent-req-1")
    again = await _create(store, user, _agent(), request_id="agent-req-1")
    assert again == first


async def test_duplicate_name_already_exists(store: StoreUnderTest) -> None:
    user = store.user()
    await _create(store, user, _agent("dup"))
    await _expect(
        grpc.StatusCode.ALREADY_EXISTS,
        "AGENT_ALREADY_EXISTS",
        store.agents.CreateAgent(pb.CreateAgentRequest(agent=_agent("dup")), metadata=user),
    )
    # Names are unique per owner only.
    assert (await _create(store, store.user(), _agent("dup"))).name == "dup"


async def test_concurrent_creates_of_one_name_yield_one_agent(store: StoreUnderTest) -> None:
    user = store.user()
    calls = [store.agents.CreateAgent(pb.CreateAgentRequest(agent=_agent("racer")), metadata=user) for _ in range(6)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    created = [result for result in results if isinstance(result, pb.CreateAgentResponse)]
    failed = [result for result in results if isinstance(result, grpc.aio.AioRpcError)]
    assert len(created) == 1
    assert len(failed) == 5
    assert {from_rpc_error(error).reason for error in failed} == {"AGENT_ALREADY_EXISTS"}


async def test_update_changes_only_masked_fields(store: StoreUnderTest) -> None:
    user = store.user()
    created = await _create(store, user, _agent("masked"))
    patch = agent_pb2.Agent(id=created.id, name="ignored", description="New words.", limits=limits_pb2.RunLimits())
    request = pb.UpdateAgentRequest(agent=patch, update_mask=FieldMask(paths=["description", "limits"]))
    updated = (await store.agents.UpdateAgent(request, metadata=user)).agent
    assert updated.description == "New words."
    assert not updated.HasField("limits")
    expected = agent_pb2.Agent()
    expected.CopyFrom(created)
    expected.description = "New words."
    expected.ClearField("limits")
    expected.update_time.CopyFrom(updated.update_time)
    expected.version = 2
    assert updated == expected
    got = await store.agents.GetAgent(pb.GetAgentRequest(id=created.id), metadata=user)
    assert got.agent == updated


@pytest.mark.parametrize("path", ["id", "create_time", "update_time", "owner_id", "limits.max_steps", "nope"])
async def test_update_refuses_unknown_mask_paths(store: StoreUnderTest, path: str) -> None:
    user = store.user()
    created = await _create(store, user, _agent())
    request = pb.UpdateAgentRequest(agent=created, update_mask=FieldMask(paths=["description", path]))
    metadata = await _expect(
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", store.agents.UpdateAgent(request, metadata=user)
    )
    assert metadata["field"] == "update_mask"


async def test_rename_onto_an_existing_name_already_exists(store: StoreUnderTest) -> None:
    user = store.user()
    await _create(store, user, _agent("taken"))
    other = await _create(store, user, _agent("free"))
    request = pb.UpdateAgentRequest(
        agent=agent_pb2.Agent(id=other.id, name="taken"), update_mask=FieldMask(paths=["name"])
    )
    await _expect(
        grpc.StatusCode.ALREADY_EXISTS, "AGENT_ALREADY_EXISTS", store.agents.UpdateAgent(request, metadata=user)
    )
    got = await store.agents.GetAgent(pb.GetAgentRequest(id=other.id), metadata=user)
    assert got.agent == other
    # Keeping its own name is no conflict.
    same = pb.UpdateAgentRequest(agent=agent_pb2.Agent(id=other.id, name="free"), update_mask=FieldMask(paths=["name"]))
    assert (await store.agents.UpdateAgent(same, metadata=user)).agent.name == "free"


async def test_pages_return_every_agent_once_by_name(store: StoreUnderTest) -> None:
    user = store.user()
    names = ["e-agent", "c-agent", "a-agent", "d-agent", "b-agent"]
    for name in names:
        await _create(store, user, _agent(name))
    seen: list[str] = []
    token = ""
    for _ in range(len(names)):
        page = await store.agents.ListAgents(pb.ListAgentsRequest(page_size=2, page_token=token), metadata=user)
        assert len(page.agents) <= 2
        seen.extend(agent.name for agent in page.agents)
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(names)


async def test_another_users_agent_is_not_found(store: StoreUnderTest) -> None:
    alice, bob = store.user(), store.user()
    created = await _create(store, alice, _agent("private"))
    await _expect(
        grpc.StatusCode.NOT_FOUND,
        "AGENT_NOT_FOUND",
        store.agents.GetAgent(pb.GetAgentRequest(id=created.id), metadata=bob),
    )
    await _expect(
        grpc.StatusCode.NOT_FOUND,
        "AGENT_NOT_FOUND",
        store.agents.UpdateAgent(pb.UpdateAgentRequest(agent=_agent("stolen", id=created.id)), metadata=bob),
    )
    await _expect(
        grpc.StatusCode.NOT_FOUND,
        "AGENT_NOT_FOUND",
        store.agents.DeleteAgent(pb.DeleteAgentRequest(id=created.id), metadata=bob),
    )
    assert not (await store.agents.ListAgents(pb.ListAgentsRequest(), metadata=bob)).agents
    got = await store.agents.GetAgent(pb.GetAgentRequest(id=created.id), metadata=alice)
    assert got.agent == created


async def test_services_cannot_own_agents(store: StoreUnderTest) -> None:
    await _expect(
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        store.agents.ListAgents(pb.ListAgentsRequest(), metadata=store.service()),
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "nul\x00name"}, "agent.name"),
        ({"system_prompt": "be\x00good"}, "agent.system_prompt"),
        ({"description": "\x00"}, "agent.description"),
        ({"tools": ["files.read", "x\x00y"]}, "agent.tools[1]"),
        ({"model_route": "smart\x00"}, "agent.model_route"),
        ({"name": ""}, "agent.name"),
        ({"name": "Upper"}, "agent.name"),
        ({"name": "-dash"}, "agent.name"),
        ({"name": "ok\n"}, "agent.name"),
        ({"name": "a" * 64}, "agent.name"),
        ({"description": "d" * 2001}, "agent.description"),
        ({"system_prompt": "p" * 100_001}, "agent.system_prompt"),
        ({"model_route": ""}, "agent.model_route"),
        ({"model_route": "has space"}, "agent.model_route"),
        ({"model_route": "r" * 129}, "agent.model_route"),
        ({"tools": ["t"] * 2}, "agent.tools[1]"),
        ({"tools": [f"t{index}" for index in range(201)]}, "agent.tools"),
        ({"tools": ["x" * 201]}, "agent.tools[0]"),
        ({"limits": limits_pb2.RunLimits(max_steps=-1)}, "agent.limits.max_steps"),
        ({"limits": limits_pb2.RunLimits(max_cost_micros=-1)}, "agent.limits.max_cost_micros"),
        ({"limits": limits_pb2.RunLimits(timeout=Duration(seconds=-1))}, "agent.limits.timeout"),
        (
            {"approval_policy": agent_pb2.ApprovalPolicy(auto_approved_tools=["a", "a"])},
            "agent.approval_policy.auto_approved_tools[1]",
        ),
    ],
)
async def test_create_validates(store: StoreUnderTest, fields: dict[str, Any], field: str) -> None:
    metadata = await _expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        store.agents.CreateAgent(pb.CreateAgentRequest(agent=_agent(**fields)), metadata=store.user()),
    )
    assert metadata["field"] == field


async def test_update_validates_masked_fields_and_refuses_nul(store: StoreUnderTest) -> None:
    user = store.user()
    created = await _create(store, user, _agent("nul-check"))
    bad = agent_pb2.Agent(id=created.id, system_prompt="a\x00b")
    request = pb.UpdateAgentRequest(agent=bad, update_mask=FieldMask(paths=["system_prompt"]))
    metadata = await _expect(
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", store.agents.UpdateAgent(request, metadata=user)
    )
    assert metadata["field"] == "agent.system_prompt"
    got = await store.agents.GetAgent(pb.GetAgentRequest(id=created.id), metadata=user)
    assert got.agent == created


async def test_a_service_lists_the_model_routes_of_every_users_agents(store: StoreUnderTest) -> None:
    tag = uuid.uuid4().hex[:8]
    route, other = f"gone-{tag}", f"gone-{tag}/model"
    ada, bob = f"user-a-{tag}", f"user-b-{tag}"
    made = [
        await _create(store, store.user(bob), _agent("writer", model_route=route)),
        await _create(store, store.user(ada), _agent("zeta", model_route=route)),
        await _create(store, store.user(ada), _agent("alpha", model_route=route)),
        await _create(store, store.user(bob), _agent("solo", model_route=other)),
    ]
    by_name = {(agent.name, agent.model_route): agent.id for agent in made}

    def examples(use: pb.AgentModelRoute) -> list[tuple[str, str, str]]:
        return [(e.id, e.name, e.owner_id) for e in use.examples]

    listed = await store.agents.ListAgentModelRoutes(pb.ListAgentModelRoutesRequest(), metadata=store.service())
    assert not listed.truncated
    names = [use.model_route for use in listed.routes]
    assert len(names) == len(set(names))  # one entry per route
    uses = {use.model_route: use for use in listed.routes}
    assert uses[route].agent_count == 3
    assert examples(uses[route]) == [  # by owner, then name
        (by_name["alpha", route], "alpha", ada),
        (by_name["zeta", route], "zeta", ada),
        (by_name["writer", route], "writer", bob),
    ]
    assert (uses[other].agent_count, examples(uses[other])) == (1, [(by_name["solo", other], "solo", bob)])

    few = await store.agents.ListAgentModelRoutes(
        pb.ListAgentModelRoutesRequest(max_routes=1, max_examples=2), metadata=store.service()
    )
    assert (len(few.routes), few.truncated) == (1, True)
    assert few.routes[0] == pb.AgentModelRoute(
        model_route=listed.routes[0].model_route,
        agent_count=listed.routes[0].agent_count,
        examples=listed.routes[0].examples[:2],
    )

    await store.agents.DeleteAgent(pb.DeleteAgentRequest(id=by_name["solo", other]), metadata=store.user(bob))
    after = await store.agents.ListAgentModelRoutes(pb.ListAgentModelRoutesRequest(), metadata=store.service())
    assert other not in {use.model_route for use in after.routes}

    await _expect(
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.PERMISSION_DENIED,
        store.agents.ListAgentModelRoutes(pb.ListAgentModelRoutesRequest(), metadata=store.user(ada)),
    )
    await _expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_ARGUMENT,
        store.agents.ListAgentModelRoutes(pb.ListAgentModelRoutesRequest(max_routes=-1), metadata=store.service()),
    )
