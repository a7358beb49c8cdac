"""The confirm service's server.

Every ConfirmationService RPC answers UNIMPLEMENTED / NOT_IMPLEMENTED until the
runtime-and-confirmations issue lands: the contract is registered, served,
health-checked and authenticated like every other service.
"""

from __future__ import annotations

from steward.auth import verifier_for
from steward.confirm.v1 import confirm_service_pb2 as pb
from steward.confirm.v1 import confirm_service_pb2_grpc as pb_grpc
from steward.rpc.server import GrpcServer, registration, serve_main, start_grpc_server
from steward.settings import CommonSettings

DOMAIN = "confirm.steward"


async def create_server(settings: CommonSettings, address: str) -> GrpcServer:
    """Start serving ConfirmationService on `address`."""
    servicer = pb_grpc.ConfirmationServiceServicer()  # type: ignore[abstract]  # unbuilt RPCs answer NOT_IMPLEMENTED
    return await start_grpc_server(
        [registration(pb, pb_grpc, "ConfirmationService", servicer)],
        address,
        verifier=verifier_for(settings),
        domain=DOMAIN,
    )


async def main() -> None:
    settings = CommonSettings()
    await serve_main("confirm", settings, create_server, settings.confirm_address)
