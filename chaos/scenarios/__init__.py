"""Importing this package registers every scenario (`chaos.scenario.SCENARIOS`)."""

from chaos.scenarios import approvals, database, drain, load, network, restarts, storm

__all__ = ["approvals", "database", "drain", "load", "network", "restarts", "storm"]
