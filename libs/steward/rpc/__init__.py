"""gRPC plumbing shared by every process: servers, channels, interceptors."""

__all__: list[str] = []
