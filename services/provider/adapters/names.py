"""Tool names on the wire.

Steward's qualified tool names contain "." ("notes.create"), which both vendor
APIs reject: tool names must match ``^[a-zA-Z0-9_-]{1,64}$``. On the way out a
"." becomes "__"; a name that still does not fit (other characters, too long,
or a clash with another offered tool) gets a sanitized prefix and a short hash.
On the way back, a name is looked up among the tools offered in the request,
and only a name the request did not offer is decoded by rule ("__" → ".").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

_WIRE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_NOT_WIRE = re.compile(r"[^a-zA-Z0-9_-]")
_HASH_CHARS = 8


def encode_tool_name(name: str) -> str:
    """The wire form of one qualified tool name, without regard to other tools."""
    wire = name.replace(".", "__")
    if _WIRE_NAME.match(wire):
        return wire
    return _hashed(name, wire)


def decode_tool_name(wire: str) -> str:
    """The qualified name for a wire name the request did not offer (best effort)."""
    return wire.replace("__", ".")


def _hashed(name: str, wire: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    prefix = _NOT_WIRE.sub("_", wire)[: 64 - _HASH_CHARS - 1]
    return f"{prefix}_{digest}" if prefix else f"t_{digest}"


class ToolNames:
    """The wire names of one request's tools, both ways."""

    def __init__(self, names: Iterable[str]) -> None:
        self._to_wire: dict[str, str] = {}
        self._from_wire: dict[str, str] = {}
        for name in names:
            if name in self._to_wire:
                continue
            wire = encode_tool_name(name)
            if wire in self._from_wire:  # two qualified names with one wire form ("a.b" and "a__b")
                wire = _hashed(name, wire)
            self._to_wire[name] = wire
            self._from_wire[wire] = name

    def wire(self, name: str) -> str:
        """The wire name for a qualified name (also for a tool call of a tool no longer offered)."""
        return self._to_wire.get(name) or encode_tool_name(name)

    def name(self, wire: str) -> str:
        """The qualified name for a wire name the model called."""
        return self._from_wire.get(wire) or decode_tool_name(wire)
