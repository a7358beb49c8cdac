"""Usage queries: the caller's usage records, and sums grouped by user, agent, run or day."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, String, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.provider.db.models import UsageRecordRow
from steward import paging, timeutil
from steward.common.v1 import usage_pb2
from steward.errors import invalid_argument
from steward.provider.v1 import provider_service_pb2 as pb
from steward.provider.v1 import usage_record_pb2

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(value: int) -> int:
    if value < 0:
        raise invalid_argument("page_size", "page_size must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


_RECORD_ORDER = paging.Keyset(
    "usage-records.1", (UsageRecordRow.create_time, UsageRecordRow.id), (False, False), (datetime, str)
)


def _filtered(query: Select[Any], owner_id: str, run_id: str, agent_id: str, start: Any, end: Any) -> Select[Any]:
    query = query.where(UsageRecordRow.owner_id == owner_id)
    if run_id:
        query = query.where(UsageRecordRow.run_id == run_id)
    if agent_id:
        query = query.where(UsageRecordRow.agent_id == agent_id)
    if start.seconds or start.nanos:
        query = query.where(UsageRecordRow.create_time >= start.ToDatetime(tzinfo=UTC))
    if end.seconds or end.nanos:
        query = query.where(UsageRecordRow.create_time < end.ToDatetime(tzinfo=UTC))
    return query


def record_message(row: UsageRecordRow) -> usage_record_pb2.UsageRecord:
    record = usage_record_pb2.UsageRecord(
        id=row.id,
        user_id=row.owner_id,
        key_scope=row.key_scope,
        agent_id=row.agent_id,
        run_id=row.run_id,
        step=row.step,
        request_id=row.request_id,
        route=row.route,
        provider=row.provider,
        model=row.model,
        attempt=row.attempt,
        outcome=row.outcome,
        error_reason=row.error_reason,
        usage=usage_pb2.Usage(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cache_read_input_tokens=row.cache_read_input_tokens,
            cache_write_input_tokens=row.cache_write_input_tokens,
            cost_micros=row.cost_micros,
        ),
    )
    record.create_time.FromDatetime(timeutil.aware(row.create_time))
    return record


class UsageQueries:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def records(
        self, owner_id: str, request: pb.ListUsageRecordsRequest
    ) -> tuple[list[usage_record_pb2.UsageRecord], str]:
        size = page_size(request.page_size)
        query = _filtered(
            select(UsageRecordRow), owner_id, request.run_id, request.agent_id, request.start_time, request.end_time
        )
        async with self._sessions() as session:
            return await paging.read_page(session, query, _RECORD_ORDER, request.page_token, size, record_message)

    async def summarize(
        self, owner_id: str, request: pb.SummarizeUsageRequest
    ) -> tuple[list[usage_record_pb2.UsageSummary], str]:
        groups = set(request.group_by) or {usage_record_pb2.USAGE_GROUP_BY_USER}
        if usage_record_pb2.USAGE_GROUP_BY_UNSPECIFIED in groups:
            raise invalid_argument("group_by", "unknown grouping")
        columns: dict[str, Any] = {}
        if usage_record_pb2.USAGE_GROUP_BY_AGENT in groups:
            columns["agent_id"] = UsageRecordRow.agent_id
        if usage_record_pb2.USAGE_GROUP_BY_RUN in groups:
            columns["run_id"] = UsageRecordRow.run_id
        if usage_record_pb2.USAGE_GROUP_BY_DAY in groups:
            # Times are stored in UTC; the first ten characters of their text are the day.
            columns["day"] = func.substr(cast(UsageRecordRow.create_time, String), 1, 10)
        keys = list(columns.values())
        # Each group's key is unique among the groups: it is the whole keyset, and the grouping names the list.
        kind = "usage-summaries.1:" + ",".join(columns)
        after = paging.decode(request.page_token, kind, [str] * len(keys))
        sums = [
            func.count(),
            func.sum(UsageRecordRow.input_tokens),
            func.sum(UsageRecordRow.output_tokens),
            func.sum(UsageRecordRow.cache_read_input_tokens),
            func.sum(UsageRecordRow.cache_write_input_tokens),
            func.sum(UsageRecordRow.cost_micros),
        ]
        query = _filtered(
            select(*keys, *sums), owner_id, request.run_id, request.agent_id, request.start_time, request.end_time
        )
        if after is not None:
            query = query.where(paging.after_key(keys, [False] * len(keys), after))
        if keys:
            query = query.group_by(*keys).order_by(*keys)
        size = page_size(request.page_size)
        async with self._sessions() as session:
            rows = (await session.execute(query.limit(size + 1))).all()
        summaries = []
        for row in rows[:size]:
            values = dict(zip(columns, row[: len(keys)], strict=True))
            count, inputs, outputs, cache_read, cache_write, cost = row[len(keys) :]
            summaries.append(
                usage_record_pb2.UsageSummary(
                    user_id=owner_id,
                    agent_id=values.get("agent_id", ""),
                    run_id=values.get("run_id", ""),
                    day=str(values.get("day", "")),
                    attempt_count=int(count),
                    usage=usage_pb2.Usage(
                        input_tokens=int(inputs or 0),
                        output_tokens=int(outputs or 0),
                        cache_read_input_tokens=int(cache_read or 0),
                        cache_write_input_tokens=int(cache_write or 0),
                        cost_micros=int(cost or 0),
                    ),
                )
            )
        last = [str(part) for part in rows[size - 1][: len(keys)]] if len(rows) > size else None
        return summaries, "" if last is None else paging.encode(kind, last)
