"""The provider service's database: embedded key store, usage ledger, budgets."""
