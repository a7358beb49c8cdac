"""Provider adapters: one per wire protocol, each turning an SDK stream into normalized events."""
