"""An example MCP server with notes: read tools, write tools, and exactly-once evidence.

Run it with `python -m examples.notes_mcp` (see `__main__`). Tools:

| tool | annotations |
|---|---|
| `list_notes`, `read_note`, `list_applied_writes` | readOnlyHint |
| `create_note` | readOnlyHint=false, destructiveHint=false, idempotentHint=false |
| `update_note` | readOnlyHint=false, destructiveHint=true, idempotentHint=true |
| `delete_note` | readOnlyHint=false, destructiveHint=true, idempotentHint=true |
| `propose_create_note`, `propose_update_note`, `propose_delete_note` | readOnlyHint (proposal companions) |

Each write names its proposal companion in `_meta["steward/proposal_tool"]`; `update_note` also declares a decision
schema whose `hunks` (a decision argument) approves only some hunks of the body's change (`proposals.py`,
docs/proposals.md).

Write calls take an idempotency key in the request's `_meta` under `steward/idempotency_key`;
`list_applied_writes` and `read_applied_writes(path)` read the append-only record of applied writes.
"""

from examples.notes_mcp.server import IDEMPOTENCY_META_KEY, REPLAYED_META_KEY, build_server
from examples.notes_mcp.store import AppliedWrite, NotesStore, read_applied_writes

__all__ = [
    "IDEMPOTENCY_META_KEY",
    "REPLAYED_META_KEY",
    "AppliedWrite",
    "NotesStore",
    "build_server",
    "read_applied_writes",
]
