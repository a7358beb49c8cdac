"""Generates docs/configuration.md, the reference of every `STEWARD_*` setting, from the settings classes.

Run it with `python -m tests.support.config_reference` (or `make docs`); `--check` prints nothing and exits 1
when the committed file differs. `tests/test_docs.py` fails when the committed file is stale.

The settings classes are found by scanning the hand-written packages for classes that derive (directly or
through another settings class) from pydantic-settings' `BaseSettings`, so moving or renaming a module needs
no change here. Each class's fields come from pydantic (`model_fields`: type, default, constraints); the
description is the field's `description`, else the string right under the field (an attribute docstring),
else the comment block above it (a comment describes the fields under it up to the next comment or blank
line) plus any comment at the end of its line; failing those, the comment of the group of fields it is in.
"""

from __future__ import annotations

import ast
import importlib
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "docs" / "configuration.md"
# Where hand-written code lives, and the Python source root of each folder (libs/ holds the `steward` package).
SCAN_ROOTS = ("libs/steward", "services", "gateway", "cli")
SOURCE_ROOTS = (REPO / "libs", REPO)

# The section title of a settings class other settings classes derive from.
SHARED = "Every process"


@dataclass(frozen=True)
class SettingsClass:
    """One settings class found in the tree: its module, name, and the settings classes it derives from."""

    module: str
    path: Path
    node: ast.ClassDef
    bases: tuple[str, ...]


@dataclass(frozen=True)
class Setting:
    """One row of the reference."""

    env: str
    type: str
    default: str
    description: str
    # Where the description came from: "code" (description, docstring or own comment) or "group".
    source: str


def _module_name(path: Path) -> str:
    for root in SOURCE_ROOTS:
        if path.is_relative_to(root) and not path.relative_to(root).parts[0].startswith("."):
            parts = path.relative_to(root).with_suffix("").parts
            if root == REPO or parts[0] == "steward":
                return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(f"{path} is under no source root")


def _base_name(base: ast.expr) -> str:
    if isinstance(base, ast.Name):
        return base.id
    if isinstance(base, ast.Attribute):
        return base.attr
    return ""


def find_settings_classes() -> list[SettingsClass]:
    """Every class in the hand-written packages that derives from BaseSettings, base classes first."""
    classes: dict[str, list[SettingsClass]] = {}
    for root in SCAN_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            if "_pb2" in path.name:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    bases = tuple(_base_name(b) for b in node.bases)
                    found = SettingsClass(_module_name(path), path, node, bases)
                    classes.setdefault(node.name, []).append(found)
    settings: dict[str, SettingsClass] = {}
    grew = True
    while grew:
        grew = False
        for name, candidates in classes.items():
            for candidate in candidates:
                if name not in settings and any(b == "BaseSettings" or b in settings for b in candidate.bases):
                    settings[name] = candidate
                    grew = True
    # Base classes first, then by module path: stable, and independent of the order files are found in.
    depth: dict[str, int] = {}

    def _depth(name: str) -> int:
        if name not in depth:
            depth[name] = 1 + max((_depth(b) for b in settings[name].bases if b in settings), default=0)
        return depth[name]

    return sorted(settings.values(), key=lambda c: (_depth(c.node.name), c.module, c.node.name))


def _describe(found: SettingsClass, lines: list[str]) -> dict[str, tuple[str, str]]:
    """By field name: its own description (a docstring under it, or comments right above it and at the end of its
    line) and the comment of the group it is in (the comment above the fields before it, when there is no blank
    line in between)."""
    notes: dict[str, tuple[str, str]] = {}
    body = found.node.body
    for index, statement in enumerate(body):
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        name = statement.target.id
        after = body[index + 1] if index + 1 < len(body) else None
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            notes[name] = (" ".join(after.value.value.split()), "")
            continue
        block: list[str] = []
        own = True
        row = statement.lineno - 2  # the line above, 0-based
        while row >= found.node.lineno:
            text = lines[row].strip()
            if text.startswith("#"):
                block.insert(0, text.lstrip("#").strip())
            elif block or text == "" or text.startswith("@"):
                break
            else:  # another field of the same group, whose comment is further up
                own = False
            row -= 1
        end = lines[(statement.end_lineno or statement.lineno) - 1]
        trailing = end.split("  # ", 1)[1].strip() if "  # " in end else ""
        if trailing:
            trailing = trailing[0].upper() + trailing[1:] + ("" if trailing.endswith(".") else ".")
        comment = " ".join(block)
        mine = " ".join(part for part in (comment, trailing) if part) if own and comment else ""
        group = "" if mine else " ".join(part for part in (comment, trailing) if part)
        notes[name] = (mine, group)
    return notes


def _constraints(field: FieldInfo) -> str:
    words = []
    for item in field.metadata:
        for attribute, symbol in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attribute, None)
            if value is not None:
                words.append(f"{symbol} {_plain(value)}")
        pattern = getattr(item, "pattern", None)
        if pattern is not None:
            words.append(f"matches `{pattern}`")
    return ", ".join(words)


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else _plain(v) for v in value) + "]"
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _default(field: FieldInfo, source: ast.AnnAssign) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        # Shown as written: a factory may build something new each time (a random id, say).
        call = source.value
        keywords = call.keywords if isinstance(call, ast.Call) else []
        factory = next((k.value for k in keywords if k.arg == "default_factory"), None)
        if isinstance(factory, ast.Lambda):
            try:
                return f"`{_plain(ast.literal_eval(factory.body))}`"
            except ValueError:
                return f"`{ast.unparse(factory.body)}`"
        if isinstance(factory, ast.Name) and factory.id in {"list", "dict"}:
            return "`[]`" if factory.id == "list" else "`{}`"
        return f"`{ast.unparse(factory)}`" if factory is not None else "(computed)"
    if field.default is None:
        return "unset"
    if field.default == "":
        return '`""` (empty)'
    return f"`{_plain(field.default)}`"


def settings_of(found: SettingsClass) -> list[Setting]:
    """The rows for the fields this class declares itself (inherited ones appear under their own class)."""
    cls = getattr(importlib.import_module(found.module), found.node.name)
    prefix = str(cls.model_config.get("env_prefix", ""))
    notes = _describe(found, found.path.read_text().splitlines())
    rows = []
    for statement in found.node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        name = statement.target.id
        field: FieldInfo = cls.model_fields[name]
        env = f"{prefix}{name}".upper()
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):  # a variable of its own, such as the vendors' OPENAI_API_KEY
            env = str(alias.choices[0]).upper()
        mine, group = notes.get(name, ("", ""))
        description, source = next(
            (text, where)
            for text, where in (
                (field.description or mine, "code"),
                (group, "group"),
                ("", "none"),
            )
            if text or where == "none"
        )
        kind = ast.unparse(statement.annotation)
        constraints = _constraints(field)
        rows.append(
            Setting(
                env=env,
                type=f"`{kind}`" + (f", {constraints}" if constraints else ""),
                default=_default(field, statement),
                description=description,
                source=source,
            )
        )
    return rows


def _process(found: SettingsClass, children: set[str]) -> str:
    if found.node.name in children:
        return SHARED
    parts = found.module.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else parts[0]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The whole of docs/configuration.md."""
    for root in SOURCE_ROOTS:
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
    classes = find_settings_classes()
    parents = {b for c in classes for b in c.bases}
    out = [
        "# Configuration reference",
        "",
        "Every `STEWARD_*` environment variable each Steward process reads, with its type, default and meaning.",
        "This file is generated from the settings classes (pydantic-settings) by",
        "`python -m tests.support.config_reference` (`make docs`); do not edit it by hand. `tests/test_docs.py`",
        "fails when it is stale or when the code uses a `STEWARD_*` name it does not list.",
        "",
        "`steward up` (`make run`) sets these for its children and generates the secrets. Lists are JSON",
        "(`STEWARD_OIDC_ALGORITHMS='[\"RS256\"]'`); booleans are `true` or `false`; times are seconds unless the",
        "name says otherwise. A process ignores variables meant for another.",
        "",
        "Secrets (`STEWARD_INTERNAL_SECRET`, `STEWARD_TOKEN_PEPPER`) must be at least 32 bytes. A database URL is a",
        "SQLAlchemy async URL: `sqlite+aiosqlite:///path/to/file.db` or `postgresql+asyncpg://user@host/db`; the",
        "store, provider and confirm services each read their own `STEWARD_DATABASE_URL`.",
        "",
    ]
    for found in classes:
        process = _process(found, parents)
        where = found.path.relative_to(REPO).as_posix()
        docstring = " ".join((ast.get_docstring(found.node) or "").split())
        out += [f"## {process}: `{found.node.name}`", "", f"Defined in `{where}`. {docstring}".rstrip(), ""]
        if process == SHARED:
            out += ["Every process below reads these too.", ""]
        out += ["| variable | type | default | what it does |", "|---|---|---|---|"]
        for row in settings_of(found):
            out.append(f"| `{row.env}` | {_cell(row.type)} | {_cell(row.default)} | {_cell(row.description)} |")
        out.append("")
    out += [
        "## Not settings",
        "",
        "These `STEWARD_*` names appear in the code but are not read by a settings class:",
        "",
        *(f"- `{name}`: {reason}" for name, reason in sorted(NOT_SETTINGS.items())),
        "",
    ]
    return "\n".join(out)


# STEWARD_* names the code uses that are not settings, each with why.
NOT_SETTINGS = {
    "STEWARD_TOKEN": "read by the CLI (`steward token ...`) as the bearer token to use instead of the dev token, and "
    "by the Python client (`steward.client`) when no token is given.",
    "STEWARD_URL": "read by the CLI (`steward token ...`) and the Python client (`steward.client`) as the gateway URL "
    "(default `http://127.0.0.1:8080`).",
    "STEWARD_FAKE_LLM_PORT": "set by `steward up --fake-llm` in its own environment: the port of the fake upstream.",
    "STEWARD_TEST_POSTGRES_DSN": "read by the tests: the Postgres server for the Postgres lane.",
}


def all_settings() -> list[Setting]:
    """Every row of the reference, in order."""
    return [row for found in find_settings_classes() for row in settings_of(found)]


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        return 0 if OUTPUT.exists() and OUTPUT.read_text() == text else 1
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
