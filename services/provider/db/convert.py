"""Conversions from the provider service's rows to the contract's messages."""

from __future__ import annotations

from services.provider.db.models import BudgetRow, UsageRecordRow
from steward import timeutil
from steward.common.v1 import usage_pb2
from steward.provider.v1 import budget_pb2, usage_record_pb2


def usage_record_message(row: UsageRecordRow) -> usage_record_pb2.UsageRecord:
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
            cost_unknown=row.cost_unknown,
        ),
    )
    record.create_time.FromDatetime(timeutil.aware(row.create_time))
    return record


def budget_message(row: BudgetRow) -> budget_pb2.Budget:
    budget = budget_pb2.Budget(
        scope=row.scope,
        scope_id=row.scope_id,
        limit_micros=row.limit_micros,
        period=row.period,
        spent_micros=row.spent_micros,
        reserved_micros=row.reserved_micros,
    )
    budget.period_start_time.FromDatetime(timeutil.aware(row.period_start_time))
    budget.update_time.FromDatetime(timeutil.aware(row.update_time))
    return budget
