"""Tests of the confirm service: confirmations, decisions, the feed, the execution ledger."""
