"""Chaos scenarios against a real-process stack (chaos/)."""
