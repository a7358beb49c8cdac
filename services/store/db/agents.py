"""Agent definitions, always scoped by the owner.

An agent's name is unique per owner: the `(owner_id, name)` constraint backs
the checks here, so a concurrent create or rename that races past them still
ends as ALREADY_EXISTS (AGENT_ALREADY_EXISTS), never as INTERNAL. Tools are kept
as a JSON list; the approval policy and limits as serialized protobuf.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from sqlalchemy import Row, Select, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.store.db.models import AgentRow
from services.store.db.runner import TransactionRunner
from steward import paging, timeutil
from steward.common.v1 import limits_pb2
from steward.errors import StewardError, invalid_argument, not_found
from steward.store.v1 import agent_pb2

# The field-mask paths UpdateAgent accepts; an empty mask means all of them.
MUTABLE_FIELDS: tuple[str, ...] = (
    "name",
    "description",
    "system_prompt",
    "model_route",
    "tools",
    "approval_policy",
    "limits",
    "model_params",
)


@dataclass(frozen=True)
class RouteUse:
    """A model route stored agents name: how many do, and a few of them as (id, name, owner id)."""

    model_route: str
    agents: int
    examples: list[tuple[str, str, str]]


# What applying one agent did (ApplyAgents).
Outcome = Literal["created", "updated", "unchanged"]


def _already_exists(name: str) -> StewardError:
    return StewardError(
        grpc.StatusCode.ALREADY_EXISTS, "AGENT_ALREADY_EXISTS", f"an agent named {name!r} already exists"
    )


def _not_found(agent_id: str) -> StewardError:
    return not_found("AGENT_NOT_FOUND", f"agent {agent_id} not found")


async def require_agent(session: AsyncSession, owner_id: str, agent_id: str) -> None:
    """AGENT_NOT_FOUND unless the owner has this agent (a run or conversation never names another user's)."""
    found = await session.scalar(select(AgentRow.id).where(AgentRow.id == agent_id, AgentRow.owner_id == owner_id))
    if found is None:
        raise _not_found(agent_id)


def agent_message(row: AgentRow | Row[Any]) -> agent_pb2.Agent:
    agent = agent_pb2.Agent(
        id=row.id,
        name=row.name,
        description=row.description,
        system_prompt=row.system_prompt,
        model_route=row.model_route,
        tools=json.loads(row.tools),
        create_time=timeutil.timestamp(row.create_time),
        update_time=timeutil.timestamp(row.update_time),
        version=row.version or 1,
    )
    if row.approval_policy:
        agent.approval_policy.CopyFrom(agent_pb2.ApprovalPolicy.FromString(row.approval_policy))
    if row.limits:
        agent.limits.CopyFrom(limits_pb2.RunLimits.FromString(row.limits))
    if row.model_params:
        agent.model_params.CopyFrom(agent_pb2.ModelParams.FromString(row.model_params))
    return agent


def _apply(row: AgentRow, agent: agent_pb2.Agent, paths: Sequence[str]) -> None:
    """Copy the fields named by `paths` from `agent` onto `row`."""
    for path in paths:
        if path == "name":
            row.name = agent.name
        elif path == "description":
            row.description = agent.description
        elif path == "system_prompt":
            row.system_prompt = agent.system_prompt
        elif path == "model_route":
            row.model_route = agent.model_route
        elif path == "tools":
            row.tools = json.dumps(list(agent.tools), separators=(",", ":"))
        elif path == "approval_policy":
            row.approval_policy = agent.approval_policy.SerializeToString(deterministic=True)
        elif path == "limits":
            row.limits = agent.limits.SerializeToString(deterministic=True)
        elif path == "model_params":
            row.model_params = agent.model_params.SerializeToString(deterministic=True)
        else:
            raise invalid_argument("update_mask", f"update_mask names an unknown field {path!r}")


_BY_NAME_ORDER = paging.Keyset("agents.1", (AgentRow.name, AgentRow.id), (False, False), (str, str))
_BY_ID = select(AgentRow.__table__).where(AgentRow.id == bindparam("key"), AgentRow.owner_id == bindparam("owner_id"))
_BY_NAME = select(AgentRow.__table__).where(
    AgentRow.name == bindparam("key"), AgentRow.owner_id == bindparam("owner_id")
)


class AgentRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], runner: TransactionRunner) -> None:
        self._sessions = sessions
        self._runner = runner

    async def _read_one(self, statement: Select[Any], owner_id: str, key: str) -> Row[Any] | None:
        """One agent row, read on the runner (Core, one hop): a run's start reads its agent."""
        return await self._runner.read(lambda c: c.execute(statement, {"key": key, "owner_id": owner_id}).first())

    async def create(self, owner_id: str, agent: agent_pb2.Agent, request_id: str | None) -> agent_pb2.Agent:
        """A new agent; a retry with the same request_id returns the first agent as it is now."""
        created = timeutil.now()
        row = AgentRow(id=str(uuid.uuid4()), owner_id=owner_id, request_id=request_id, create_time=created, version=1)
        _apply(row, agent, MUTABLE_FIELDS)
        row.update_time = created
        try:
            async with self._sessions() as session, session.begin():
                if request_id is not None:
                    existing = await _by_request(session, owner_id, request_id)
                    if existing is not None:
                        return agent_message(existing)
                clash = await _by_name(session, owner_id, row.name)
                if clash is not None:
                    if request_id is not None and clash.request_id == request_id:
                        return agent_message(clash)  # a concurrent retry committed between the two reads
                    raise _already_exists(row.name)
                session.add(row)
        except IntegrityError:
            # A concurrent insert won: the same retry (answer with its agent) or the same name.
            async with self._sessions() as session:
                existing = None if request_id is None else await _by_request(session, owner_id, request_id)
            if existing is not None:
                return agent_message(existing)
            raise _already_exists(row.name) from None
        return agent_message(row)

    async def get(self, owner_id: str, agent_id: str) -> agent_pb2.Agent:
        row = await self._read_one(_BY_ID, owner_id, agent_id)
        if row is None:
            raise _not_found(agent_id)
        return agent_message(row)

    async def get_by_name(self, owner_id: str, name: str) -> agent_pb2.Agent:
        row = await self._read_one(_BY_NAME, owner_id, name)
        if row is None:
            raise not_found("AGENT_NOT_FOUND", f"agent named {name!r} not found")
        return agent_message(row)

    async def list_agents(self, owner_id: str, page_token: str, limit: int) -> tuple[list[agent_pb2.Agent], str]:
        """The owner's agents by name, and the next page token ("" on the last page)."""
        query = select(AgentRow).where(AgentRow.owner_id == owner_id)
        async with self._sessions() as session:
            return await paging.read_page(session, query, _BY_NAME_ORDER, page_token, limit, agent_message)

    async def update(self, owner_id: str, agent: agent_pb2.Agent, paths: Sequence[str]) -> agent_pb2.Agent:
        """Change the fields named by `paths` (all mutable fields when empty) of the owner's agent."""
        fields = paths or MUTABLE_FIELDS
        try:
            async with self._sessions() as session, session.begin():
                row = await session.scalar(
                    select(AgentRow).where(AgentRow.id == agent.id, AgentRow.owner_id == owner_id).with_for_update()
                )
                if row is None:
                    raise _not_found(agent.id)
                renamed = "name" in fields and agent.name != row.name
                if renamed and await _by_name(session, owner_id, agent.name) is not None:
                    raise _already_exists(agent.name)
                before = agent_message(row)
                _apply(row, agent, fields)
                if _changed(before, row):
                    row.version = (row.version or 1) + 1
                    row.update_time = timeutil.now()
        except IntegrityError:
            # A concurrent create or rename took the name between the check and the commit.
            raise _already_exists(agent.name) from None
        return agent_message(row)

    async def apply(
        self, owner_id: str, agents: Sequence[agent_pb2.Agent], validate_only: bool = False
    ) -> list[tuple[agent_pb2.Agent, Outcome]]:
        """Create or replace the owner's agents by name in one transaction (see ApplyAgents in the contract): each
        agent as it is after the call and what was done to it. An unchanged agent keeps its version and times."""
        try:
            return await self._apply(owner_id, agents, validate_only)
        except IntegrityError:
            # A concurrent create took one of the names (another gateway applying the same folder): the second
            # pass finds it and compares.
            return await self._apply(owner_id, agents, validate_only)

    async def _apply(
        self, owner_id: str, agents: Sequence[agent_pb2.Agent], validate_only: bool
    ) -> list[tuple[agent_pb2.Agent, Outcome]]:
        results: list[tuple[agent_pb2.Agent, Outcome]] = []
        now = timeutil.now()
        async with self._sessions() as session:
            await session.begin()
            rows = {
                row.name: row
                for row in await session.scalars(
                    select(AgentRow)
                    .where(AgentRow.owner_id == owner_id, AgentRow.name.in_([agent.name for agent in agents]))
                    .with_for_update()
                )
            }
            for agent in agents:
                row = rows.get(agent.name)
                if row is None:
                    row = AgentRow(id=str(uuid.uuid4()), owner_id=owner_id, create_time=now, update_time=now, version=1)
                    _apply(row, agent, MUTABLE_FIELDS)
                    session.add(row)
                    results.append((agent_message(row), "created"))
                    continue
                before = agent_message(row)
                _apply(row, agent, MUTABLE_FIELDS)
                if not _changed(before, row):
                    results.append((before, "unchanged"))
                    continue
                row.version = (row.version or 1) + 1
                row.update_time = now
                results.append((agent_message(row), "updated"))
            if validate_only:
                await session.rollback()
                for agent, outcome in results:
                    if outcome == "created":
                        agent.ClearField("id")
            else:
                await session.commit()
        return results

    async def model_routes(self, max_routes: int, max_examples: int) -> tuple[list[RouteUse], bool]:
        """The distinct model routes of every user's agents, by route (at most `max_routes`), each with its agent
        count and up to `max_examples` agents by owner and name; and whether more routes exist."""
        counts = (
            select(AgentRow.model_route, func.count().label("agents"))
            .group_by(AgentRow.model_route)
            .order_by(AgentRow.model_route)
            .limit(max_routes + 1)
        )
        async with self._sessions() as session:
            found = (await session.execute(counts)).all()
            truncated = len(found) > max_routes
            found = found[:max_routes]
            if not found:
                return [], False
            ranked = select(
                AgentRow.model_route,
                AgentRow.id,
                AgentRow.name,
                AgentRow.owner_id,
                func.row_number()
                .over(partition_by=AgentRow.model_route, order_by=(AgentRow.owner_id, AgentRow.name))
                .label("rank"),
            ).where(AgentRow.model_route <= found[-1].model_route)
            ranks = ranked.subquery()
            examples = (
                await session.execute(
                    select(ranks).where(ranks.c.rank <= max_examples).order_by(ranks.c.model_route, ranks.c.rank)
                )
            ).all()
        uses = {row.model_route: RouteUse(row.model_route, row.agents, []) for row in found}
        for example in examples:
            uses[example.model_route].examples.append((example.id, example.name, example.owner_id))
        return list(uses.values()), truncated

    async def delete(self, owner_id: str, agent_id: str) -> None:
        """Delete the owner's agent; conversations keep their messages.

        Rows are removed, not tombstoned, so an id deleted before cannot be told
        from an unknown or foreign one: deleting it again answers NOT_FOUND
        (AGENT_NOT_FOUND) as well. A client retrying a delete treats that answer
        as success; the state it wanted (no such agent) holds either way.
        """
        async with self._sessions() as session, session.begin():
            row = await session.scalar(
                select(AgentRow).where(AgentRow.id == agent_id, AgentRow.owner_id == owner_id).with_for_update()
            )
            if row is None:
                raise _not_found(agent_id)
            await session.delete(row)


def _changed(before: agent_pb2.Agent, row: AgentRow) -> bool:
    """Whether applying an update changed the agent (an update that changes nothing keeps its version)."""
    after = agent_message(row)
    return before.SerializeToString(deterministic=True) != after.SerializeToString(deterministic=True)


async def _by_request(session: AsyncSession, owner_id: str, request_id: str) -> AgentRow | None:
    row: AgentRow | None = await session.scalar(
        select(AgentRow).where(AgentRow.owner_id == owner_id, AgentRow.request_id == request_id)
    )
    return row


async def _by_name(session: AsyncSession, owner_id: str, name: str) -> AgentRow | None:
    row: AgentRow | None = await session.scalar(
        select(AgentRow).where(AgentRow.owner_id == owner_id, AgentRow.name == name)
    )
    return row
