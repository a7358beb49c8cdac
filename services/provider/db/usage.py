"""The usage ledger: inserting usage rows in batches, and reading records and grouped sums back.

A batch of rows is one transaction. On SQLite it is one thread hop on a synchronous connection to
the same database file (aiosqlite would hop per statement: begin, insert, commit); on another
backend, or an in-memory SQLite database, it goes through the async session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2
from sqlalchemy import Select, String, case, cast, create_engine, func, insert, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.provider.db.convert import usage_record_message
from services.provider.db.models import UsageRecordRow
from steward import paging
from steward.common.v1 import usage_pb2
from steward.db import configure_sqlite
from steward.provider.v1 import key_pb2, usage_record_pb2

_RECORD_ORDER = paging.Keyset(
    "usage-records.1", (UsageRecordRow.create_time, UsageRecordRow.id), (False, False), (datetime, str)
)


@dataclass(frozen=True, slots=True)
class NewUsageRecord:
    """The usage of one attempt of one model call, as the ledger stores it."""

    id: str
    owner_id: str
    agent_id: str
    run_id: str
    step: int
    request_id: str
    route: str
    provider: str
    model: str
    attempt: int
    outcome: usage_record_pb2.AttemptOutcome.ValueType
    key_scope: key_pb2.KeyScope.ValueType
    error_reason: str
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    cost_micros: int
    create_time: datetime
    cost_unknown: bool = False  # the model had no price: cost_micros is 0 and says nothing


def _values(record: NewUsageRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "owner_id": record.owner_id,
        "agent_id": record.agent_id,
        "run_id": record.run_id,
        "step": record.step,
        "request_id": record.request_id,
        "route": record.route,
        "provider": record.provider,
        "model": record.model,
        "attempt": record.attempt,
        "outcome": record.outcome,
        "key_scope": record.key_scope,
        "error_reason": record.error_reason,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cache_read_input_tokens": record.cache_read_input_tokens,
        "cache_write_input_tokens": record.cache_write_input_tokens,
        "cost_micros": record.cost_micros,
        "cost_unknown": record.cost_unknown,
        "create_time": record.create_time,
    }


def _sqlite_engine(sessions: async_sessionmaker[AsyncSession]) -> Engine | None:
    """A synchronous engine on the same SQLite database (None for another backend): a batch is then one thread
    hop, where aiosqlite hops once per statement (begin, insert, commit)."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "sqlite":
        return None
    url = make_url(bind.url.render_as_string(hide_password=False)).set(drivername="sqlite")
    if url.database in (None, "", ":memory:"):
        return None  # an in-memory database is per connection: only the async engine's holds the rows
    return configure_sqlite(create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}))


class UsageInserts:
    """Inserts batches of usage rows, each batch in one transaction; `close()` releases its thread and engine."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._sync = _sqlite_engine(sessions)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="usage-writer") if self._sync is not None else None

    async def insert(self, records: Sequence[NewUsageRecord]) -> None:
        rows = [_values(record) for record in records]
        if self._sync is not None and self._thread is not None:
            sync = self._sync

            def insert_rows() -> None:
                with sync.begin() as connection:
                    connection.execute(insert(UsageRecordRow), rows)

            await asyncio.get_running_loop().run_in_executor(self._thread, insert_rows)
            return
        async with self._sessions() as session, session.begin():
            await session.execute(insert(UsageRecordRow), rows)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._sync is not None:
            self._sync.dispose()


@dataclass(frozen=True)
class UsageWindow:
    """Which of an owner's usage rows a query reads: a run, an agent, and create times in [start, end).

    Empty fields (an empty id, an unset timestamp) do not filter.
    """

    run_id: str = ""
    agent_id: str = ""
    start: timestamp_pb2.Timestamp = field(default_factory=timestamp_pb2.Timestamp)
    end: timestamp_pb2.Timestamp = field(default_factory=timestamp_pb2.Timestamp)


def _filtered(query: Select[Any], owner_id: str, window: UsageWindow) -> Select[Any]:
    query = query.where(UsageRecordRow.owner_id == owner_id)
    if window.run_id:
        query = query.where(UsageRecordRow.run_id == window.run_id)
    if window.agent_id:
        query = query.where(UsageRecordRow.agent_id == window.agent_id)
    if window.start.seconds or window.start.nanos:
        query = query.where(UsageRecordRow.create_time >= window.start.ToDatetime(tzinfo=UTC))
    if window.end.seconds or window.end.nanos:
        query = query.where(UsageRecordRow.create_time < window.end.ToDatetime(tzinfo=UTC))
    return query


class UsageRepository:
    """An owner's usage records, and their sums grouped by user, agent, run, day or model, in keyset pages.

    The page-size rule (its default, its cap, INVALID_ARGUMENT on a bad size) is the service's, handed in;
    it is applied where the service always applied it: a bad page token is reported before a bad size.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], page_size: Callable[[int], int]) -> None:
        self._sessions = sessions
        self._page_size = page_size

    async def records(
        self, owner_id: str, window: UsageWindow, page_token: str, page_size: int
    ) -> tuple[list[usage_record_pb2.UsageRecord], str]:
        paging.decode(page_token, _RECORD_ORDER.kind, _RECORD_ORDER.types)  # the token's refusal comes first
        size = self._page_size(page_size)
        query = _filtered(select(UsageRecordRow), owner_id, window)
        async with self._sessions() as session:
            return await paging.read_page(session, query, _RECORD_ORDER, page_token, size, usage_record_message)

    async def summarize(
        self, owner_id: str, window: UsageWindow, groups: Collection[int], page_token: str, page_size: int
    ) -> tuple[list[usage_record_pb2.UsageSummary], str]:
        """Sums per group (a USAGE_GROUP_BY_* set; the user alone when it names no agent, run, day or model)."""
        columns: dict[str, Any] = {}
        if usage_record_pb2.USAGE_GROUP_BY_AGENT in groups:
            columns["agent_id"] = UsageRecordRow.agent_id
        if usage_record_pb2.USAGE_GROUP_BY_RUN in groups:
            columns["run_id"] = UsageRecordRow.run_id
        if usage_record_pb2.USAGE_GROUP_BY_DAY in groups:
            # Times are stored in UTC; the first ten characters of their text are the day.
            columns["day"] = func.substr(cast(UsageRecordRow.create_time, String), 1, 10)
        if usage_record_pb2.USAGE_GROUP_BY_MODEL in groups:
            columns["provider"] = UsageRecordRow.provider
            columns["model"] = UsageRecordRow.model
        keys = list(columns.values())
        # Each group's key is unique among the groups: it is the whole keyset, and the grouping names the list.
        kind = "usage-summaries.1:" + ",".join(columns)
        after = paging.decode(page_token, kind, [str] * len(keys))
        sums = [
            func.count(),
            func.sum(UsageRecordRow.input_tokens),
            func.sum(UsageRecordRow.output_tokens),
            func.sum(UsageRecordRow.cache_read_input_tokens),
            func.sum(UsageRecordRow.cache_write_input_tokens),
            func.sum(UsageRecordRow.cost_micros),
            func.max(case((UsageRecordRow.cost_unknown, 1), else_=0)),
        ]
        query = _filtered(select(*keys, *sums), owner_id, window)
        if after is not None:
            query = query.where(paging.after_key(keys, [False] * len(keys), after))
        if keys:
            query = query.group_by(*keys).order_by(*keys)
        size = self._page_size(page_size)
        async with self._sessions() as session:
            rows = (await session.execute(query.limit(size + 1))).all()
        summaries = []
        for row in rows[:size]:
            values = dict(zip(columns, row[: len(keys)], strict=True))
            count, inputs, outputs, cache_read, cache_write, cost, unknown = row[len(keys) :]
            summaries.append(
                usage_record_pb2.UsageSummary(
                    user_id=owner_id,
                    agent_id=values.get("agent_id", ""),
                    run_id=values.get("run_id", ""),
                    day=str(values.get("day", "")),
                    provider=values.get("provider", ""),
                    model=values.get("model", ""),
                    attempt_count=int(count),
                    usage=usage_pb2.Usage(
                        input_tokens=int(inputs or 0),
                        output_tokens=int(outputs or 0),
                        cache_read_input_tokens=int(cache_read or 0),
                        cache_write_input_tokens=int(cache_write or 0),
                        cost_micros=int(cost or 0),
                        cost_unknown=bool(unknown),
                    ),
                )
            )
        last = [str(part) for part in rows[size - 1][: len(keys)]] if len(rows) > size else None
        return summaries, "" if last is None else paging.encode(kind, last)
