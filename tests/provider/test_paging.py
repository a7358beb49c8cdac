"""Keyset paging of usage: records and summaries read while usage is recorded neither skip nor repeat a row."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fakes.upstream import FakeUpstream, Reply
from steward.provider.v1 import provider_service_pb2 as pb
from steward.provider.v1 import usage_record_pb2
from tests.provider.harness import Metadata, ProviderUnderTest, ask, provider_for
from tests.support.backends import BACKENDS, drop_database_url, fresh_database_url
from tests.support.paging import Page, assert_each_once, read_while_inserting

ROWS = 7
PAGE_SIZE = 2


@pytest.fixture(params=BACKENDS)
async def provider(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream, tmp_path: Path
) -> AsyncIterator[ProviderUnderTest]:
    url = await fresh_database_url(request.param, tmp_path, "provider.db")
    fake_upstream.default = Reply(text="ok", input_tokens=3, output_tokens=2)
    try:
        async with provider_for(fake_upstream, tmp_path, database_url=url) as running:
            yield running
    finally:
        await drop_database_url(url)


async def _user(provider: ProviderUnderTest) -> Metadata:
    user = provider.user()
    await provider.stub.PutKey(
        pb.PutKeyRequest(provider="fake-anthropic", secret="sk-paging-000000000000"), metadata=user
    )
    return user


async def test_usage_records_survive_new_usage(provider: ProviderUnderTest) -> None:
    user = await _user(provider)

    async def call() -> None:
        await provider.collect(ask(run_id="run-1"), user)

    for _ in range(ROWS):
        await call()
    everything = await provider.stub.ListUsageRecords(pb.ListUsageRecordsRequest(page_size=500), metadata=user)
    existing = [record.id for record in everything.records]
    assert len(existing) == ROWS

    async def read(token: str) -> Page:
        request = pb.ListUsageRecordsRequest(page_size=PAGE_SIZE, page_token=token)
        reply = await provider.stub.ListUsageRecords(request, metadata=user)
        return [record.id for record in reply.records], reply.next_page_token

    seen = await read_while_inserting(read, call)
    assert_each_once(seen, existing)
    assert seen[:ROWS] == existing


async def test_usage_summaries_survive_new_groups_that_sort_first(provider: ProviderUnderTest) -> None:
    user = await _user(provider)
    counter = itertools.count()

    async def call(prefix: str) -> None:
        await provider.collect(ask(run_id=f"{prefix}-{next(counter):03d}"), user)

    for _ in range(ROWS):
        await call("run-m")
    by_run = [usage_record_pb2.USAGE_GROUP_BY_RUN]
    everything = await provider.stub.SummarizeUsage(pb.SummarizeUsageRequest(group_by=by_run), metadata=user)
    existing = [summary.run_id for summary in everything.summaries]
    assert len(existing) == ROWS

    async def read(token: str) -> Page:
        request = pb.SummarizeUsageRequest(group_by=by_run, page_size=PAGE_SIZE, page_token=token)
        reply = await provider.stub.SummarizeUsage(request, metadata=user)
        return [summary.run_id for summary in reply.summaries], reply.next_page_token

    seen = await read_while_inserting(read, lambda: call("run-a"))
    assert_each_once(seen, existing)
    assert seen == existing  # the new runs sort before the first page: none is read


async def test_keys_page_in_the_tokens_order_whatever_the_databases_collation(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    # Names a linguistic collation orders otherwise than code points do (it skips '-' and '_' at first): the
    # Postgres database collates that way, as a glibc en_US one would.
    names = ["fake-openai", "fakeanthropic", "fake_b", "fakez", "fake-a"]
    upstream = {"protocol": "openai", "base_url": fake_upstream.openai_base_url}
    routes = tmp_path / "many-upstreams.json"
    routes.write_text(json.dumps({"upstreams": dict.fromkeys(names, upstream), "routes": {}}))
    for backend in BACKENDS:
        url = await fresh_database_url(backend, tmp_path, f"keys-{backend}.db", icu_locale="en-US-u-ka-shifted")
        try:
            async with provider_for(fake_upstream, tmp_path, database_url=url, routes_file=routes) as provider:
                user = provider.user()
                for name in names:
                    await provider.stub.PutKey(pb.PutKeyRequest(provider=name, secret="sk-k" + "0" * 20), metadata=user)
                listed, token = [], ""
                while True:
                    reply = await provider.stub.ListKeys(
                        pb.ListKeysRequest(page_size=1, page_token=token), metadata=user
                    )
                    listed += [key.provider for key in reply.keys]
                    if not (token := reply.next_page_token):
                        break
                assert sorted(listed) == sorted(names)
                assert len(listed) == len(names)
        finally:
            await drop_database_url(url)
