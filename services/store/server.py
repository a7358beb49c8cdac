"""The store service's server: `create_server` for production and tests alike."""

from __future__ import annotations

from services.store.db.conversations import ConversationRepository
from services.store.db.engine import create_engine, create_schema, create_sessionmaker
from services.store.db.runs import RunRepository
from services.store.notifier import EventNotifier
from services.store.servicers import ConversationServicer, RunServicer
from services.store.settings import StoreSettings
from steward.auth import verifier_for
from steward.rpc.server import GrpcServer, registration, serve_main, start_grpc_server
from steward.store.v1 import store_service_pb2 as pb
from steward.store.v1 import store_service_pb2_grpc as pb_grpc

DOMAIN = "store.steward"


async def create_server(settings: StoreSettings, address: str) -> GrpcServer:
    """Open the database and start serving every store service on `address`."""
    engine = create_engine(settings.resolved_database_url())
    await create_schema(engine)
    sessions = create_sessionmaker(engine)
    notifier = EventNotifier()
    conversations = ConversationServicer(ConversationRepository(sessions))
    runs = RunServicer(RunRepository(sessions), notifier)  # type: ignore[abstract]  # unbuilt RPCs answer NOT_IMPLEMENTED
    identity = pb_grpc.IdentityServiceServicer()  # type: ignore[abstract]  # unbuilt RPCs answer NOT_IMPLEMENTED
    agents = pb_grpc.AgentServiceServicer()  # type: ignore[abstract]  # unbuilt RPCs answer NOT_IMPLEMENTED
    server = await start_grpc_server(
        [
            registration(pb, pb_grpc, "IdentityService", identity),
            registration(pb, pb_grpc, "AgentService", agents),
            registration(pb, pb_grpc, "ConversationService", conversations),
            registration(pb, pb_grpc, "RunService", runs),
        ],
        address,
        verifier=verifier_for(settings),
        domain=DOMAIN,
    )
    server.on_stop.append(engine.dispose)
    return server


async def main() -> None:
    settings = StoreSettings()
    await serve_main("store", settings, create_server, settings.store_address)
