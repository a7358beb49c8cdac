"""Budgets: reserved before a call, settled after; concurrency cannot overshoot."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from fakes.upstream import FakeUpstream, Reply
from steward.errors import Reason, StewardError, from_rpc_error
from steward.provider.v1 import budget_pb2, usage_record_pb2
from steward.provider.v1 import provider_service_pb2 as pb
from tests.provider.harness import ask, provider_for
from tests.support.backends import drop_database_url, fresh_database_url

MAX_TOKENS = 1000


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The provider's database: a SQLite file, or a scratch Postgres database (FOR UPDATE path)."""
    url = await fresh_database_url(request.param, tmp_path, "provider.db")
    try:
        yield url
    finally:
        await drop_database_url(url)


async def test_fifty_concurrent_calls_against_a_budget_for_ten(
    fake_upstream: FakeUpstream, tmp_path: Path, database_url: str
) -> None:
    # Output is the only priced token kind here and every reply uses all max_tokens, so a call's
    # worst case is its actual cost (+1 micro): the budget holds exactly ten calls.
    prices = tmp_path / "output-only-prices.json"
    prices.write_text(json.dumps({"fake-anthropic/claude-test": {"input": 0.0, "output": 2.0}}))
    async with provider_for(fake_upstream, tmp_path, prices_file=prices, database_url=database_url) as provider:
        user = provider.user()
        await provider.stub.PutKey(
            pb.PutKeyRequest(provider="fake-anthropic", secret="sk-budget-0000000000"), metadata=user
        )
        per_call = MAX_TOKENS * 2 + 1  # micro-dollars reserved per call
        budget = await provider.stub.SetBudget(
            pb.SetBudgetRequest(limit_micros=10 * per_call, period=budget_pb2.BUDGET_PERIOD_LIFETIME), metadata=user
        )
        assert budget.budget.limit_micros == 10 * per_call
        fake_upstream.default = Reply(text="x", output_tokens=MAX_TOKENS, chunk_delay=0.005)

        async def one() -> str:
            try:
                await provider.collect(ask(max_tokens=MAX_TOKENS), user)
            except grpc.aio.AioRpcError as error:
                return from_rpc_error(error).reason
            return "ok"

        outcomes = await asyncio.gather(*(one() for _ in range(50)))
        assert outcomes.count("ok") <= 10
        assert outcomes.count("ok") >= 1
        assert set(outcomes) <= {"ok", "BUDGET_EXCEEDED"}
        state = (await provider.stub.GetBudget(pb.GetBudgetRequest(), metadata=user)).budget
        assert state.reserved_micros == 0
        assert state.spent_micros <= state.limit_micros
        assert state.spent_micros == outcomes.count("ok") * MAX_TOKENS * 2
        assert len(fake_upstream.requests) == outcomes.count("ok")  # refused calls never reached the upstream


async def test_expired_reservations_are_released(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from services.provider.db.models import ReservationRow
    from services.provider.metering import Attempt, Metering
    from steward.db import create_engine, create_sessionmaker

    async with provider_for(fake_upstream, tmp_path) as provider:
        user_id = "user-reservations"
        user = provider.user(user_id)
        await provider.stub.SetBudget(pb.SetBudgetRequest(limit_micros=1000), metadata=user)
        engine = create_engine(provider.settings.resolved_database_url())
        try:
            metering = Metering(create_sessionmaker(engine))
            attempt = Attempt(user_id, "", "", 0, "r1", "smart")
            assert await metering.reserve(attempt, 700) is not None  # a call whose process then died
            async with create_sessionmaker(engine)() as session, session.begin():
                await session.execute(
                    update(ReservationRow).values(expire_time=datetime.now(UTC) - timedelta(seconds=1))
                )
            assert await metering.expire_reservations() == 1
        finally:
            await engine.dispose()
        state = (await provider.stub.GetBudget(pb.GetBudgetRequest(), metadata=user)).budget
        assert (state.reserved_micros, state.spent_micros) == (0, 0)


async def test_an_unpriced_model_is_refused_under_a_budget_and_never_costs_a_silent_zero(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    prices = tmp_path / "unpriced-prices.json"
    prices.write_text(
        json.dumps({"fake-anthropic/claude-test": {"input": 1.0, "output": 2.0}, "fake-openai/local": {"free": True}})
    )
    unpriced = "fake-openai/gpt-test"  # also the "smart" route's fallback
    async with provider_for(fake_upstream, tmp_path, prices_file=prices) as provider:
        user = provider.user()
        for name in ("fake-anthropic", "fake-openai"):
            await provider.stub.PutKey(pb.PutKeyRequest(provider=name, secret="sk-unpriced-000000000"), metadata=user)

        async def budget(limit: int) -> None:
            request = pb.SetBudgetRequest(limit_micros=limit, period=budget_pb2.BUDGET_PERIOD_MONTH)
            await provider.stub.SetBudget(request, metadata=user)

        async def refusal(request: pb.GenerateRequest) -> StewardError:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await provider.collect(request, user)
            return from_rpc_error(raised.value)

        # No budget: the call goes ahead, and its usage says the cost is unknown (not $0).
        events = await provider.collect(ask(model=unpriced), user)
        assert [e.usage.cost_unknown for e in events if e.HasField("usage")][-1] is True
        (record,) = (await provider.stub.ListUsageRecords(pb.ListUsageRecordsRequest(), metadata=user)).records
        assert (record.model, record.usage.cost_micros, record.usage.cost_unknown) == ("gpt-test", 0, True)

        await budget(10_000)  # $0.01
        seen = len(fake_upstream.requests)
        for request in (ask(model=unpriced), ask(route="smart")):  # a route is refused for its unpriced fallback
            error = await refusal(request)
            assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, Reason.MODEL_UNPRICED)
            assert (error.metadata["models"], error.metadata["scope"]) == (unpriced, "user")
        assert len(fake_upstream.requests) == seen  # refused before any upstream request
        free = [e.usage for e in await provider.collect(ask(model="fake-openai/local"), user) if e.HasField("usage")]
        assert (free[-1].cost_micros, free[-1].cost_unknown) == (0, False)  # marked free: known to cost nothing
        priced = [e.usage for e in await provider.collect(ask(), user) if e.HasField("usage")]
        assert priced[-1].cost_micros > 0
        assert not priced[-1].cost_unknown

        await budget(0)  # a limit of 0 is no limit: the budget only keeps count, and nothing is refused
        await provider.collect(ask(model=unpriced), user)
        summary = await provider.stub.SummarizeUsage(
            pb.SummarizeUsageRequest(group_by=[usage_record_pb2.USAGE_GROUP_BY_MODEL]), metadata=user
        )
        by_model = {(s.provider, s.model): (s.attempt_count, s.usage.cost_unknown) for s in summary.summaries}
        assert by_model == {
            ("fake-anthropic", "claude-test"): (1, False),
            ("fake-openai", "gpt-test"): (2, True),
            ("fake-openai", "local"): (1, False),
        }
