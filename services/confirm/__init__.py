"""The confirm service: confirmations, decisions, their audit trail and the execution ledger."""
