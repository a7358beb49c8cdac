"""Bringing runs back: decided confirmations resume paused runs; expired leases are taken over; paused runs past
their pause deadline end expired.

Every replica follows the confirm service's decision feed (WatchDecisions) and, on start, whenever
the feed is open again after a break (once its position is fixed) and every `sweep_interval`
seconds, also sweeps: ListDecidedConfirmations for decisions
whose runs still wait (so none is lost if the feed broke), and ClaimRuns for runs nobody drives
(queued runs whose replica died before starting them, running runs whose lease expired). For each,
the run is started in this replica's loop unless it already drives it; its claim decides which
replica wins, and the others' claims are refused.

Each sweep also asks the store to end the paused runs whose pause deadline passed (ExpirePausedRuns, ADR 0018):
the store moves each to expired with its run_expired event in one transaction, under the run's row lock and with
a new epoch, so however many replicas sweep at once each run expires once, and a claim that resumes it either
comes first (the run goes on) or is refused. The deadline is stored with the run, so a restart loses none; a
replica that paused a run also sweeps at that pause's deadline, not only at its interval. The expired run's
pending confirmations are then cancelled (best effort, as for a cancelled run).

At start-up, before it serves, a replica takes back the runs its name still holds (`reclaim`): a
restarted replica that kept its name (identity.py) goes on with them at once, fencing its previous
start, instead of leaving them silent until their leases expire. Only then, when it drives none of
them, may it ask for its own live leases; the periodic sweeps never do.

The feed and the sweeps act as the runtime service itself (no user); a resumed run acts for its
owner.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine

import structlog
from google.protobuf.duration_pb2 import Duration

from services.runtime.run.confirmations import cancel_confirmations
from services.runtime.run.context import Services, StartMode
from services.runtime.run.loop import RunLoop
from steward.auth import Principal, reset_principal, service_principal, set_principal
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2
from steward.errors import Reason, StewardError
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb

log = structlog.get_logger(__name__)

CLAIM_BATCH = 16
EXPIRY_BATCH = 50
RETRY_SECONDS = 1.0


class Resumer:
    def __init__(self, services: Services, loop: RunLoop) -> None:
        self._services = services
        self._loop = loop
        self._tasks: list[asyncio.Task[None]] = []
        self._cursor = ""

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._as_service(self._watch()), name="decision-feed"),
            asyncio.create_task(self._as_service(self._sweeps()), name="run-sweeps"),
        ]

    async def reclaim(self, within: float) -> None:
        """Take back the runs this replica's name holds (a previous start died holding them), within `within`
        seconds: a store that does not answer leaves them to the sweeps once their leases expire."""
        token = set_principal(service_principal("runtime"))
        try:
            async with asyncio.timeout(within):
                while await self.claim_orphans(reclaim_held=True) and self._loop.free_slots():
                    pass  # a full batch was claimed and slots are left: the next batch
        except (StewardError, TimeoutError) as error:
            log.warning("reclaim_failed", reason=getattr(error, "reason", "TIMEOUT"))
        finally:
            reset_principal(token)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @staticmethod
    async def _as_service(work: Coroutine[object, object, None]) -> None:
        token = set_principal(service_principal("runtime"))
        try:
            await work
        finally:
            reset_principal(token)

    def _resume(self, confirmation: confirmation_pb2.Confirmation) -> None:
        if confirmation.state in (
            confirmation_pb2.CONFIRMATION_STATE_APPROVED,
            confirmation_pb2.CONFIRMATION_STATE_REJECTED,
            confirmation_pb2.CONFIRMATION_STATE_EXPIRED,
        ):
            self._loop.start(confirmation.run_id, confirmation.user_id, StartMode.RESUME)

    async def _watch(self) -> None:
        owed = True  # a sweep for what was decided while no stream was open (at start, and after every break)
        while True:
            stream = self._services.confirm.WatchDecisions(confirm_pb.WatchDecisionsRequest(after_cursor=self._cursor))
            try:
                # The headers come once the stream's position in the feed is fixed: a sweep from then on finds
                # what was decided before it, and the stream brings what is decided after.
                await stream.initial_metadata()
                if owed:
                    owed = not await self.sweep_decisions()
                async for entry in stream:
                    self._cursor = entry.cursor
                    self._resume(entry.confirmation)
            except StewardError as error:
                if error.reason == Reason.CURSOR_EXPIRED:
                    self._cursor = ""  # the sweep covers what the feed no longer holds
                log.info("decision_feed_broken", reason=error.reason)
            finally:
                stream.cancel()  # stopped while waiting (the replica's shutdown): the call ends with it
            owed = True
            await asyncio.sleep(RETRY_SECONDS)

    async def _sweeps(self) -> None:
        while True:
            more = False
            with contextlib.suppress(StewardError):
                more = await self.claim_orphans()  # first: a decided run whose holder died is taken over, not resumed
            if more and self._loop.free_slots():
                continue  # a full batch was claimed and slots are left: claim the next batch now
            with contextlib.suppress(StewardError):
                await self.sweep_decisions()
            await self.expire_paused()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._services.settings.sweep_interval):
                    await self._loop.sweep_due()

    async def sweep_decisions(self) -> bool:
        """Resume every run whose confirmation was decided but not yet consumed; whether the sweep went through."""
        token = ""
        try:
            while True:
                page = await self._services.confirm.ListDecidedConfirmations(
                    confirm_pb.ListDecidedConfirmationsRequest(page_size=200, page_token=token)
                )
                for confirmation in page.confirmations:
                    self._resume(confirmation)
                token = page.next_page_token
                if not token:
                    return True
        except StewardError as error:
            log.info("decision_sweep_failed", reason=error.reason)
            return False

    async def expire_paused(self) -> None:
        """End the paused runs whose pause deadline passed (the store ends each exactly once, whichever replica asks:
        ExpirePausedRuns), then cancel their pending confirmations and show their run_expired events to the hooks."""
        try:
            while True:
                reply = await self._services.runs.ExpirePausedRuns(
                    store_pb.ExpirePausedRunsRequest(max_runs=EXPIRY_BATCH)
                )
                for run, event in zip(reply.runs, reply.events, strict=True):
                    await self._expired_as_owner(run, event)
                if len(reply.runs) < EXPIRY_BATCH:
                    return
        except StewardError as error:
            log.info("expiry_sweep_failed", reason=error.reason)

    async def _expired_as_owner(self, run: run_pb2.Run, event: ev.RunEvent) -> None:
        reason = run_pb2.PauseReason.Name(event.run_expired.reason)
        log.info("run_expired", run_id=run.id, waited_for=reason, epoch=run.lease_epoch)
        token = set_principal(Principal(run.owner_id))
        try:
            await cancel_confirmations(self._services, run.id, "run expired")  # best effort: a failure is logged
            await self._services.hooks.on_event(run.id, event)
        finally:
            reset_principal(token)

    async def _release_as_owner(self, run: run_pb2.Run) -> None:
        token = set_principal(Principal(run.owner_id))
        try:
            release = store_pb.ReleaseRunRequest(id=run.id, lease_epoch=run.lease_epoch)
            await self._services.runs.ReleaseRun(release)
        except StewardError as error:
            log.warning("release_failed", run_id=run.id, reason=error.reason)
        finally:
            reset_principal(token)

    async def claim_orphans(self, *, reclaim_held: bool = False) -> bool:
        """Claim runs nobody drives (queued and never started, or running under an expired lease; with
        `reclaim_held`, also those this replica's name holds); whether more may be waiting (the claim took as many
        as it asked for)."""
        settings = self._services.settings
        slots = min(CLAIM_BATCH, self._loop.free_slots())
        if not slots:
            return True  # this replica drives as many runs as it may; others (or a later sweep) take these
        reply = await self._services.runs.ClaimRuns(
            store_pb.ClaimRunsRequest(
                holder=settings.replica_id,
                max_runs=slots,
                lease_ttl=Duration(seconds=settings.lease_seconds),
                reclaim_held=reclaim_held,
                driven_ids=self._loop.driven(),
            )
        )
        if len(reply.runs) == slots:
            self._loop.note_backlog()  # the claim filled every free slot: more may wait
        for run in reply.runs:
            log.info("run_taken_over", run_id=run.id, epoch=run.lease_epoch, reclaim=reclaim_held)
            if not self._loop.start(run.id, run.owner_id, StartMode.RECOVER, claimed=run):
                # This replica drives as many runs as it may: hand the run back for a later sweep.
                await self._release_as_owner(run)
        return len(reply.runs) == slots
