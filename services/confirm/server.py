"""The confirm service's server.

Every ConfirmationService RPC answers UNIMPLEMENTED / NOT_IMPLEMENTED until the
runtime-and-confirmations issue lands: the contract is registered, served,
health-checked and authenticated like every other service.
"""

from __future__ import annotations

from steward.auth import verifier_for
from steward.confirm.v1 import confirm_service_pb2 as pb
from steward.confirm.v1 import confirm_service_pb2_grpc as pb_grpc
from steward.logs import configure_logging
from steward.rpc.server import GrpcServer, ServiceRegistration, serve_until_signalled, start_grpc_server
from steward.settings import CommonSettings

DOMAIN = "confirm.steward"


async def create_server(settings: CommonSettings, address: str) -> GrpcServer:
    """Start serving ConfirmationService on `address`."""
    servicer = pb_grpc.ConfirmationServiceServicer()  # type: ignore[abstract]  # unbuilt RPCs answer NOT_IMPLEMENTED
    return await start_grpc_server(
        [
            ServiceRegistration(
                pb.DESCRIPTOR.services_by_name["ConfirmationService"],
                lambda s: pb_grpc.add_ConfirmationServiceServicer_to_server(servicer, s),
            )
        ],
        address,
        verifier=verifier_for(settings),
        domain=DOMAIN,
    )


async def main() -> None:
    settings = CommonSettings()
    configure_logging("confirm", settings.log_level, json=settings.log_json)
    server = await create_server(settings, settings.confirm_address)
    await serve_until_signalled(server, settings.shutdown_grace)
