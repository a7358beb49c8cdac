"""gRPC plumbing shared by every process: servers, channels, interceptors."""
