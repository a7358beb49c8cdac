"""How many 2025-11-25 MCP sessions each user holds open on this replica, and the cap on them.

The SDK caps the sessions of the whole replica (`mcp_max_sessions`); without a cap per user, one user could
open them all and lock everyone else out. So every request that would open a session (one without
`Mcp-Session-Id` on the session path) first **reserves** a place among its user's `mcp_max_sessions_per_user`:

- at the cap, the request is refused before the SDK sees it (`SessionLimitError`: 429 `RATE_LIMITED`);
- a response that opens a session (a status below 400 carrying `Mcp-Session-Id`) turns the reservation into
  that session; any other end of the request (refused, failed, the client gone) frees it. Reserving before
  the request is served means concurrent initializes cannot overshoot the cap.

A session is forgotten however it ends: the SDK's manager (`CountingSessionManager`) reports every session it
discards (the client's DELETE, the idle timeout, a crashed session, a refused opening request), and the
endpoint also forgets one at once when its owner's DELETE succeeds or its owner gets 404 for it. Another
user's request naming the session (answered 404 by the SDK) changes nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from gateway.mcp.bridge import AsgiApp, Message, Receive, Scope, Send

_SESSION_HEADER = MCP_SESSION_ID_HEADER.lower().encode("latin-1")


class SessionLimitError(Exception):
    """The user holds as many sessions as one user may."""

    def __init__(self, held: int, cap: int) -> None:
        super().__init__(f"{held} open sessions of at most {cap}")
        self.held = held
        self.cap = cap


class SessionCounts:
    """The open sessions of each user, and the openings in flight, on this replica."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._owners: dict[str, str] = {}  # session id -> user id
        self._open: dict[str, set[str]] = {}  # user id -> session ids
        self._opening: Counter[str] = Counter()  # user id -> requests that may open a session, in flight

    def held(self, user_id: str) -> int:
        return len(self._open.get(user_id, ())) + self._opening[user_id]

    def reserve(self, user_id: str) -> None:
        """Take a place for a session `user_id` may open; SessionLimitError at the cap."""
        held = self.held(user_id)
        if held >= self.per_user:
            raise SessionLimitError(held, self.per_user)
        self._opening[user_id] += 1

    def settle(self, user_id: str, session_id: str | None) -> None:
        """The reserving request ended: it opened `session_id`, or (None) no session."""
        self._opening[user_id] -= 1
        if self._opening[user_id] <= 0:
            del self._opening[user_id]
        if session_id:
            self._owners[session_id] = user_id
            self._open.setdefault(user_id, set()).add(session_id)

    def forget(self, session_id: str, user_id: str | None = None) -> None:
        """The session ended (only if `user_id` owns it, when given)."""
        owner = self._owners.get(session_id)
        if owner is None or (user_id is not None and owner != user_id):
            return
        del self._owners[session_id]
        sessions = self._open[owner]
        sessions.discard(session_id)
        if not sessions:
            del self._open[owner]


class CountingSessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, telling `counts` of every session it discards, whatever the cause."""

    def __init__(self, *args: Any, counts: SessionCounts, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counts = counts

    async def _discard_session(self, session_id: str, transport: StreamableHTTPServerTransport) -> None:
        self.counts.forget(session_id)
        await super()._discard_session(session_id, transport)


def _session_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    return next((value.decode("latin-1") for name, value in headers if name.lower() == _SESSION_HEADER), None)


def counted(app: AsgiApp, counts: SessionCounts, user_id: str, *, opening: bool) -> AsgiApp:
    """`app` serving one request of `user_id`'s, keeping `counts`. `opening`: the request names no session and
    may open one (its place is reserved already); otherwise it may end the one it names."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        named = _session_id(scope["headers"])
        unsettled = opening

        async def watch(message: Message) -> None:
            nonlocal unsettled
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if unsettled:  # settled now, before the client learns the session id and could end it
                    unsettled = False
                    opened = _session_id(list(message.get("headers", []))) if status < 400 else None
                    counts.settle(user_id, opened)
                elif named is not None and (status == 404 or (scope["method"] == "DELETE" and status < 300)):
                    counts.forget(named, user_id)  # the owner's session is gone (another user's 404: not theirs)
            await send(message)

        try:
            await app(scope, receive, watch)
        finally:
            if unsettled:  # no response at all
                counts.settle(user_id, None)

    return serve
