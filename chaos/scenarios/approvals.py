"""F4: the confirm service killed while runs wait for a person, and decisions made during the outage.

Runs ask to create a note (a write: each waits for a decision). With confirm killed, listing and deciding answer 503
with `Retry-After` and a detail that names no address, port or gRPC message, and decide nothing. Confirm starts
again: every confirmation is still pending, each is approved once, every run completes, and each note exists once
(the notes server's own table is the ledger of effects).
"""

from __future__ import annotations

import asyncio

from chaos.drive import client_for, create_writer_agent, eventually, follow, notes_titled, problem_leaks, start_runs
from chaos.scenario import Context, Result, scenario
from chaos.stack import StackOptions, process_stack
from steward.client import StewardAPIError


@scenario("F4", "kill -9 confirm while runs wait for decisions; decide during the outage and after")
async def confirm_killed(context: Context, result: Result) -> None:
    count = context.scale.runs
    options = StackOptions(database_url=context.database_url)
    async with process_stack(context.data_dir, options) as stack, client_for(stack) as client:
        agent_id = await create_writer_agent(stack)
        runs = await start_runs(client, count, lambda index: f"create_note [chaos-{index}]", agent_id=agent_id)
        follow(client, runs)
        parked = await eventually(lambda: all(run.count("confirmation_requested") for run in runs), 60)
        result.expect(parked, "not every run asked for a decision within 60 s")
        pending = [item async for item in client.confirmations.list()]
        result.figure("pending", len(pending))

        await stack.crash("confirm")
        # All at once: each waits the gateway's reconnect_wait for confirm before it is answered.
        calls = [client.confirmations.decide(confirmation.id, "approve") for confirmation in pending]
        answers = await asyncio.gather(*calls, client.confirmations.page(), return_exceptions=True)
        problems = [answer for answer in answers if isinstance(answer, StewardAPIError)]
        succeeded = [answer for answer in answers if not isinstance(answer, BaseException)]
        result.expect(not succeeded, f"{len(succeeded)} calls succeeded while confirm was away")
        others = [answer for answer in answers if isinstance(answer, BaseException) and answer not in problems]
        result.expect(not others, f"calls during the outage raised {others[:3]}")
        statuses = sorted({error.status for error in problems})
        result.figure("answers_during_outage", ",".join(map(str, statuses)))
        result.expect(statuses == [503], f"answers during the outage were {statuses}, not 503")
        without_retry_after = sum(1 for error in problems if error.retry_after is None)
        result.expect(without_retry_after == 0, f"{without_retry_after} 503s carried no Retry-After")
        leaks = problem_leaks(problems)
        result.figure("leaking_details", len(leaks))
        result.expect(not leaks, f"problem details leaked: {leaks[:3]}")

        await asyncio.sleep(context.scale.outage)
        await stack.start("confirm")
        still = [item async for item in client.confirmations.list()]
        result.expect(len(still) == len(pending), f"{len(still)} of {len(pending)} confirmations pending after it")
        for confirmation in still:
            await client.confirmations.decide(confirmation.id, "approve")
        ended = await eventually(lambda: all(run.ended or run.error for run in runs), 60)
        result.expect(ended, "some runs had not ended 60 s after the decisions")
        completed = sum(1 for run in runs if run.end_type == "run_completed")
        effects = [notes_titled(stack, f"[chaos-{index}]") for index in range(count)]
        result.figure("completed", completed)
        result.figure("effects", sum(effects))
        result.expect(completed == count, f"{count - completed} of {count} runs did not complete")
        result.expect(effects == [1] * count, f"notes created per run: {effects} (each must be exactly 1)")
