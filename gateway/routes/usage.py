"""The caller's usage: /api/v1/usage/records and /api/v1/usage/summary, over the provider's usage ledger.

Every upstream attempt of a model call is one record (tokens and cost, whatever its outcome). Both routes
take the same filters as query parameters: `run_id`, `agent_id`, `start_time` (inclusive) and `end_time`
(exclusive), the times RFC 3339 with an offset. The summary sums the records in groups: `group_by` is a
comma-separated list of `user`, `agent`, `run`, `day` (UTC) and `model` (provider and model). Both are paged
(`page_size`, `page_token`). A usage's `cost_unknown` says some of its tokens were on a model with no price
(ADR 0022): its `cost_micros` counts the priced tokens only.
The provider service scopes everything by the caller, so ids of another user's runs or agents find nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp

from gateway import presenters
from gateway.app_keys import CLIENTS
from gateway.bodies import field_error, page
from steward.provider.v1 import key_pb2, usage_record_pb2
from steward.provider.v1 import provider_service_pb2 as provider_pb

routes = web.RouteTableDef()

GROUPS = {
    "user": usage_record_pb2.USAGE_GROUP_BY_USER,
    "agent": usage_record_pb2.USAGE_GROUP_BY_AGENT,
    "run": usage_record_pb2.USAGE_GROUP_BY_RUN,
    "day": usage_record_pb2.USAGE_GROUP_BY_DAY,
    "model": usage_record_pb2.USAGE_GROUP_BY_MODEL,
}
_KEY_SCOPES = {key_pb2.KEY_SCOPE_USER: "user", key_pb2.KEY_SCOPE_INSTANCE: "instance"}


def _outcome(value: usage_record_pb2.AttemptOutcome.ValueType) -> str | None:
    name = usage_record_pb2.AttemptOutcome.Name(value)
    short = name.removeprefix("ATTEMPT_OUTCOME_").lower()
    return None if short == "unspecified" else short


def record_json(record: usage_record_pb2.UsageRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "user_id": record.user_id,
        "key_scope": _KEY_SCOPES.get(record.key_scope),
        "agent_id": record.agent_id or None,
        "run_id": record.run_id or None,
        "step": record.step,
        "request_id": record.request_id or None,
        "route": record.route or None,
        "provider": record.provider,
        "model": record.model,
        "attempt": record.attempt,
        "outcome": _outcome(record.outcome),
        "error_reason": record.error_reason or None,
        "usage": presenters.usage_json(record.usage),
        "create_time": presenters.time_json(record.create_time),
    }


def summary_json(summary: usage_record_pb2.UsageSummary, groups: set[str]) -> dict[str, Any]:
    """One group's sums; the key of a dimension not grouped by is null (so is agent_id or run_id for calls
    outside runs)."""

    def key(name: str, value: str) -> str | None:
        return (value or None) if name in groups else None

    return {
        "user_id": key("user", summary.user_id),
        "agent_id": key("agent", summary.agent_id),
        "run_id": key("run", summary.run_id),
        "day": key("day", summary.day),
        "provider": key("model", summary.provider),
        "model": key("model", summary.model),
        "attempt_count": summary.attempt_count,
        "usage": presenters.usage_json(summary.usage),
    }


def _time(request: web.Request, name: str) -> Timestamp | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    # Stays: the document's `format: date-time` is not asserted by the validator (JSON Schema formats annotate).
    try:
        when = datetime.fromisoformat(raw)
        if when.tzinfo is None:
            raise field_error(name, "must carry a UTC offset (for example 2026-01-01T00:00:00Z)")
        stamp = Timestamp()
        stamp.FromDatetime(when)
    except (ValueError, OverflowError) as exc:
        raise field_error(name, "must be an RFC 3339 timestamp (for example 2026-01-01T00:00:00Z)") from exc
    return stamp


def _filters(request: web.Request) -> dict[str, Any]:
    """The filters both routes take, as request message fields."""
    filters: dict[str, Any] = {"run_id": request.query.get("run_id", ""), "agent_id": request.query.get("agent_id", "")}
    for name in ("start_time", "end_time"):
        stamp = _time(request, name)
        if stamp is not None:
            filters[name] = stamp
    return filters


def _groups(request: web.Request) -> list[str]:
    raw = request.query.get("group_by", "")
    names = raw.split(",") if raw else []  # the document's pattern allows only known names, comma-separated
    if len(set(names)) != len(names):  # stays: the pattern does not say "distinct"
        raise field_error("group_by", f"must be a comma-separated list of distinct {', '.join(GROUPS)}")
    return names


@routes.get("/api/v1/usage/records")
async def list_usage_records(request: web.Request) -> web.Response:
    """The caller's usage records, oldest first."""
    page_size, page_token = page(request)
    reply = await request.app[CLIENTS].provider.ListUsageRecords(
        provider_pb.ListUsageRecordsRequest(page_size=page_size, page_token=page_token, **_filters(request))
    )
    return web.json_response(
        {"records": [record_json(r) for r in reply.records], "next_page_token": reply.next_page_token or None}
    )


@routes.get("/api/v1/usage/summary")
async def summarize_usage(request: web.Request) -> web.Response:
    """The caller's usage summed per group (`group_by`); no grouping sums everything into one row."""
    groups = _groups(request)
    page_size, page_token = page(request)
    reply = await request.app[CLIENTS].provider.SummarizeUsage(
        provider_pb.SummarizeUsageRequest(
            group_by=[GROUPS[name] for name in groups], page_size=page_size, page_token=page_token, **_filters(request)
        )
    )
    return web.json_response(
        {
            "group_by": groups,
            "summaries": [summary_json(s, set(groups)) for s in reply.summaries],
            "next_page_token": reply.next_page_token or None,
        }
    )
