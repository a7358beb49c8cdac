"""Runnable examples that ship with Steward (not part of any service)."""
