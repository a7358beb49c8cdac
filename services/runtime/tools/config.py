"""The tools deployment config: which MCP servers the runtime connects to, and how far it trusts them.

A YAML file, for example:

    refresh_interval: 300            # default for every server (seconds between tool-list refreshes)
    servers:
      notes:
        transport: stdio
        command: python
        args: ["-m", "examples.notes_mcp", "--data", "data/notes.db"]
        env: {NOTES_MCP_WRITE_DELAY: "0", GITHUB_TOKEN: "${GITHUB_TOKEN}"}
        cwd: /srv/steward
        trust: trusted
        idempotency_keys: true       # it applies a write once per idempotency key (trusted servers only)
        tools: [list_notes, read_note, create_note]   # optional allow-list; fnmatch patterns allowed
        proposals:                   # optional: how writes are proposed and decided (docs/proposals.md)
          create_note:
            title: "New note: {title}"
            template: "{title}\n\n{body}"
      search:
        transport: http
        url: https://mcp.example.com/mcp
        headers: {Authorization: "Bearer ${SEARCH_TOKEN}"}
        # trust defaults to untrusted

A stdio server gets only the `env` given here (plus the SDK's small safe set: HOME, LOGNAME, PATH,
SHELL, TERM, USER). `${NAME}` in an `env` or `headers` value is replaced by the runtime's own
environment variable NAME at load time; an unset one is an error. Every problem is reported as a
`ToolsConfigError` naming the file and the field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from steward.decision_schemas import decision_schema_problem

SERVER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
RESERVED_SERVER_NAMES = frozenset({"time", "calc", "client", "builtin", "steward"})
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ToolsConfigError(ValueError):
    """The tools config cannot be read or is invalid; the message names the file and every field at fault."""


class Trust(StrEnum):
    """How far the runtime believes a server's tool annotations.

    `trusted`: the operator vouches for the server; `readOnlyHint` lets a tool run without
    confirmation, `idempotentHint` lets the runtime retry it after a crash. `untrusted` (the
    default): annotations are ignored; every tool is a destructive, non-idempotent write.
    """

    TRUSTED = "trusted"
    UNTRUSTED = "untrusted"


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProposalConfig(_Base):
    """How one write tool of the server is proposed and decided, for tools that declare neither (it wins over what a
    tool's `_meta` declares). `{name}` in `title` and `template` is the argument `name`."""

    companion: str | None = Field(default=None, min_length=1)
    """The server's own name of a read-only tool, called with the write's arguments, that answers the proposal."""
    title: str = Field(default="", max_length=500)
    template: str = Field(default="", max_length=10_000)
    """A text proposal, used when there is no companion (or it fails: then the JSON preview)."""
    decision_schema: dict[str, Any] | None = None
    """The decision JSON Schema (draft 2020-12); it must require "outcome"."""
    decision_arguments: tuple[str, ...] = ()
    """Properties of `decision_schema` whose values, when approved, become the tool's arguments of that name."""

    @model_validator(mode="after")
    def _usable(self) -> Any:
        if self.decision_schema is not None and (problem := decision_schema_problem(self.decision_schema)):
            raise ValueError(f"decision_schema {problem}")
        if self.decision_arguments and self.decision_schema is None:
            raise ValueError("decision_arguments needs a decision_schema")
        declared = (self.decision_schema or {}).get("properties") or {}
        for name in self.decision_arguments:
            if name in ("outcome", "reason", "edited_arguments") or name not in declared:
                raise ValueError(f"decision_arguments: {name!r} must be a property the decision_schema declares")
        return self


class _ServerBase(_Base):
    trust: Trust = Trust.UNTRUSTED
    tools: tuple[str, ...] | None = None
    """Allow-list of the server's own tool names (fnmatch patterns); None offers every tool."""
    refresh_interval: float | None = Field(default=None, gt=0)
    """Seconds between tool-list refreshes; None takes the file's default."""
    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds to connect and list tools, and the bound on any request without its own timeout."""
    idempotency_keys: bool = False
    """The operator vouches that the server applies a write at most once per `_meta["steward/idempotency_key"]`
    (a repeat replays the first result), whatever the tool's `idempotentHint` says (that hint is about repeating the
    same arguments without a key). Every write of the server may then be repeated with its key: a write a crash left
    started, a call its server's restart cut off (ADR 0008, 0016). Only for a trusted server."""
    proposals: dict[str, ProposalConfig] = Field(default_factory=dict)
    """Per tool (the server's own name): how its writes are proposed and decided (ADR 0017)."""

    @model_validator(mode="after")
    def _keys_need_trust(self) -> Any:
        if self.idempotency_keys and self.trust is not Trust.TRUSTED:
            raise ValueError("idempotency_keys: true needs trust: trusted (an untrusted server's word is not taken)")
        return self


class StdioServerConfig(_ServerBase):
    transport: Literal["stdio"]
    command: str = Field(min_length=1)
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None


class HttpServerConfig(_ServerBase):
    transport: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)


ServerConfig = Annotated[StdioServerConfig | HttpServerConfig, Field(discriminator="transport")]


class ToolsConfig(_Base):
    """The whole file. `servers` maps a server name (the prefix of its tools' names) to its settings."""

    refresh_interval: float = Field(default=300.0, gt=0)
    servers: dict[str, ServerConfig] = Field(default_factory=dict)

    @field_validator("servers", mode="before")
    @classmethod
    def _server_names(cls, servers: Any) -> Any:
        for name in servers if isinstance(servers, dict) else ():
            if not isinstance(name, str) or not SERVER_NAME.fullmatch(name):
                raise ValueError(f"server name {name!r} must match {SERVER_NAME.pattern}")
            if name in RESERVED_SERVER_NAMES:
                raise ValueError(f"server name {name!r} is reserved (built-in and client tool prefixes)")
        return servers

    def refresh_interval_for(self, name: str) -> float:
        return self.servers[name].refresh_interval or self.refresh_interval


def _expand(value: str, environ: Mapping[str, str], where: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ToolsConfigError(f"{where}: environment variable {name} is not set")
        return environ[name]

    return _ENV_REF.sub(substitute, value)


def _expand_references(raw: dict[str, Any], environ: Mapping[str, str], source: str) -> None:
    servers = raw.get("servers")
    if not isinstance(servers, dict):
        return
    for name, server in servers.items():
        if not isinstance(server, dict):
            continue
        for field in ("env", "headers"):
            values = server.get(field)
            if isinstance(values, dict):
                server[field] = {
                    key: _expand(value, environ, f"{source}: servers.{name}.{field}.{key}")
                    if isinstance(value, str)
                    else value
                    for key, value in values.items()
                }


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid tools config ({error.error_count()} problem(s))"]
    for problem in error.errors():
        location = [str(part) for part in problem["loc"]]
        if len(location) > 2 and location[0] == "servers" and location[2] in ("stdio", "http"):
            del location[2]  # the union tag pydantic inserts: servers.notes.stdio.command
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"  {'.'.join(location) or '(top level)'}: {message}")
    return "\n".join(lines)


def _yaml_problem(error: yaml.YAMLError) -> str:
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return f": {error}"
    mark = error.problem_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    if error.context and error.context_mark is not None:
        context = error.context_mark
        where += f" ({error.context} at line {context.line + 1}, column {context.column + 1})"
    return where


def parse_config(text: str, *, source: str = "<tools config>", environ: Mapping[str, str] | None = None) -> ToolsConfig:
    """Parse and validate YAML text. Raises ToolsConfigError."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ToolsConfigError(f"{source}: not valid YAML{_yaml_problem(exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ToolsConfigError(f"{source}: the top level must be a mapping, got {type(raw).__name__}")
    _expand_references(raw, os.environ if environ is None else environ, source)
    try:
        return ToolsConfig.model_validate(raw)
    except ValidationError as exc:
        raise ToolsConfigError(_describe(exc, source)) from None


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> ToolsConfig:
    """Read, parse and validate the YAML file at `path`. Raises ToolsConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ToolsConfigError(f"{path}: cannot read tools config: {exc.strerror or exc}") from None
    return parse_config(text, source=str(path), environ=environ)
