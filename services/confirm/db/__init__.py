"""The confirm service's database: confirmations, the decision feed, the audit trail, the execution ledger."""
