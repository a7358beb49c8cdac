"""Generate end to end: real provider server, real SDK adapters, scripted fake upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from fakes.upstream import Cut, Fail, FakeToolCall, FakeUpstream, Reply, Stall
from steward.errors import from_rpc_error
from steward.provider.v1 import key_pb2, usage_record_pb2
from steward.provider.v1 import provider_service_pb2 as pb
from tests.provider.harness import ANTHROPIC_MODEL, OPENAI_MODEL, ProviderUnderTest, ask, provider_for, text_of


@pytest.fixture
async def provider(fake_upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[ProviderUnderTest]:
    async with provider_for(fake_upstream, tmp_path) as running:
        yield running


async def _keyed_user(
    provider: ProviderUnderTest, key: str = "sk-user-key-000000000000"
) -> tuple[tuple[str, str], ...]:
    user = provider.user()
    for name in ("fake-anthropic", "fake-openai"):
        await provider.stub.PutKey(pb.PutKeyRequest(provider=name, secret=key, label="mine"), metadata=user)
    return user


def _attempts(events: list[pb.GenerateResponse]) -> list[str]:
    return [
        f"{e.attempt_started.provider}#{e.attempt_started.attempt}" for e in events if e.HasField("attempt_started")
    ]


async def _records(
    provider: ProviderUnderTest, user: tuple[tuple[str, str], ...]
) -> list[usage_record_pb2.UsageRecord]:
    reply = await provider.stub.ListUsageRecords(pb.ListUsageRecordsRequest(), metadata=user)
    return sorted(reply.records, key=lambda r: r.attempt)


@pytest.mark.parametrize("model", [ANTHROPIC_MODEL, OPENAI_MODEL])
async def test_text_stream_is_normalized_metered_and_costed(
    provider: ProviderUnderTest, fake_upstream: FakeUpstream, model: str
) -> None:
    user = await _keyed_user(provider)
    fake_upstream.enqueue(Reply(text="Hello there, friend.", input_tokens=20, output_tokens=5))
    events = await provider.collect(ask(model=model), user)
    assert text_of(events) == "Hello there, friend."
    assert events[0].HasField("attempt_started")
    assert events[-1].finished.stop_reason == pb.STOP_REASON_END_TURN
    final_usage = [e.usage for e in events if e.HasField("usage")][-1]
    assert (final_usage.input_tokens, final_usage.output_tokens, final_usage.cost_micros) == (20, 5, 30)
    (record,) = await _records(provider, user)
    assert record.outcome == usage_record_pb2.ATTEMPT_OUTCOME_COMPLETED
    assert record.usage.cost_micros == 30
    assert record.key_scope == key_pb2.KEY_SCOPE_USER
    assert fake_upstream.requests[-1].headers.get("authorization", "").endswith("sk-user-key-000000000000") or (
        fake_upstream.requests[-1].headers.get("x-api-key") == "sk-user-key-000000000000"
    )


async def test_tool_calls_stream_with_their_indexes(provider: ProviderUnderTest, fake_upstream: FakeUpstream) -> None:
    user = await _keyed_user(provider)
    calls = [FakeToolCall("t1", "notes__create", '{"title": "a"}'), FakeToolCall("t2", "notes__list", "{}")]
    fake_upstream.enqueue(Reply(text="", tool_calls=calls))
    events = await provider.collect(ask(), user)
    started = [(e.tool_call_started.index, e.tool_call_started.name) for e in events if e.HasField("tool_call_started")]
    assert started == [(0, "notes.create"), (1, "notes.list")]
    arguments: dict[int, str] = {}
    for event in events:
        if event.HasField("tool_call_arguments_delta"):
            delta = event.tool_call_arguments_delta
            arguments[delta.index] = arguments.get(delta.index, "") + delta.arguments_json_delta
    assert arguments == {0: '{"title": "a"}', 1: "{}"}
    assert events[-1].finished.stop_reason == pb.STOP_REASON_TOOL_USE


async def test_a_rate_limited_call_is_retried_after_retry_after(
    provider: ProviderUnderTest, fake_upstream: FakeUpstream
) -> None:
    user = await _keyed_user(provider)
    fake_upstream.enqueue(Fail(429, retry_after=0.01), Reply(text="ok"))
    events = await provider.collect(ask(), user)
    assert _attempts(events) == ["fake-anthropic#1", "fake-anthropic#2"]
    assert text_of(events) == "ok"
    outcomes = [r.outcome for r in await _records(provider, user)]
    assert outcomes == [usage_record_pb2.ATTEMPT_OUTCOME_FAILED, usage_record_pb2.ATTEMPT_OUTCOME_COMPLETED]
    assert len(fake_upstream.requests) == 2


async def test_a_failing_primary_falls_back(provider: ProviderUnderTest, fake_upstream: FakeUpstream) -> None:
    user = await _keyed_user(provider)
    fake_upstream.enqueue(Fail(500), Fail(500), Fail(500), Reply(text="from the fallback"))
    events = await provider.collect(ask(route="smart"), user)
    assert _attempts(events) == ["fake-anthropic#1", "fake-anthropic#2", "fake-anthropic#3", "fake-openai#4"]
    assert text_of(events) == "from the fallback"
    assert [r.protocol for r in fake_upstream.requests] == ["anthropic"] * 3 + ["openai"]


async def test_a_stream_cut_after_tokens_is_not_retried(
    provider: ProviderUnderTest, fake_upstream: FakeUpstream
) -> None:
    user = await _keyed_user(provider)
    # Chunks 10 ms apart, so that the first ones are read before the cut (a transport may drop what it buffered
    # when the connection breaks under it).
    fake_upstream.enqueue(Cut(after_chunks=5, then=Reply(text="one two three four five six", chunk_delay=0.01)))
    seen: list[pb.GenerateResponse] = []

    async def drain() -> None:
        async for event in provider.stub.Generate(ask(route="smart"), metadata=user):
            seen.append(event)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await drain()
    error = from_rpc_error(raised.value)
    assert (error.code, error.reason, error.metadata["transient"]) == (
        grpc.StatusCode.UNAVAILABLE,
        "UPSTREAM_ERROR",
        "true",
    )
    assert text_of(seen)  # tokens were sent before the cut ...
    assert len(fake_upstream.requests) == 1  # ... so neither a retry nor the fallback was tried


async def test_terminal_failures_are_typed_and_not_retried(
    provider: ProviderUnderTest, fake_upstream: FakeUpstream
) -> None:
    user = await _keyed_user(provider)
    fake_upstream.enqueue(Fail(401))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await provider.collect(ask(), user)
    error = from_rpc_error(raised.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_ERROR")
    assert error.metadata["transient"] == "false"
    assert error.metadata["upstream_reason"] == "AUTHENTICATION"
    assert len(fake_upstream.requests) == 1


async def test_a_stalled_upstream_hits_the_first_token_timeout(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    async with provider_for(fake_upstream, tmp_path, first_token_timeout=0.3, retry_max_attempts=2) as provider:
        user = await _keyed_user(provider)
        fake_upstream.enqueue(Stall(5), Reply(text="second try"))
        events = await provider.collect(ask(), user)
        assert text_of(events) == "second try"
        records = await _records(provider, user)
        assert [r.error_reason for r in records] == ["TIMEOUT", ""]


async def test_no_key_means_model_not_found(provider: ProviderUnderTest) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await provider.collect(ask(), provider.user())
    error = from_rpc_error(raised.value)
    assert (error.code, error.reason, error.metadata.get("cause")) == (
        grpc.StatusCode.NOT_FOUND,
        "MODEL_NOT_FOUND",
        "no_key",
    )


async def test_a_users_key_overrides_the_instance_key(provider: ProviderUnderTest, fake_upstream: FakeUpstream) -> None:
    shared = "sk-instance-key-11111111111"
    await provider.stub.PutKey(
        pb.PutKeyRequest(scope=key_pb2.KEY_SCOPE_INSTANCE, provider="fake-anthropic", secret=shared),
        metadata=provider.admin(),
    )
    owner = await _keyed_user(provider, key="sk-own-key-2222222222222")
    other = provider.user()
    await provider.collect(ask(), owner)
    await provider.collect(ask(), other)
    used = [r.headers.get("authorization") or r.headers.get("x-api-key", "") for r in fake_upstream.requests]
    assert used[0].endswith("sk-own-key-2222222222222")
    assert used[1].endswith(shared)
    records = await _records(provider, other)
    assert records[0].key_scope == key_pb2.KEY_SCOPE_INSTANCE


async def test_users_cannot_write_instance_keys(provider: ProviderUnderTest) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await provider.stub.PutKey(
            pb.PutKeyRequest(scope=key_pb2.KEY_SCOPE_INSTANCE, provider="openai", secret="sk-x-123456789012"),
            metadata=provider.user(),
        )
    assert from_rpc_error(raised.value).reason == "PERMISSION_DENIED"


@pytest.mark.parametrize("name", ["no-such-provider", "demo", ""])
async def test_keys_are_refused_for_providers_that_are_unknown_or_take_none(
    provider: ProviderUnderTest, name: str
) -> None:
    user = provider.user()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await provider.stub.PutKey(pb.PutKeyRequest(provider=name, secret="sk-x-123456789012"), metadata=user)
    assert from_rpc_error(raised.value).reason == "INVALID_ARGUMENT"
    assert not (await provider.stub.ListKeys(pb.ListKeysRequest(), metadata=user)).keys


async def test_models_and_routes_say_what_the_caller_can_use(provider: ProviderUnderTest) -> None:
    user = provider.user()
    await provider.stub.PutKey(pb.PutKeyRequest(provider="fake-openai", secret="sk-openai-000000000000"), metadata=user)
    models = {m.name: m for m in (await provider.stub.ListModels(pb.ListModelsRequest(), metadata=user)).models}
    assert models[OPENAI_MODEL].available
    assert not models[ANTHROPIC_MODEL].available
    assert models["demo/offline"].offline_demo
    routes = {
        r.name: r for r in (await provider.stub.ListModelRoutes(pb.ListModelRoutesRequest(), metadata=user)).routes
    }
    assert routes["smart"].primary.model == "claude-test"
    assert [f.provider for f in routes["smart"].fallbacks] == ["fake-openai"]


async def test_an_idle_stream_times_out_and_is_retried_before_any_token(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    async with provider_for(fake_upstream, tmp_path, idle_timeout=0.3, first_token_timeout=5.0) as provider:
        user = await _keyed_user(provider)
        # message_start and ping arrive, then the stream goes silent before any text.
        fake_upstream.enqueue(Stall(5, after_chunks=2), Reply(text="recovered"))
        events = await provider.collect(ask(), user)
        assert text_of(events) == "recovered"
        assert [r.error_reason for r in await _records(provider, user)] == ["TIMEOUT", ""]


async def test_a_client_that_goes_away_leaves_a_cancelled_usage_row(
    provider: ProviderUnderTest, fake_upstream: FakeUpstream
) -> None:
    user = await _keyed_user(provider)
    fake_upstream.enqueue(Reply(text=" ".join(["word"] * 200), chunk_delay=0.01))
    call = provider.stub.Generate(ask(), metadata=user)
    async for event in call:
        if event.HasField("text_delta"):
            break
    call.cancel()
    for _ in range(200):  # bounded wait for the server to notice and write the row
        records = await _records(provider, user)
        if records:
            break
        await asyncio.sleep(0.02)
    assert [r.outcome for r in records] == [usage_record_pb2.ATTEMPT_OUTCOME_CANCELLED]
    state = (await provider.stub.GetBudget(pb.GetBudgetRequest(), metadata=user)).budget
    assert state.reserved_micros == 0


async def test_usage_is_summarized_by_run_and_day(provider: ProviderUnderTest, fake_upstream: FakeUpstream) -> None:
    user = await _keyed_user(provider)
    fake_upstream.default = Reply(text="ab", input_tokens=10, output_tokens=3)
    for run in ("run-a", "run-a", "run-b"):
        await provider.collect(ask(run_id=run, agent_id="agent-1"), user)
    by_run = await provider.stub.SummarizeUsage(
        pb.SummarizeUsageRequest(group_by=[usage_record_pb2.USAGE_GROUP_BY_RUN]), metadata=user
    )
    assert [(s.run_id, s.attempt_count, s.usage.output_tokens, s.usage.cost_micros) for s in by_run.summaries] == [
        ("run-a", 2, 6, 32),
        ("run-b", 1, 3, 16),
    ]
    by_day = await provider.stub.SummarizeUsage(
        pb.SummarizeUsageRequest(group_by=[usage_record_pb2.USAGE_GROUP_BY_DAY]), metadata=user
    )
    assert len(by_day.summaries) == 1
    assert len(by_day.summaries[0].day) == 10  # YYYY-MM-DD
    one_run = await provider.stub.ListUsageRecords(pb.ListUsageRecordsRequest(run_id="run-b"), metadata=user)
    assert [r.run_id for r in one_run.records] == ["run-b"]
    others = await provider.stub.ListUsageRecords(pb.ListUsageRecordsRequest(), metadata=provider.user())
    assert not others.records


async def test_a_keyless_upstream_needs_no_stored_key(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    routes = {
        "upstreams": {"local": {"protocol": "openai", "base_url": fake_upstream.openai_base_url, "keyless": True}}
    }
    (tmp_path / "keyless.json").write_text(json.dumps(routes))
    async with provider_for(fake_upstream, tmp_path, routes_file=tmp_path / "keyless.json") as provider:
        events = await provider.collect(ask(model="local/llama"), provider.user())
        assert text_of(events) == "Hello from the fake upstream."
