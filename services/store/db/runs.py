"""Runs: creation (with the input message, atomically), reads, and event log reads."""

from __future__ import annotations

from datetime import datetime

import grpc
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store.db import convert
from services.store.db.models import RunEventRow, RunRow
from services.store.db.run_rows import TERMINAL_STATES, event_message
from services.store.db.run_start import NewRun, Started, create_run
from services.store.db.runner import TransactionRunner
from steward import paging
from steward.errors import StewardError, failed_precondition, not_found
from steward.store.v1 import run_event_pb2, run_pb2

_NEWEST_FIRST = paging.Keyset("runs.1", (RunRow.create_time, RunRow.id), (True, False), (datetime, str))
_RUN = select(RunRow.__table__).where(RunRow.id == bindparam("run_id"), RunRow.owner_id == bindparam("owner_id"))


class RunRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], runner: TransactionRunner) -> None:
        self._sessions = sessions
        self._runner = runner

    async def create(self, owner_id: str, new: NewRun) -> Started:
        """Create a run (its conversation and input message, its claim when asked) once; a duplicate returns the
        first (run_start.py)."""
        try:
            return await self._runner.write(lambda connection: create_run(connection, owner_id, new))
        except IntegrityError as exc:  # a concurrent create took the run id or request id
            raise StewardError(
                grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_CONFLICT", "run id or request_id already used"
            ) from exc

    async def get(self, owner_id: str, run_id: str) -> run_pb2.Run:
        params = {"run_id": run_id, "owner_id": owner_id}
        row = await self._runner.read(lambda connection: connection.execute(_RUN, params).first())
        if row is None:
            raise not_found("RUN_NOT_FOUND", f"run {run_id} not found")
        return convert.run_message(row)

    async def list_runs(
        self, owner_id: str, conversation_id: str, page_token: str, limit: int
    ) -> tuple[list[run_pb2.Run], str]:
        """The owner's runs (of one conversation, if given), newest first, and the next page token."""
        query = select(RunRow).where(RunRow.owner_id == owner_id)
        if conversation_id:
            query = query.where(RunRow.conversation_id == conversation_id)
        async with self._sessions() as session:
            return await paging.read_page(
                session,
                query,
                _NEWEST_FIRST,
                page_token,
                limit,
                convert.run_message,
            )

    async def events_after(
        self, owner_id: str, run_id: str, after_seq: int, limit: int
    ) -> tuple[list[run_event_pb2.RunEvent], bool]:
        """Up to `limit` events after `after_seq`, and whether the run has ended.

        One round trip: the run's ownership, state and retention point come back
        with the events. A cursor inside the part of the log that retention
        removed is refused (CURSOR_EXPIRED): replaying from it would silently
        skip events.
        """
        query = (
            select(
                RunRow.state,
                RunRow.compacted_through_seq,
                RunEventRow.seq,
                RunEventRow.payload,
                RunEventRow.create_time,
            )
            .select_from(RunRow)
            .outerjoin(RunEventRow, (RunEventRow.run_id == RunRow.id) & (RunEventRow.seq > after_seq))
            .where(RunRow.id == run_id, RunRow.owner_id == owner_id)
            .order_by(RunEventRow.seq)
            .limit(limit)
        )
        rows = await self._runner.read(lambda connection: list(connection.execute(query).all()))
        if not rows:
            raise not_found("RUN_NOT_FOUND", f"run {run_id} not found")
        state, compacted_through = rows[0][0], rows[0][1]
        if after_seq < compacted_through:
            raise failed_precondition(
                "CURSOR_EXPIRED",
                f"events up to {compacted_through} were compacted; read the conversation's messages",
            )
        events = [
            event_message(run_id, seq, payload, created) for _, _, seq, payload, created in rows if seq is not None
        ]
        return events, state in TERMINAL_STATES
