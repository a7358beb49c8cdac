"""Group commit for usage rows.

Concurrent calls each need their usage row durable before their stream ends;
written one transaction each, they queue behind SQLite's single writer. Here
every caller hands its row to one writer task and awaits that row's commit:
the writer inserts whatever has queued up meanwhile in one transaction
(`db.usage.UsageInserts`). An idle system commits each row at once; a busy one
commits many per transaction. On SQLite a batch is one thread hop on a
synchronous connection (aiosqlite would hop per statement: a few milliseconds
at the end of every stream).
"""

from __future__ import annotations

import asyncio
import contextlib

from services.provider.db.usage import NewUsageRecord, UsageInserts

MAX_BATCH = 500


class UsageWriter:
    def __init__(self, inserts: UsageInserts) -> None:
        self._inserts = inserts
        self._queue: asyncio.Queue[tuple[NewUsageRecord, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def write(self, row: NewUsageRecord) -> None:
        """Queue one row and return once it is committed (raising if its batch failed)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="usage-writer")
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((row, committed))
        await asyncio.shield(committed)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < MAX_BATCH:
                batch.append(self._queue.get_nowait())
            try:
                await self._inserts.insert([row for row, _ in batch])
            except Exception as error:  # noqa: BLE001 - every waiter gets the failure
                for _, committed in batch:
                    if not committed.done():
                        committed.set_exception(error)
            else:
                for _, committed in batch:
                    if not committed.done():
                        committed.set_result(None)
            for _ in batch:
                self._queue.task_done()

    async def close(self) -> None:
        """Stop the writer once everything queued is committed."""
        if self._task is not None and not self._task.done():
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._inserts.close()
