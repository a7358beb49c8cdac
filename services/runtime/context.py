"""Everything one claimed run needs while this replica holds it."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.runtime.agents import AgentSpec, Limits
from services.runtime.events import EventWriter
from services.runtime.history import History
from services.runtime.hooks import Hooks
from services.runtime.settings import RuntimeSettings
from services.runtime.toolbox import Toolbox
from steward.common.v1 import usage_pb2
from steward.confirm.v1 import confirm_service_pb2_grpc as confirm_grpc
from steward.provider.v1 import provider_service_pb2_grpc as provider_grpc
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2_grpc as store_grpc


@dataclass(frozen=True)
class Services:
    runs: store_grpc.RunServiceAsyncStub
    conversations: store_grpc.ConversationServiceAsyncStub
    agents: store_grpc.AgentServiceAsyncStub
    provider: provider_grpc.ProviderServiceAsyncStub
    confirm: confirm_grpc.ConfirmationServiceAsyncStub
    toolbox: Toolbox
    hooks: Hooks
    settings: RuntimeSettings


@dataclass
class RunContext:
    services: Services
    run: run_pb2.Run
    epoch: int
    agent: AgentSpec
    limits: Limits
    writer: EventWriter
    mode: int
    usage: usage_pb2.Usage = field(default_factory=usage_pb2.Usage)
    step_count: int = 0
    history: History = field(default_factory=History)  # read when the loop starts, then kept up to date

    @property
    def run_id(self) -> str:
        return self.run.id
