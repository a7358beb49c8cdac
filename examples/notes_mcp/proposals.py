"""What the notes server's writes propose before they run: Steward's proposal convention (docs/proposals.md).

Each write tool names, in its tools/list `_meta`, a read-only companion tool that takes the same arguments and
answers the proposal as structured content {"kind", "title", "content", "decision_schema"?}:
- `create_note` -> `propose_create_note`: the new note, as text;
- `update_note` -> `propose_update_note`: a unified diff of the note (title, body, tags), and a decision schema
  that lets the person approve only some of the body's hunks (`hunks`, numbered as in the diff, 1-based);
- `delete_note` -> `propose_delete_note`: the note that would be deleted, as text.

`update_note` also declares `hunks` a decision argument: an approval's `hunks` becomes the call's `hunks` argument,
and the write then applies only those hunks of the body's change (`apply_hunks`) to the note's text at that time.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
PROPOSAL_TOOL_META_KEY = "steward/proposal_tool"
DECISION_SCHEMA_META_KEY = "steward/decision_schema"
DECISION_ARGUMENTS_META_KEY = "steward/decision_arguments"
CONTEXT_LINES = 3

# update_note's declared decision schema: any subset of hunks; each proposal narrows it to the hunks it shows.
HUNKS_DECISION_SCHEMA: dict[str, Any] = {
    "$schema": DRAFT_2020_12,
    "type": "object",
    "properties": {
        "outcome": {"enum": ["approve", "reject"]},
        "reason": {"type": "string", "maxLength": 2000},
        "edited_arguments": {"type": "object"},
        "hunks": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1},
            "minItems": 1,
            "uniqueItems": True,
            "description": "Approve only these hunks of the body's diff (1-based, as numbered in the proposal).",
        },
    },
    "required": ["outcome"],
    "additionalProperties": False,
}


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _groups(before: str, after: str) -> list[list[tuple[str, int, int, int, int]]]:
    """The hunks of the body's change, as difflib groups them for a unified diff."""
    matcher = difflib.SequenceMatcher(a=_lines(before), b=_lines(after), autojunk=False)
    return [group for group in matcher.get_grouped_opcodes(CONTEXT_LINES) if any(op != "equal" for op, *_ in group)]


def apply_hunks(before: str, after: str, chosen: Sequence[int]) -> str:
    """`before` with only the chosen hunks (1-based) of its change to `after` applied."""
    old, new = _lines(before), _lines(after)
    wanted = set(chosen)
    result: list[str] = []
    position = 0
    for number, group in enumerate(_groups(before, after), start=1):
        for op, i1, i2, j1, j2 in group:
            if op == "equal":
                continue
            result.extend(old[position:i1])
            result.extend(new[j1:j2] if number in wanted else old[i1:i2])
            position = i2
    result.extend(old[position:])
    return "".join(result)


def _diff(name: str, before: str, after: str) -> list[str]:
    lines = list(difflib.unified_diff(_lines(before), _lines(after), f"a/{name}", f"b/{name}", n=CONTEXT_LINES))
    return [line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines]


def _note_text(note: dict[str, Any]) -> str:
    tags = ", ".join(note.get("tags", [])) or "(none)"
    return f"{note['title']}\n\ntags: {tags}\n\n{note.get('body', '')}"


def propose_create(arguments: dict[str, Any]) -> dict[str, Any]:
    note = {"title": arguments["title"], "body": arguments.get("body", ""), "tags": arguments.get("tags", [])}
    return {"kind": "text", "title": f"Create the note {arguments['title']!r}", "content": _note_text(note)}


def propose_delete(note: dict[str, Any] | None, note_id: str) -> dict[str, Any]:
    if note is None:
        return {"kind": "text", "title": f"Delete note {note_id}", "content": f"Note {note_id} does not exist."}
    return {"kind": "text", "title": f"Delete the note {note['title']!r}", "content": _note_text(note)}


def propose_update(note: dict[str, Any] | None, arguments: dict[str, Any]) -> dict[str, Any]:
    note_id = arguments["id"]
    if note is None:
        return {"kind": "text", "title": f"Update note {note_id}", "content": f"Note {note_id} does not exist."}
    lines: list[str] = []
    if "title" in arguments:
        lines += _diff("title", note["title"] + "\n", arguments["title"] + "\n")
    if "tags" in arguments:
        lines += _diff("tags", "".join(f"{t}\n" for t in note["tags"]), "".join(f"{t}\n" for t in arguments["tags"]))
    count = len(_groups(note["body"], arguments["body"])) if "body" in arguments else 0
    if count:
        lines += _diff("body", note["body"], arguments["body"])
    proposal: dict[str, Any] = {
        "kind": "diff",
        "title": f"Update the note {note['title']!r}"
        + (f" ({count} hunk{'s' if count > 1 else ''} in its body)" if count else ""),
        "content": "".join(lines) or "(no change)\n",
    }
    if count > 1:  # a choice only when there is one to make
        schema = dict(HUNKS_DECISION_SCHEMA)
        properties = dict(schema["properties"])
        hunks = dict(properties["hunks"], items={"enum": list(range(1, count + 1))})
        properties["hunks"] = hunks
        schema["properties"] = properties
        proposal["decision_schema"] = schema
    return proposal
