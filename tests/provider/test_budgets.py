"""Budgets: reserved before a call, settled after; concurrency cannot overshoot."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from fakes.upstream import FakeUpstream, Reply
from steward.errors import from_rpc_error
from steward.provider.v1 import budget_pb2
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
