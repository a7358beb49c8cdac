"""Keyset paging in the confirm service: a list read while rows are inserted neither skips nor repeats a row."""

from __future__ import annotations

from steward.confirm.v1 import confirm_service_pb2 as pb
from tests.confirm.conftest import ConfirmUnderTest
from tests.support.paging import Page, assert_each_once, read_while_inserting

ROWS = 7
PAGE_SIZE = 2


async def test_confirmations_newest_first_survive_inserts(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()

    async def create() -> str:
        return (await confirm.create(alice)).id

    existing = [await create() for _ in range(ROWS)]

    async def read(token: str) -> Page:
        request = pb.ListConfirmationsRequest(page_size=PAGE_SIZE, page_token=token)
        reply = await confirm.stub.ListConfirmations(request, metadata=alice.me)
        return [item.id for item in reply.confirmations], reply.next_page_token

    seen = await read_while_inserting(read, create)
    assert_each_once(seen, existing)
    assert seen == list(reversed(existing))  # the new ones sort before the first page: none is read


async def test_audit_events_survive_inserts(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()
    for _ in range(ROWS):
        await confirm.create(alice)

    async def read(token: str) -> Page:
        request = pb.ListAuditEventsRequest(run_id=alice.run_id, page_size=PAGE_SIZE, page_token=token)
        reply = await confirm.stub.ListAuditEvents(request, metadata=alice.me)
        return [item.id for item in reply.audit_events], reply.next_page_token

    everything = pb.ListAuditEventsRequest(run_id=alice.run_id, page_size=500)
    existing = [item.id for item in (await confirm.stub.ListAuditEvents(everything, metadata=alice.me)).audit_events]
    assert existing
    assert_each_once(await read_while_inserting(read, lambda: confirm.create(alice)), existing)


async def test_the_sweep_survives_new_decisions(confirm: ConfirmUnderTest) -> None:
    alice = confirm.person()

    async def decided() -> str:
        created = await confirm.create(alice)
        return (await confirm.decide(alice, created.id, {"outcome": "reject"})).id

    existing = [await decided() for _ in range(ROWS)]

    async def read(token: str) -> Page:
        request = pb.ListDecidedConfirmationsRequest(page_size=PAGE_SIZE, page_token=token)
        reply = await confirm.stub.ListDecidedConfirmations(request, metadata=confirm.feed())
        return [item.id for item in reply.confirmations], reply.next_page_token

    assert_each_once(await read_while_inserting(read, decided), existing)
