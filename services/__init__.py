"""Steward's gRPC services, one package per process; they never import one another."""
