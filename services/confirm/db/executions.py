"""The execution ledger: an approved write is recorded STARTED before the tool is called and FINISHED
(or OUTCOME_UNKNOWN) after, keyed by the confirmation id, fenced by the run's lease epoch.

Every call checks, in this order: the confirmation exists and is the caller's (NOT_FOUND), the
epoch is not stale (LEASE_LOST, checked first among the state checks, as for every fenced write),
then the states (CONFIRMATION_STATE_CONFLICT).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.confirm.db import audit, convert
from services.confirm.db.confirmations import confirmation_not_found
from services.confirm.db.database import Database
from services.confirm.db.fencing import lock_fenced
from services.confirm.db.models import ConfirmationRow, ExecutionRow
from steward import canonical, timeutil
from steward.confirm.v1 import audit_event_pb2, confirmation_pb2, execution_pb2
from steward.errors import StewardError, failed_precondition, invalid_argument, not_found


@dataclass(frozen=True)
class Finish:
    """A validated FinishExecution request."""

    result_json: str
    is_error: bool
    outcome_unknown: bool
    lease_epoch: int
    actor: str

    @property
    def state(self) -> execution_pb2.ExecutionState.ValueType:
        if self.outcome_unknown:
            return execution_pb2.EXECUTION_STATE_OUTCOME_UNKNOWN
        return execution_pb2.EXECUTION_STATE_FINISHED


def _state_conflict(message: str) -> StewardError:
    return failed_precondition("CONFIRMATION_STATE_CONFLICT", message)


class ExecutionRepository:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def begin(
        self,
        user_id: str,
        confirmation_id: str,
        *,
        idempotent: bool,
        idempotency_key: str,
        arguments_hash: str,
        lease_epoch: int,
        actor: str,
    ) -> tuple[execution_pb2.Execution, bool]:
        """Record the approved write STARTED; an existing entry is returned as it is (created False),
        except that a higher epoch replaces its recorded one."""
        now = timeutil.now()
        async with self._db.writes() as session, session.begin():
            confirmation = await self._fenced_confirmation(session, user_id, confirmation_id, lease_epoch, now)
            if confirmation.state != confirmation_pb2.CONFIRMATION_STATE_APPROVED:
                raise _state_conflict(f"confirmation {confirmation_id} is not approved")
            approved_hash = _approved_hash(confirmation)
            if arguments_hash and arguments_hash != approved_hash:
                raise invalid_argument("arguments_hash", "arguments_hash is not the hash of the approved arguments")
            entry = await self._entry(session, confirmation_id)
            if entry is not None:
                if lease_epoch > entry.lease_epoch:
                    entry.lease_epoch = lease_epoch
                return convert.execution_message(entry), False
            entry = ExecutionRow(
                confirmation_id=confirmation_id,
                user_id=user_id,
                run_id=confirmation.run_id,
                tool_call_id=confirmation.tool_call_id,
                state=execution_pb2.EXECUTION_STATE_STARTED,
                idempotent=idempotent,
                idempotency_key=idempotency_key or confirmation_id,
                arguments_hash=approved_hash,
                lease_epoch=lease_epoch,
                result_json="",
                is_error=False,
                start_time=now,
            )
            session.add(entry)
            self._audit(
                session, confirmation, audit_event_pb2.AUDIT_EVENT_KIND_EXECUTION_STARTED, actor, now, approved_hash
            )
        return convert.execution_message(entry), True

    async def finish(self, user_id: str, confirmation_id: str, finish: Finish) -> execution_pb2.Execution:
        """Move a STARTED entry to FINISHED or OUTCOME_UNKNOWN; repeating the same finish returns the entry."""
        now = timeutil.now()
        async with self._db.writes() as session, session.begin():
            confirmation = await self._fenced_confirmation(session, user_id, confirmation_id, finish.lease_epoch, now)
            entry = await self._entry(session, confirmation_id)
            if entry is None:
                raise _state_conflict(f"confirmation {confirmation_id} has no execution STARTED")
            if entry.state != execution_pb2.EXECUTION_STATE_STARTED:
                if _same_finish(entry, finish):
                    return convert.execution_message(entry)
                raise _state_conflict(f"the execution of confirmation {confirmation_id} was finished differently")
            entry.state = finish.state
            entry.result_json = "" if finish.outcome_unknown else finish.result_json
            entry.is_error = False if finish.outcome_unknown else finish.is_error
            entry.lease_epoch = max(entry.lease_epoch, finish.lease_epoch)
            entry.finish_time = now
            kind = (
                audit_event_pb2.AUDIT_EVENT_KIND_OUTCOME_UNKNOWN
                if finish.outcome_unknown
                else audit_event_pb2.AUDIT_EVENT_KIND_EXECUTION_FINISHED
            )
            self._audit(session, confirmation, kind, finish.actor, now)
        return convert.execution_message(entry)

    async def get(self, user_id: str, confirmation_id: str) -> execution_pb2.Execution:
        """The ledger entry of the user's confirmation; NOT_FOUND (resource "execution") when it has none."""
        async with self._db.reads() as session, session.begin():
            confirmation = await session.scalar(
                select(ConfirmationRow.id).where(
                    ConfirmationRow.id == confirmation_id, ConfirmationRow.user_id == user_id
                )
            )
            if confirmation is None:
                raise confirmation_not_found(confirmation_id)
            entry = await session.scalar(select(ExecutionRow).where(ExecutionRow.confirmation_id == confirmation_id))
        if entry is None:
            error = not_found("CONFIRMATION_NOT_FOUND", f"confirmation {confirmation_id} has no execution entry")
            error.metadata["resource"] = "execution"
            raise error
        return convert.execution_message(entry)

    @staticmethod
    async def _fenced_confirmation(
        session: AsyncSession, user_id: str, confirmation_id: str, epoch: int, now: datetime
    ) -> ConfirmationRow:
        confirmation = await session.scalar(
            select(ConfirmationRow).where(ConfirmationRow.id == confirmation_id, ConfirmationRow.user_id == user_id)
        )
        if confirmation is None:
            raise confirmation_not_found(confirmation_id)
        await lock_fenced(session, user_id, confirmation.run_id, epoch, now)
        return confirmation

    @staticmethod
    async def _entry(session: AsyncSession, confirmation_id: str) -> ExecutionRow | None:
        return await session.scalar(
            select(ExecutionRow).where(ExecutionRow.confirmation_id == confirmation_id).with_for_update()
        )

    @staticmethod
    def _audit(
        session: AsyncSession,
        confirmation: ConfirmationRow,
        kind: audit_event_pb2.AuditEventKind.ValueType,
        actor: str,
        now: datetime,
        arguments_hash: str = "",
    ) -> None:
        surface = confirmation_pb2.SURFACE_GRPC
        audit.record(
            session, confirmation, kind, actor=actor, surface=surface, reason="", now=now, arguments_hash=arguments_hash
        )


def _approved_hash(confirmation: ConfirmationRow) -> str:
    """The hash of the arguments the decision approved: the edited ones when it edited them."""
    if not confirmation.edited_arguments_json:
        return confirmation.arguments_hash
    return canonical.sha256_hex(canonical.parse(confirmation.edited_arguments_json))


def _same_finish(entry: ExecutionRow, finish: Finish) -> bool:
    if entry.state != finish.state:
        return False
    if finish.outcome_unknown:
        return True
    return entry.result_json == finish.result_json and entry.is_error == finish.is_error
