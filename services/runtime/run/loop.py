"""The agent loop: claim a run, take model steps and resolve tool calls until it ends or pauses.

One task per run this replica holds (`RunLoop.start`). The task claims the run's lease, heartbeats
it, and drives it from its last checkpoint: the conversation says which tool calls still need a
result (history.py), the run says how many steps were taken and what they cost. Each model step is
checkpointed with its assistant message; each tool result with its own message. A run ends
completed, incomplete (a limit), failed, or cancelled, or pauses for a confirmation and gives up its
lease; a decision (resume.py) or a restart starts a new task that claims it again.

A task that loses its lease (another replica claimed the run: LEASE_LOST on any write, or on the
heartbeat) stops and makes no new write; writes it had already queued are refused by the store. A
task stopped by shutdown lets its queued writes land, then releases the lease, so another replica can
go on at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import structlog
from google.protobuf.duration_pb2 import Duration

from services.runtime.agents import AgentSpec, limits_for, load_agent
from services.runtime.run import budgets, model_step, outage, steps
from services.runtime.run.confirmations import cancel_confirmations
from services.runtime.run.context import RunContext, Services, StartMode
from services.runtime.run.writer import EventWriter
from steward.auth import Principal, reset_principal, set_principal
from steward.common.v1 import content_pb2
from steward.confirm.v1 import confirm_service_pb2 as confirm_pb
from steward.confirm.v1 import confirmation_pb2
from steward.errors import Reason, StewardError
from steward.store.v1 import run_event_pb2 as ev
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb

log = structlog.get_logger(__name__)

PAUSE_SWEEP_MARGIN = 0.05  # seconds after a pause's deadline that its sweep runs (the store's clock may lag a little)


@dataclass(frozen=True)
class Known:
    """What the caller that created a run already knows of it: its agent, and its conversation's messages (None:
    read them)."""

    agent: AgentSpec
    history: list[content_pb2.ChatMessage] | None


class RunLoop:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._settings = services.settings
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop_reasons: dict[str, str] = {}
        self._handoff: dict[str, run_pb2.Run] = {}  # claims made for runs whose task was already there
        self._releasing: set[asyncio.Task[None]] = set()
        self._backlogged = False  # a run found no free slot since the last one ended
        self._freed = asyncio.Event()
        self._due = asyncio.Event()  # the deadline of a pause this replica made passed
        self._deadlines: set[asyncio.TimerHandle] = set()

    def active(self, run_id: str) -> bool:
        return run_id in self._tasks

    def driven(self) -> list[str]:
        """The runs this replica has a task for: a sweep must not claim them (ClaimRunsRequest.driven_ids), even
        when their leases expired while the store was out of reach, which would fence the tasks that drive them."""
        return list(self._tasks)

    def free_slots(self) -> int:
        """Runs this replica may still take; at none, the replica notes that runs wait (`backlog`)."""
        free = max(0, self._settings.max_active_runs - len(self._tasks))
        if not free:
            self._backlogged = True
        return free

    def note_backlog(self) -> None:
        """Runs may be waiting for a slot (a claim took as many as there were): look again when one frees."""
        self._backlogged = True

    def _sweep_at(self, seconds: float) -> None:
        """Have a sweep run `seconds` from now (just after a pause's deadline), not only at its interval."""
        handle = asyncio.get_running_loop().call_later(seconds + PAUSE_SWEEP_MARGIN, self._deadline_passed)
        self._deadlines.add(handle)

    def _deadline_passed(self) -> None:
        now = asyncio.get_running_loop().time()
        self._deadlines = {handle for handle in self._deadlines if handle.when() > now}
        self._due.set()

    async def sweep_due(self) -> None:
        """Return once a run ended while others waited for a slot (the sweep, which waits for this or for its
        interval, then claims the waiting runs at once instead of at its next interval), or once the deadline of a
        pause this replica made passed (the sweep then ends the run if it still waits)."""
        freed = asyncio.ensure_future(self._freed.wait())
        due = asyncio.ensure_future(self._due.wait())
        try:
            await asyncio.wait({freed, due}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            freed.cancel()
            due.cancel()
        self._freed.clear()
        self._due.clear()

    def _ended(self, run_id: str) -> None:
        self._tasks.pop(run_id, None)
        if self._backlogged:
            self._backlogged = False
            self._freed.set()

    def start(
        self,
        run_id: str,
        owner_id: str,
        how: StartMode,
        claimed: run_pb2.Run | None = None,
        known: Known | None = None,
    ) -> bool:
        """Drive a run in a new task (`claimed`: its claim is made; `known`: its agent and history); False when this
        replica already does, or drives as many as it may (the run then waits, queued or with its decision
        unacknowledged, for a later sweep; the caller gives back a claim it made)."""
        if run_id in self._tasks:
            if claimed is None:
                return False
            # A task for the run is starting (its own claim lost to this one) or stopping: hand it the claim.
            # A task that no longer needs it gives it back when it ends.
            self._handoff[run_id] = claimed
            return True
        if not self.free_slots():
            return False
        task = asyncio.create_task(self._execute(run_id, owner_id, how, claimed, known), name=f"run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _: self._ended(run_id))
        return True

    def cancel_local(self, run_id: str) -> bool:
        """Stop this replica's task for a run that was asked to cancel; False when it holds none."""
        task = self._tasks.get(run_id)
        if task is None:
            return False
        self._stop_reasons[run_id] = "cancel"
        task.cancel()
        return True

    async def shutdown(self) -> None:
        """Stop every task; their runs keep their state and their leases are released."""
        for run_id, task in list(self._tasks.items()):
            self._stop_reasons.setdefault(run_id, "shutdown")
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for handle in self._deadlines:
            handle.cancel()

    def give_back(self, claimed: run_pb2.Run) -> None:
        """Release a claim no task will drive, in the background, so that a sweep can take the run at once."""
        task = asyncio.create_task(self._release(claimed.id, claimed.lease_epoch))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _execute(
        self, run_id: str, owner_id: str, how: StartMode, claimed: run_pb2.Run | None, known: Known | None
    ) -> None:
        token = set_principal(Principal(owner_id))
        try:
            with structlog.contextvars.bound_contextvars(run_id=run_id):
                waiting = await self._claimed_run(run_id, how, claimed, known)
                # A decision made while the run was still on its way to pausing found no paused run to
                # resume (its claim was refused): look once more now that it is paused.
                while waiting and await self._any_decided(waiting):
                    waiting = await self._claimed_run(run_id, StartMode.RESUME, None)
        finally:
            leftover = self._handoff.pop(run_id, None)
            if leftover is not None:
                await _shielded(self._release(run_id, leftover.lease_epoch))
            reset_principal(token)
            self._stop_reasons.pop(run_id, None)

    async def _paused(self, run_id: str) -> bool:
        try:
            run = (await self._services.runs.GetRun(store_pb.GetRunRequest(id=run_id))).run
        except StewardError:
            return True  # the claim will tell
        return run.state == run_pb2.RUN_STATE_PAUSED

    async def _any_decided(self, confirmation_ids: list[str]) -> bool:
        for confirmation_id in confirmation_ids:
            try:
                reply = await self._services.confirm.GetConfirmation(
                    confirm_pb.GetConfirmationRequest(id=confirmation_id)
                )
            except StewardError:
                return False  # the sweep will find it
            if reply.confirmation.state != confirmation_pb2.CONFIRMATION_STATE_PENDING:
                return True
        return False

    async def _claimed_run(
        self, run_id: str, how: StartMode, claimed: run_pb2.Run | None, known: Known | None = None
    ) -> list[str]:
        """Claim (unless `claimed`) and drive the run (its agent and history read unless `known`); the
        confirmations it paused for, if it paused."""
        if claimed is None and how is StartMode.RESUME and not await self._paused(run_id):
            how = StartMode.RECOVER  # a decision for a run whose holder died mid-step: it is taken over, not resumed
        claimed = claimed or await self._claim(run_id)
        if claimed is None:
            return []
        epoch = claimed.lease_epoch
        driver = asyncio.current_task()
        assert driver is not None
        heartbeat = asyncio.create_task(self._heartbeat(claimed.id, epoch, driver))
        ctx: RunContext | None = None
        try:
            ctx = await self._context(claimed, known)
            await budgets.hold_run_budget(self._services.provider, claimed, ctx.limits)
            waiting = await steps.drive(ctx, how, known.history if known is not None else None)
            if ctx.pause_timeout:
                self._sweep_at(ctx.pause_timeout)  # the pause's deadline: a sweep then ends the run if it still waits
            return waiting
        except asyncio.CancelledError:
            if not await self._stopped(run_id, epoch, ctx):
                raise
        except Exception as exc:  # noqa: BLE001 - every failure ends or releases the run (`_failure`)
            await self._failure(exc, run_id, epoch, ctx)
        finally:
            if ctx is not None:
                ctx.writer.close()
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        return []

    async def _claim(self, run_id: str) -> run_pb2.Run | None:
        """The run, claimed for this replica (or the claim handed to it); None when another holds it."""
        claimed = self._handoff.pop(run_id, None)
        if claimed is not None:
            return claimed
        request = store_pb.ClaimRunRequest(
            id=run_id, holder=self._settings.replica_id, lease_ttl=Duration(seconds=self.lease_seconds())
        )
        try:
            return (await self._services.runs.ClaimRun(request)).run
        except StewardError as error:
            claimed = self._handoff.pop(run_id, None)  # refused because this replica's sweep claimed it
            if claimed is None:
                log.info("claim_refused", reason=error.reason)
            return claimed

    async def _context(self, claimed: run_pb2.Run, known: Known | None) -> RunContext:
        """Everything the claim needs: the run's agent (read unless `known`), its limits, a writer on its epoch."""
        if known is not None:
            agent = known.agent
        else:
            agent = await load_agent(self._services.agents, claimed, self._settings)
        writer = EventWriter(
            self._services.runs,
            claimed.id,
            claimed.lease_epoch,
            self._settings.text_flush_interval,
            tap=self._tap(claimed.id),
            running_ms=_running_clock(claimed),
        )
        ctx = RunContext(
            services=self._services,
            run=claimed,
            epoch=claimed.lease_epoch,
            agent=agent,
            limits=limits_for(agent, claimed, self._settings),
            writer=writer,
            mode=claimed.mode or agent.mode,
            step_count=claimed.step_count,
        )
        ctx.usage.CopyFrom(claimed.usage)
        return ctx

    async def _stopped(self, run_id: str, epoch: int, ctx: RunContext | None) -> bool:
        """The claim's driver was cancelled: record a cancel (True: done, the run ended), or release the run on
        shutdown, or, fenced, write nothing (False: the cancellation goes on)."""
        why = self._stop_reasons.get(run_id, "shutdown")
        if why == "cancel" and ctx is not None:
            await _shielded(self._cancelled(ctx))
            return True
        if why == "shutdown":
            await _shielded(self._release(run_id, epoch, ctx))
        return False

    async def _failure(self, exc: Exception, run_id: str, epoch: int, ctx: RunContext | None) -> None:
        """Map a claim's failure to the run's outcome: a failure that may pass (outage.py: a dependency away, the
        store's writes or the provider past the outage bound among them) gives the run back, from its checkpoint,
        for a later sweep; a model step's failure (`StepError`) and any other error fail it."""
        # The claim's calls outside the model step are reads or writes keyed by a request id: a deadline that
        # passed on one of them only says that its server was slow.
        fault = outage.classify(exc, idempotent=True)
        if fault.transient and not isinstance(exc, model_step.StepError):
            log.warning("run_released", reason=getattr(exc, "reason", type(exc).__name__), fault=fault.value)
            await _shielded(self._release(run_id, epoch, ctx))
            return
        if isinstance(exc, StewardError):
            await self._failed(ctx, run_id, epoch, exc)
        else:
            log.exception("run_crashed")
            await self._failed(ctx, run_id, epoch, StewardError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error"))

    def lease_seconds(self) -> int:
        return max(1, int(self._settings.lease_seconds))

    def _tap(self, run_id: str) -> Callable[[ev.RunEvent], Awaitable[None]]:
        async def tap(event: ev.RunEvent) -> None:
            await self._services.hooks.on_event(run_id, event)

        return tap

    async def _heartbeat(self, run_id: str, epoch: int, driver: asyncio.Task[None]) -> None:
        """Extend the lease every third of its length; stop the driver when the run is cancelled or fenced."""
        while True:
            await asyncio.sleep(self.lease_seconds() / 3)
            try:
                reply = await self._services.runs.HeartbeatRun(
                    store_pb.HeartbeatRunRequest(
                        id=run_id, lease_epoch=epoch, lease_ttl=Duration(seconds=self.lease_seconds())
                    )
                )
            except StewardError as error:
                if error.reason in {Reason.LEASE_LOST, Reason.RUN_NOT_FOUND}:
                    log.warning("lease_lost", epoch=epoch)
                    self._stop_reasons[run_id] = "fenced"
                    driver.cancel()
                    return
                log.warning("heartbeat_failed", reason=error.reason)
                continue
            if reply.cancel_requested:
                self._stop_reasons[run_id] = "cancel"
                driver.cancel()
                return

    async def _release(self, run_id: str, epoch: int, ctx: RunContext | None = None) -> None:
        if ctx is not None:
            await ctx.writer.abandon()  # the writes in flight land (or fail) before the lease is given up
        with contextlib.suppress(StewardError):
            await self._services.runs.ReleaseRun(store_pb.ReleaseRunRequest(id=run_id, lease_epoch=epoch))

    async def _cancelled(self, ctx: RunContext) -> None:
        log.info("run_cancelled")
        try:
            await self._last_write(
                ctx,
                store_pb.CheckpointRunRequest(
                    run_id=ctx.run_id,
                    lease_epoch=ctx.epoch,
                    events=[ev.RunEvent(run_cancelled=ev.RunCancelled(cancelled_by="user"))],
                    state=run_pb2.RUN_STATE_CANCELLED,
                    request_id=f"{ctx.run_id}/cancelled",
                ),
            )
            await cancel_confirmations(ctx.services, ctx.run_id)
        except StewardError as error:
            log.warning("cancel_not_recorded", reason=error.reason)

    async def _failed(self, ctx: RunContext | None, run_id: str, epoch: int, error: StewardError) -> None:
        if error.reason == Reason.LEASE_LOST:
            log.warning("fenced", epoch=epoch)  # another replica holds the run: write nothing more
            return
        transient = outage.classify(error, idempotent=False).transient
        run_error = run_pb2.RunError(reason=error.reason, message=error.message, transient=transient)
        log.warning("run_failed", reason=error.reason, transient=transient)
        try:
            await self._last_write(
                ctx,
                store_pb.CheckpointRunRequest(
                    run_id=run_id,
                    lease_epoch=epoch,
                    events=[ev.RunEvent(run_failed=ev.RunFailed(error=run_error))],
                    state=run_pb2.RUN_STATE_FAILED,
                    error=run_error,
                    request_id=f"{run_id}/{epoch}/failed",
                ),
            )
            await cancel_confirmations(self._services, run_id)
        except StewardError as failure:
            log.error("run_fail_not_recorded", reason=failure.reason)

    async def _last_write(self, ctx: RunContext | None, request: store_pb.CheckpointRunRequest) -> None:
        """A claim's last checkpoint, made directly (the writer may have failed): the writes in flight land first,
        and what the writer still buffers goes ahead of the request's events."""
        if ctx is not None:
            events = [*await ctx.writer.abandon(), *request.events]
            del request.events[:]
            request.events.extend(events)
        reply = await self._services.runs.CheckpointRun(request)
        for offset, event in enumerate(request.events):
            event.seq = reply.last_event_seq - len(request.events) + 1 + offset
            await self._services.hooks.on_event(request.run_id, event)


async def _shielded(work: Awaitable[None]) -> None:
    """Finish `work` even though the calling task is being cancelled."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task


def _running_clock(claimed: run_pb2.Run) -> Callable[[], int]:
    """The run's running time in milliseconds: what earlier claims checkpointed, plus this claim's so far."""
    before, since = claimed.running_time.ToMilliseconds(), time.monotonic()
    return lambda: before + int((time.monotonic() - since) * 1000)
