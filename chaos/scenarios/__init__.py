"""Importing this package registers every scenario (`chaos.scenario.SCENARIOS`)."""

from chaos.scenarios import approvals, database, restarts

__all__ = ["approvals", "database", "restarts"]
