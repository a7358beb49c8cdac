"""Load for the scenarios, through the HTTP API and the Python client as a user drives it: runs started in their own
conversations, each followed by a self-resuming event stream that records when every event arrived; and the checks
every scenario makes on what the client saw and what the store kept."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from chaos.stack import ProcessStack
from gateway.leaks import leak
from steward.client import AsyncClient, RunEvent, StewardAPIError, StreamPolicy, UnavailableError

__all__ = [
    "Followed",
    "answer",
    "client_for",
    "create_writer_agent",
    "eventually",
    "follow",
    "log_faults",
    "notes_titled",
    "problem_leaks",
    "start_runs",
    "text_after_last_restart",
]

# A follower that outlives any scenario's outage: it keeps resuming as long as events come within two minutes.
PATIENT = StreamPolicy(max_attempts=1000, max_elapsed=120.0, initial_backoff=0.1, max_backoff=1.0, read_timeout=45.0)


def client_for(stack: ProcessStack) -> AsyncClient:
    return AsyncClient(stack.url, stack.dev_token, timeout=30.0, stream_policy=PATIENT)


@dataclass
class Followed:
    """What a client saw of one run: its events and when each arrived (time.monotonic())."""

    run_id: str
    conversation_id: str
    events: list[RunEvent] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    error: str = ""
    task: asyncio.Task[None] | None = None
    create_attempts: int = 1  # the create was sent this many times (answered 503 before the last)

    @property
    def ended(self) -> bool:
        return bool(self.events) and self.events[-1].is_end

    @property
    def end_type(self) -> str:
        return self.events[-1].type if self.ended else ""

    def first_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the first event that arrived after it, or None."""
        return next((arrival - moment for arrival in self.arrivals if arrival > moment), None)

    def count(self, kind: str) -> int:
        return sum(1 for event in self.events if event.type == kind)


CREATE_ATTEMPTS = 10


async def start_runs(
    client: AsyncClient, count: int, content: str | Callable[[int], str] = "hello", agent_id: str | None = None
) -> list[Followed]:
    """`count` runs, each in a new conversation, all at once; `content` is the message, or makes run i's. Each
    create carries an idempotency key and is sent again with it, after the answer's Retry-After, when it was
    answered 503 (a create that may have been made: the same run comes back), as a client that must not lose or
    double a run does."""

    async def one(index: int) -> Followed:
        conversation = await client.conversations.create(f"chaos {index}")
        key = str(uuid.uuid4())
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                text = content if isinstance(content, str) else content(index)
                started = await client.runs.create(conversation.id, text, agent_id=agent_id, idempotency_key=key)
            except UnavailableError as error:
                if attempt == CREATE_ATTEMPTS:
                    raise
                await asyncio.sleep(error.retry_after if error.retry_after is not None else 1.0)
                continue
            return Followed(started.run.id, conversation.id, create_attempts=attempt)
        raise AssertionError("unreachable")

    return list(await asyncio.gather(*(one(index) for index in range(count))))


def follow(client: AsyncClient, runs: list[Followed]) -> None:
    """Follow each run's events in the background until its end event."""

    async def read(run: Followed) -> None:
        try:
            async for event in client.runs.events(run.run_id):
                run.events.append(event)
                run.arrivals.append(time.monotonic())
        except Exception as exc:  # noqa: BLE001 - recorded: the scenario reports it as a failure
            run.error = f"{type(exc).__name__}: {exc}"

    for run in runs:
        run.task = asyncio.create_task(read(run))


async def eventually(check: Callable[[], bool | Awaitable[bool]], within: float, every: float = 0.05) -> bool:
    """True as soon as `check` holds, False if it did not within `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every)


def log_faults(seqs: list[int]) -> tuple[int, int]:
    """(gaps, duplicates) in a run's event sequence numbers, which must be 1, 2, 3, ..."""
    gaps = duplicates = 0
    expected = 1
    for seq in seqs:
        if seq < expected:
            duplicates += 1
            continue
        gaps += seq - expected
        expected = seq + 1
    return gaps, duplicates


def text_after_last_restart(events: list[RunEvent]) -> str:
    """The answer as a reader builds it: text deltas, dropping a restarted step's partial output."""
    text = ""
    for event in events:
        if event.type == "step_restarted":
            text = ""
        elif event.type == "text_delta":
            text += str(event.data.get("text", ""))
    return text


async def answer(client: AsyncClient, conversation_id: str) -> list[str]:
    """The text of each assistant message stored in the conversation."""
    texts = []
    async for message in client.messages.list(conversation_id):
        if message.role == "assistant":
            texts.append("".join(block.text or "" for block in message.content if block.type == "text"))
    return texts


def problem_leaks(errors: list[StewardAPIError]) -> list[str]:
    """Every problem whose detail shows an address, a port, a gRPC message, a trace or a path."""
    found = []
    for error in errors:
        shown = leak(error.detail or "")
        if shown is not None:
            found.append(f"{error.status} {error.reason}: {shown}")
    return found


async def create_writer_agent(stack: ProcessStack, name: str = "chaos-writer") -> str:
    """An interactive agent on the demo model with the example notes tools: a message naming `create_note` makes
    it call that write tool, which waits for a person's decision. Its id."""
    body = {
        "name": name,
        "system_prompt": "You keep notes.",
        "model_route": "demo",
        "tools": ["notes.*"],
        "approval_policy": {"mode": "interactive"},
    }
    headers = {"Authorization": f"Bearer {stack.dev_token}"}
    async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=30.0) as http:
        response = await http.post("/api/v1/agents", json=body)
        response.raise_for_status()
        return str(response.json()["id"])


def notes_titled(stack: ProcessStack, marker: str) -> int:
    """How many notes the example notes server holds whose title contains `marker` (its ledger of effects)."""
    with contextlib.closing(sqlite3.connect(stack.data_dir / "notes.db")) as db:
        row = db.execute("SELECT count(*) FROM notes WHERE title LIKE ?", (f"%{marker}%",)).fetchone()
    return int(row[0])
