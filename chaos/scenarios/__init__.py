"""Importing this package registers every scenario (`chaos.scenario.SCENARIOS`)."""

from chaos.scenarios import approvals, drain, restarts

__all__ = ["approvals", "drain", "restarts"]
