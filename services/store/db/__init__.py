"""The store's database: engine, models, conversions to protos, and one repository per aggregate.

Runner or ORM: the hot paths (starting a run, appending and checkpointing its events, reading
a run, its events, an agent or a page of messages) go through the hand-written
TransactionRunner (runner.py): a unit of work is a sync function of a Connection over Core
statements built once, so a SQLite transaction costs at most one thread hop, where the async
ORM measured about 1 ms per transaction and 2.4 ms per append. Everything else (identity,
agent writes, the other lists, leases, retention) uses the async ORM session, which is simpler
to write and read. A new path starts on the ORM and moves to the runner only when a
measurement says it is hot.
"""
