"""A prompt cache as the vendors keep one, for the fake upstream: prefixes seen with a caching hint are remembered
for five minutes, and a later request that starts with one reports its tokens as read from the cache.

Anthropic caches what its `cache_control` breakpoints end (in the order tools, system, messages): a request reads
the longest of its breakpoints' prefixes that is cached and writes the rest up to its last breakpoint
(`cache_creation_input_tokens` / `cache_read_input_tokens`). OpenAI caches a prompt's prefix by itself and
reports hits in `prompt_tokens_details.cached_tokens`, writes free; the fake caches only requests with a
`prompt_cache_key`, their tools and leading system messages (the real API also caches long prompts without a
key: a test of "no hint, no cache" holds here, not always there). Tokens are counted as the real APIs roughly
do, about four characters of the prefix's JSON each; neither vendor's minimum cacheable length is modelled.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CacheUse", "PromptCache"]

TTL_SECONDS = 300.0


@dataclass(frozen=True)
class CacheUse:
    """What one request read from and wrote to the cache, in tokens."""

    read: int = 0
    written: int = 0


def _tokens(parts: list[Any]) -> int:
    return max(1, len(json.dumps(parts, sort_keys=True)) // 4)


def _without_marks(value: Any) -> Any:
    """A block as the cache sees it: the cache_control marks are not part of the prompt."""
    if isinstance(value, dict):
        return {k: _without_marks(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_marks(v) for v in value]
    return value


@dataclass
class PromptCache:
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, float] = field(default_factory=dict)  # prefix digest → expiry

    def _hit(self, key: str) -> bool:
        expiry = self._entries.get(key)
        return expiry is not None and expiry > self.clock()

    def _keep(self, key: str) -> None:
        self._entries[key] = self.clock() + TTL_SECONDS

    def anthropic(self, body: dict[str, Any]) -> CacheUse:
        """The cache use of a Messages request: its breakpoints' prefixes, the longest cached one read."""
        blocks: list[Any] = []
        breakpoints: list[tuple[str, int]] = []  # (digest of the prefix, its tokens), shortest first
        system = body.get("system")
        system_blocks = system if isinstance(system, list) else ([{"type": "text", "text": system}] if system else [])
        in_order = [
            *(("tool", block) for block in body.get("tools") or []),
            *(("system", block) for block in system_blocks),
            *(pair for message in body.get("messages") or [] for pair in _message_blocks(message)),
        ]
        for place, block in in_order:
            blocks.append([place, _without_marks(block)])
            if isinstance(block, dict) and "cache_control" in block:
                digest = hashlib.sha256(json.dumps(blocks, sort_keys=True).encode()).hexdigest()
                breakpoints.append((f"anthropic:{body.get('model')}:{digest}", _tokens(blocks)))
        if not breakpoints:
            return CacheUse()
        read = max((tokens for key, tokens in breakpoints if self._hit(key)), default=0)
        for key, _ in breakpoints:
            self._keep(key)  # a hit refreshes the entry's lifetime, a miss writes it
        return CacheUse(read=read, written=breakpoints[-1][1] - read)

    def openai(self, body: dict[str, Any]) -> CacheUse:
        """The cache use of a Chat Completions request with a `prompt_cache_key`: its tools and system messages."""
        key = body.get("prompt_cache_key")
        if not isinstance(key, str) or not key:
            return CacheUse()
        prefix: list[Any] = [body.get("tools") or []]
        for message in body.get("messages") or []:
            if not isinstance(message, dict) or message.get("role") not in ("system", "developer"):
                break
            prefix.append(message)
        digest = hashlib.sha256(json.dumps(prefix, sort_keys=True).encode()).hexdigest()
        entry = f"openai:{body.get('model')}:{key}:{digest}"
        hit = self._hit(entry)
        self._keep(entry)
        return CacheUse(read=_tokens(prefix) if hit else 0)


def _message_blocks(message: Any) -> list[tuple[str, Any]]:
    """A message's content blocks, each with the message's role (a string content is one text block)."""
    if not isinstance(message, dict):
        return []
    role, content = str(message.get("role")), message.get("content")
    if isinstance(content, str):
        return [(role, {"type": "text", "text": content})]
    return [(role, block) for block in content] if isinstance(content, list) else []
