"""Usage queries: the caller's usage records, and sums grouped by user, agent, run or day."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.provider.db.usage import UsageRepository, UsageWindow
from steward import paging
from steward.errors import invalid_argument
from steward.provider.v1 import provider_service_pb2 as pb
from steward.provider.v1 import usage_record_pb2

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(value: int) -> int:
    """The provider's page sizes (steward.paging's rule)."""
    return paging.page_size(value, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class UsageQueries:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._usage = UsageRepository(sessions, page_size)

    async def records(
        self, owner_id: str, request: pb.ListUsageRecordsRequest
    ) -> tuple[list[usage_record_pb2.UsageRecord], str]:
        window = UsageWindow(request.run_id, request.agent_id, request.start_time, request.end_time)
        return await self._usage.records(owner_id, window, request.page_token, request.page_size)

    async def summarize(
        self, owner_id: str, request: pb.SummarizeUsageRequest
    ) -> tuple[list[usage_record_pb2.UsageSummary], str]:
        groups = set(request.group_by) or {usage_record_pb2.USAGE_GROUP_BY_USER}
        if usage_record_pb2.USAGE_GROUP_BY_UNSPECIFIED in groups:
            raise invalid_argument("group_by", "unknown grouping")
        window = UsageWindow(request.run_id, request.agent_id, request.start_time, request.end_time)
        return await self._usage.summarize(owner_id, window, groups, request.page_token, request.page_size)
