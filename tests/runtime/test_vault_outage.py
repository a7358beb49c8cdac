"""Chaos scenario F8: OpenBao sealed, and OpenBao killed and started again, under runs that need a user's key.

The whole path is real: a raft-backed OpenBao server (tests/provider/openbao.py; dev mode keeps nothing across a
restart), the in-process stack (store, provider with the Vault key store, confirm, runtime) and a fake
OpenAI-compatible upstream that records every request with its key. The user's key is stored through the
provider's PutKey. Decoy keys wait in every other place a key could be read from: the environment (the SDK's own
variable and `STEWARD_*` names) and the embedded key store's table in the provider's database.

While OpenBao is sealed (or down), the provider answers Generate with UNAVAILABLE (SECRETS_BACKEND_UNAVAILABLE,
no `transient` flag), which the runtime's classifier takes for an outage: each run stays `running` on its first
claim, waits in its first model step with backoff (0.2 s doubling to 2 s, outage.py) and is neither failed nor
given back. No model request leaves the provider. Once OpenBao is unsealed, every run streams its answer within
`RESUME_LIMIT` seconds (the backoff's cap bounds it at about 2 s), each with the key from OpenBao and no other.

The runtime has no event for "waiting for a dependency" (run_event.proto's set is fixed): a client sees the step
start and then nothing until the step streams. The tests assert that silence, and the runtime's `step_restarting`
log lines that say why.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import structlog

from fakes.upstream import FakeUpstream, Reply
from services.provider.keys.embedded import EmbeddedKeyStore
from services.provider.settings import ProviderSettings
from services.runtime.run import outage
from steward.common.v1 import content_pb2
from steward.db import create_engine, create_sessionmaker
from steward.errors import Reason, StewardError, from_rpc_error
from steward.provider.v1 import provider_service_pb2 as provider_pb
from steward.provider.v1 import provider_service_pb2_grpc as provider_grpc
from steward.store.v1 import run_event_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb
from tests.provider.openbao import SealableOpenBao, running_sealable_openbao
from tests.runtime.harness import World, notes_agent, world

pytestmark = pytest.mark.timeout(90)

RUNS = 5
AWAY_SECONDS = 3.0  # how long OpenBao stays sealed (or down) with the runs waiting
RESUME_LIMIT = 10.0  # the acceptance: every run goes on within this many seconds of the unseal
UPSTREAM = "fake-openai"
ROUTE = "keyed"
ANSWER = "The answer came with the key from OpenBao."


@dataclass
class Watch:
    """One run's events as a live reader receives them, each with the monotonic time it arrived."""

    run: run_pb2.Run
    question: str
    events: list[tuple[float, run_event_pb2.RunEvent]] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return [str(event.WhichOneof("payload")) for _, event in self.events]

    def first(self, kind: str) -> float | None:
        return next((at for at, event in self.events if event.WhichOneof("payload") == kind), None)


@dataclass
class Scene:
    w: World
    bao: SealableOpenBao
    fake: FakeUpstream
    key: str  # the user's key, stored in OpenBao through the provider
    decoys: set[str]  # keys anywhere else: none may ever reach the upstream
    provider: provider_grpc.ProviderServiceAsyncStub
    agent_id: str
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    def model_requests(self) -> list[str | None]:
        """The key of every model request the upstream received so far."""
        return [r.api_key for r in self.fake.requests if r.path.endswith("/chat/completions")]

    async def start_runs(self, label: str) -> list[Watch]:
        watches = []
        for n in range(RUNS):
            question = f"{label} question {n} {uuid.uuid4().hex[:6]}"
            watch = Watch(await self.w.start_run(question, agent_id=self.agent_id), question)
            self.readers.append(asyncio.create_task(self._follow(watch)))
            watches.append(watch)
        return watches

    async def _follow(self, watch: Watch) -> None:
        request = store_pb.StreamRunEventsRequest(run_id=watch.run.id, follow=True)
        async for item in self.w.runs.StreamRunEvents(request, metadata=self.w.user):
            watch.events.append((time.monotonic(), item.event))

    async def generate_error(self) -> StewardError:
        """What the provider answers a Generate for the keyed route right now (it must fail)."""
        message = content_pb2.ChatMessage(
            role=content_pb2.ROLE_USER, content=[content_pb2.ContentBlock(text=content_pb2.TextBlock(text="hi"))]
        )
        request = provider_pb.GenerateRequest(route=ROUTE, messages=[message], request_id=uuid.uuid4().hex)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in self.provider.Generate(request, metadata=self.w.user):
                pass
        return from_rpc_error(raised.value)


@asynccontextmanager
async def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Scene]:
    decoys = {f"sk-decoy-env-{uuid.uuid4().hex}" for _ in range(3)}
    for name, decoy in zip(
        ("OPENAI_API_KEY", "STEWARD_OPENAI_API_KEY", "STEWARD_FAKE_OPENAI_API_KEY"), sorted(decoys), strict=True
    ):
        monkeypatch.setenv(name, decoy)  # the provider runs in this process: its SDKs see these
    fake = FakeUpstream(default=Reply(text=ANSWER, chunk_delay=0.01))
    await fake.start()
    routes = {
        "upstreams": {UPSTREAM: {"protocol": "openai", "base_url": fake.openai_base_url}},
        "routes": {ROUTE: {"description": "a keyed upstream", "primary": f"{UPSTREAM}/gpt-test"}},
    }
    (tmp_path / "routes.json").write_text(json.dumps(routes))
    with running_sealable_openbao() as bao:
        master_key = base64.b64encode(secrets.token_bytes(32)).decode()
        provider_settings: dict[str, object] = {
            "key_store": "vault",
            "master_key": master_key,  # what the embedded store would decrypt with, were it ever read
            "vault_url": bao.url,
            "vault_token": bao.root_token,
            "routes_file": tmp_path / "routes.json",
        }
        try:
            async with world(tmp_path, provider=provider_settings, default_run_timeout=60.0) as w:
                channel = grpc.aio.insecure_channel(w.stack.address(w.stack.provider))
                provider = provider_grpc.ProviderServiceStub(channel)
                key = f"sk-vault-{uuid.uuid4().hex}"
                await provider.PutKey(
                    provider_pb.PutKeyRequest(provider=UPSTREAM, label="mine", secret=key), metadata=w.user
                )
                decoys.add(await _embedded_decoy(tmp_path, master_key, w.user_id))
                agent = notes_agent(model_route=ROUTE, tools=(), prefix="keyed")
                created = await w.agents.CreateAgent(store_pb.CreateAgentRequest(agent=agent), metadata=w.user)
                assert created.agent.model_route == ROUTE
                state = Scene(w, bao, fake, key, decoys, provider, created.agent.id)
                try:
                    yield state
                finally:
                    for reader in state.readers:
                        reader.cancel()
                    await asyncio.gather(*state.readers, return_exceptions=True)
                    await channel.close()
        finally:
            await fake.stop()


async def _embedded_decoy(tmp_path: Path, master_key: str, user_id: str) -> str:
    """A key for the same user and upstream in the embedded store's table of the provider's own database (as a
    deployment that moved from the embedded store to Vault may still have): written with the master key the
    provider was given, so it would decrypt if the provider ever read it."""
    settings = ProviderSettings.model_validate(
        {"internal_secret": "s" * 40, "data_dir": tmp_path, "master_key": master_key}
    )
    engine = create_engine(settings.resolved_database_url())
    try:
        decoy = f"sk-decoy-embedded-{uuid.uuid4().hex}"
        await EmbeddedKeyStore(settings, create_sessionmaker(engine)).put(user_id, UPSTREAM, "stale", decoy)
        return decoy
    finally:
        await engine.dispose()


async def _hold_and_check_parked(s: Scene, watches: list[Watch], seconds: float) -> None:
    """For `seconds`, every run stays running on its first claim, waiting in its first step: no content, no end."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for watch in watches:
            run = await s.w.run(watch.run.id)
            assert run.state == run_pb2.RUN_STATE_RUNNING, (run_pb2.RunState.Name(run.state), run.error)
            assert run.lease_epoch == 1, "the run was given back or taken over instead of waiting"
            assert set(watch.kinds()) <= {"run_started", "step_started", "step_restarted"}, watch.kinds()
        assert s.model_requests() == [], "a model request left the provider while OpenBao was away"
        await asyncio.sleep(0.2)
    for watch in watches:  # a client was told, once for the whole outage, what the step waits for
        told = [event.step_restarted for _, event in watch.events if event.HasField("step_restarted")]
        assert [(event.dependency, event.reason) for event in told] == [
            ("provider", Reason.SECRETS_BACKEND_UNAVAILABLE)
        ], told


async def _assert_resumed(s: Scene, watches: list[Watch], unsealed_at: float) -> list[float]:
    """Every run completes with the answer, its first text within RESUME_LIMIT of the unseal; those delays."""
    delays = []
    for watch in watches:
        ended = await s.w.wait(watch.run.id, within=RESUME_LIMIT + 20)
        assert ended.state == run_pb2.RUN_STATE_COMPLETED, (run_pb2.RunState.Name(ended.state), ended.error)
        assert ended.lease_epoch == 1
        deadline = time.monotonic() + 5
        while watch.first("run_completed") is None:  # the live reader gets the end just after the store has it
            assert time.monotonic() < deadline, watch.kinds()
            await asyncio.sleep(0.02)
        first_text = watch.first("text_delta")
        assert first_text is not None, watch.kinds()
        delays.append(first_text - unsealed_at)
        assert "run_failed" not in watch.kinds()
        assistant = [m for m in await s.w.messages(watch.run) if m.role == content_pb2.ROLE_ASSISTANT]
        assert len(assistant) == 1, assistant
        assert "".join(b.text.text for b in assistant[0].content if b.HasField("text")) == ANSWER
        asked = [r for r in s.fake.requests if watch.question in json.dumps(r.body)]
        assert [r.api_key for r in asked] == [s.key], "the run's model call did not carry the key from OpenBao"
    assert max(delays) <= RESUME_LIMIT, delays
    keys = s.model_requests()
    assert len(keys) == RUNS
    assert set(keys) == {s.key}
    assert not s.decoys & set(keys)
    return delays


async def test_runs_wait_while_openbao_is_sealed_and_go_on_after_the_unseal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with scene(tmp_path, monkeypatch) as s:
        await asyncio.to_thread(s.bao.seal)
        error = await s.generate_error()
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, Reason.SECRETS_BACKEND_UNAVAILABLE)
        assert "transient" not in error.metadata  # the runtime's classifier reads the flag first
        assert outage.classify(error, idempotent=False) is outage.Fault.OUTAGE

        with structlog.testing.capture_logs() as logs:
            watches = await s.start_runs("sealed")
            await _hold_and_check_parked(s, watches, AWAY_SECONDS)
        waits = [e for e in logs if e.get("event") == "step_restarting"]
        assert {e.get("reason") for e in waits} == {Reason.SECRETS_BACKEND_UNAVAILABLE}, waits
        assert len(waits) >= RUNS

        unsealed_at = time.monotonic()
        await asyncio.to_thread(s.bao.unseal)
        delays = await _assert_resumed(s, watches, unsealed_at)
        print(f"sealed: first text after the unseal in {[round(d, 2) for d in delays]} s, max {max(delays):.2f} s")


async def test_runs_wait_while_openbao_is_killed_and_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with scene(tmp_path, monkeypatch) as s:
        await asyncio.to_thread(s.bao.kill)
        error = await s.generate_error()
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, Reason.SECRETS_BACKEND_UNAVAILABLE)
        assert "transient" not in error.metadata

        watches = await s.start_runs("killed")
        await _hold_and_check_parked(s, watches, AWAY_SECONDS)
        # Started again it comes back sealed, as a real server does: the runs go on waiting until the unseal.
        await asyncio.to_thread(s.bao.start)
        await _hold_and_check_parked(s, watches, 1.0)

        unsealed_at = time.monotonic()
        await asyncio.to_thread(s.bao.unseal)
        delays = await _assert_resumed(s, watches, unsealed_at)
        print(f"restarted: first text after the unseal in {[round(d, 2) for d in delays]} s, max {max(delays):.2f} s")
