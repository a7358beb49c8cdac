"""Importing this package registers every scenario (`chaos.scenario.SCENARIOS`)."""

from chaos.scenarios import approvals, network, restarts

__all__ = ["approvals", "network", "restarts"]
