"""The store's database: engine, models and repository."""
