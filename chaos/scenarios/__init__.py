"""Importing this package registers every scenario (`chaos.scenario.SCENARIOS`)."""

from chaos.scenarios import approvals, restarts

__all__ = ["approvals", "restarts"]
