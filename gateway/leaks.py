"""What an error text must never show a client: internal addresses and ports, gRPC's own status text, stack traces,
file paths. `leak` finds them; the suite's answer check (`gateway.openapi_responses`) runs it on every problem's
`detail` and every OpenAI error's `message`, and the MCP test client on every tool error's text.

A detector, not a sanitiser: errors are made clean where they are made (`steward.errors.from_rpc_error` gives a
transport failure a fixed message); this only proves, across the suite, that none slipped through.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["Leak", "leak"]


class Leak(NamedTuple):
    """What a text shows: the kind ("a port") and the fragment that shows it (":50051")."""

    kind: str
    fragment: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.fragment!r}"


# Each pattern names what it finds, so a violation says why a text was refused.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a gRPC status", re.compile(r"StatusCode\.|grpc_status|grpc_message|debug_error_string")),
    ("a gRPC address", re.compile(r"\b(?:ipv4|ipv6|unix|unix-abstract|dns):", re.IGNORECASE)),
    ("an IP address", re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")),
    ("a loopback host", re.compile(r"\blocalhost\b", re.IGNORECASE)),
    # host:port; a clock time's "10:30:00" is not one (two digits before its colon).
    ("a port", re.compile(r"(?<!\d\d):\d{2,5}\b")),
    ("a stack trace", re.compile(r"Traceback \(most recent call last\)|Traceback|File \"")),
    ("a file path", re.compile(r"/work/|/home/|/usr/|/tmp/|site-packages|\.py\b")),
)


def leak(text: str) -> Leak | None:
    """The first of the forbidden kinds `text` shows, or None when it is clean."""
    for kind, pattern in _PATTERNS:
        found = pattern.search(text)
        if found is not None:
            return Leak(kind, found.group(0))
    return None
