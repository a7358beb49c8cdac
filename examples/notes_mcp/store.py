"""SQLite persistence for the notes server: notes, and the append-only record of applied writes.

Every successful write call is applied and recorded in one `BEGIN IMMEDIATE` transaction, so the
record and the notes never disagree, even if the process dies mid-write. A call that carries an
idempotency key whose record exists is answered from the record and applies nothing. Calls that
fail (a tool error such as an unknown note) apply nothing and are not recorded.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from examples.notes_mcp.proposals import apply_hunks

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    tags TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS applied_writes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT UNIQUE,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    result TEXT NOT NULL,
    applied_at TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS applied_writes_no_update BEFORE UPDATE ON applied_writes
BEGIN SELECT RAISE(ABORT, 'applied_writes is append-only'); END;
CREATE TRIGGER IF NOT EXISTS applied_writes_no_delete BEFORE DELETE ON applied_writes
BEGIN SELECT RAISE(ABORT, 'applied_writes is append-only'); END;
"""


@dataclass(frozen=True)
class Outcome:
    """What a tool call returns: text for the model, structured content, and whether it failed."""

    structured: dict[str, Any]
    is_error: bool = False

    @property
    def text(self) -> str:
        return json.dumps(self.structured, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class AppliedWrite:
    """One row of the append-only record: a write call that was applied."""

    seq: int
    idempotency_key: str | None
    tool: str
    arguments: dict[str, Any]
    result: dict[str, Any]
    applied_at: str


class KeyReuseError(Exception):
    """An idempotency key was presented again with a different tool or different arguments."""


class _RollbackError(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__("rolled back")
        self.outcome = outcome


Apply = Callable[[sqlite3.Connection], Outcome]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _canonical(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _note(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "title": row["title"],
        "body": row["body"],
        "tags": json.loads(row["tags"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit; transactions are explicit
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class NotesStore:
    """The server's data file. All methods are synchronous and quick; call them from one thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(path)
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def list_notes(self, tag: str | None, limit: int) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT * FROM notes ORDER BY created_at, id").fetchall()
        notes = [_note(row) for row in rows]
        if tag is not None:
            notes = [note for note in notes if tag in note["tags"]]
        return notes[:limit]

    def get_note(self, note_id: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT * FROM notes WHERE id = ?", (note_id,)).fetchone()
        return None if row is None else _note(row)

    def recorded(self, key: str, tool: str, arguments: dict[str, Any]) -> Outcome | None:
        """The recorded outcome of an applied write with this key, or None.

        Raises:
            KeyReuseError: the key was recorded for another tool or other arguments.
        """
        row = self._conn.execute(
            "SELECT tool, arguments, result FROM applied_writes WHERE idempotency_key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        if row["tool"] != tool or row["arguments"] != _canonical(arguments):
            raise KeyReuseError(f"idempotency key {key!r} was already used for a different call")
        return Outcome(structured=json.loads(row["result"]))

    def apply_write(self, key: str | None, tool: str, arguments: dict[str, Any], apply: Apply) -> tuple[Outcome, bool]:
        """Apply one write exactly once per key; returns the outcome and whether it was replayed.

        Raises:
            KeyReuseError: the key was recorded for another tool or other arguments.
        """
        try:
            with self._immediate() as conn:
                if key is not None and (replayed := self.recorded(key, tool, arguments)) is not None:
                    return replayed, True
                outcome = apply(conn)
                if outcome.is_error:
                    raise _RollbackError(outcome)
                conn.execute(
                    "INSERT INTO applied_writes (idempotency_key, tool, arguments, result, applied_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key, tool, _canonical(arguments), _canonical(outcome.structured), _now()),
                )
                return outcome, False
        except _RollbackError as rollback:
            return rollback.outcome, False

    def applied_writes(self, after_seq: int = 0, limit: int = 1000) -> list[AppliedWrite]:
        return _applied_writes(self._conn, after_seq, limit)


def _applied_writes(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[AppliedWrite]:
    rows = conn.execute(
        "SELECT * FROM applied_writes WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
    ).fetchall()
    return [
        AppliedWrite(
            seq=row["seq"],
            idempotency_key=row["idempotency_key"],
            tool=row["tool"],
            arguments=json.loads(row["arguments"]),
            result=json.loads(row["result"]),
            applied_at=row["applied_at"],
        )
        for row in rows
    ]


def read_applied_writes(path: Path) -> list[AppliedWrite]:
    """Read the whole record from a data file, from any process (tests use this as evidence)."""
    with closing(_connect(path)) as conn:
        conn.executescript(SCHEMA)
        return _applied_writes(conn, 0, -1)


# The write operations. Each runs inside apply_write's transaction and returns its outcome.


def create_note(arguments: dict[str, Any]) -> Apply:
    def apply(conn: sqlite3.Connection) -> Outcome:
        now = _now()
        note = {
            "id": f"n_{secrets.token_hex(6)}",
            "title": arguments["title"],
            "body": arguments.get("body", ""),
            "tags": list(arguments.get("tags", [])),
            "created_at": now,
            "updated_at": now,
        }
        conn.execute(
            "INSERT INTO notes (id, title, body, tags, created_at, updated_at) VALUES (?,?,?,?,?,?)",
            (note["id"], note["title"], note["body"], json.dumps(note["tags"]), now, now),
        )
        return Outcome(structured={"note": note})

    return apply


def update_note(arguments: dict[str, Any]) -> Apply:
    def apply(conn: sqlite3.Connection) -> Outcome:
        row = conn.execute("SELECT * FROM notes WHERE id = ?", (arguments["id"],)).fetchone()
        if row is None:
            return Outcome(structured={"error": f"note {arguments['id']} not found"}, is_error=True)
        note = _note(row)
        changed: dict[str, Any] = {field: arguments[field] for field in ("title", "body", "tags") if field in arguments}
        if "body" in changed and "hunks" in arguments:  # only the chosen hunks of the body's change
            changed["body"] = apply_hunks(note["body"], changed["body"], arguments["hunks"])
        if any(note[field] != value for field, value in changed.items()):
            note.update(changed, updated_at=_now())
            conn.execute(
                "UPDATE notes SET title = ?, body = ?, tags = ?, updated_at = ? WHERE id = ?",
                (note["title"], note["body"], json.dumps(note["tags"]), note["updated_at"], note["id"]),
            )
        return Outcome(structured={"note": note})

    return apply


def delete_note(arguments: dict[str, Any]) -> Apply:
    def apply(conn: sqlite3.Connection) -> Outcome:
        deleted = conn.execute("DELETE FROM notes WHERE id = ?", (arguments["id"],)).rowcount
        return Outcome(structured={"id": arguments["id"], "deleted": deleted == 1})

    return apply
