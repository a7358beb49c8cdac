"""A run's event stream that resumes by itself: the SSE decoding and the reconnect decisions, with no I/O.

The sync and async clients each run the same small loop around an `EventStream`: connect with its `headers()`,
hand a refused answer to `refused()`, every line to `feed()`, a dropped connection to `dropped()`, and wait the
delay those return. The stream resumes with `Last-Event-ID` = the last seq yielded, so no event is yielded twice
or skipped; it ends after the run's end event.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from steward.client.errors import StewardAPIError, StewardConnectionError, error_for_status
from steward.client.models import RunEvent

__all__ = ["EventStream", "StreamInterruptedError", "StreamPolicy"]

# Answers worth retrying: the gateway or a service behind it is restarting or overloaded. Anything else
# (401, 403, 404, 410, ...) will not change by asking again, so it is raised at once.
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# gRPC codes of an `error` event (a failure after the stream began) that a reconnect may cure.
_TRANSIENT_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"})
# An `error` event names a gRPC code: the status the same failure has as an HTTP answer (the gateway's table, by
# code), so it is raised as the same class.
_CODE_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
}


@dataclass(frozen=True)
class StreamPolicy:
    """How hard an event stream tries to resume. The budget (`max_attempts` reconnects, `max_elapsed` seconds) is
    counted from the last event received, so a long run that loses its connection now and then never runs out."""

    max_attempts: int = 8
    max_elapsed: float = 60.0
    initial_backoff: float = 0.2
    max_backoff: float = 8.0
    # Longer than the gateway's ping interval (15 s by default): silence this long means the connection is dead.
    read_timeout: float = 45.0


class StreamInterruptedError(Exception):
    """The server reported a transient failure inside the stream (an `error` event); the loop reconnects."""


# Backoff jitter needs no secrecy, but SystemRandom keeps the linter's rule for `random` simple to honour.
_jitter = random.SystemRandom()


class EventStream:
    """The state of one `runs.events(...)` iteration across its connections."""

    def __init__(self, run_id: str, after: int, policy: StreamPolicy) -> None:
        self.path = f"/api/v1/runs/{quote(run_id, safe='')}/events"
        self.policy = policy
        self.last_seq = after
        self.done = False
        self._attempts = 0
        self._since = time.monotonic()
        self._last_error: Exception | None = None
        self._reset_frame()

    def headers(self) -> dict[str, str]:
        """The next connection's headers; resuming just after the last event yielded."""
        self._reset_frame()  # a frame cut off by the last connection's end is never dispatched
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_seq:
            headers["Last-Event-ID"] = str(self.last_seq)
        return headers

    def refused(self, status: int, headers: Mapping[str, str], content: bytes) -> float:
        """A non-200 answer: raise it, or the delay before the next try (its `Retry-After` when it has one)."""
        error = error_for_status(status, headers, content)
        if status not in _RETRY_STATUSES:
            raise error
        return self._retry(error, error.retry_after)

    def dropped(self, error: Exception | None) -> float:
        """The connection ended before the run's end event (a read error, a timeout, or a clean close)."""
        return self._retry(error or StewardConnectionError("the event stream closed before the run ended"), None)

    def feed(self, line: str) -> RunEvent | None:
        """One line of the body (without its end of line): the event a completed frame holds, if it is new."""
        if line:
            if not line.startswith(":"):  # a comment (ping)
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    self._event = value
                elif name == "data":
                    self._data.append(value)
            return None
        event, data = self._event, self._data
        self._reset_frame()
        if not data:
            return None
        if event == "error":
            self._raise_error_event("\n".join(data))
        parsed = RunEvent.from_json(json.loads("\n".join(data)))
        if parsed.seq <= self.last_seq:  # already yielded (a server replaying from an older cursor)
            return None
        self.last_seq = parsed.seq
        self.done = parsed.is_end
        self._attempts, self._since = 0, time.monotonic()  # progress: the retry budget starts again
        return parsed

    def _reset_frame(self) -> None:
        self._event = "message"
        self._data: list[str] = []

    def _raise_error_event(self, text: str) -> None:
        try:
            problem = json.loads(text)
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            problem = {}
        code = str(problem.get("status", ""))
        if code in _TRANSIENT_CODES:
            raise StreamInterruptedError(f"{code} {problem.get('reason')}: {problem.get('detail')}")
        raise error_for_status(_CODE_STATUS.get(code, 500), {}, text.encode())

    def _retry(self, error: Exception, retry_after: float | None) -> float:
        """The delay before the next connection, or `error` raised when the policy's budget is spent."""
        self._last_error = error
        self._attempts += 1
        elapsed = time.monotonic() - self._since
        delay = retry_after if retry_after is not None else self._backoff()
        if self._attempts > self.policy.max_attempts or elapsed + delay > self.policy.max_elapsed:
            if isinstance(error, StewardAPIError):  # a 503's reason says more than a summary
                raise error
            raise StewardConnectionError(
                f"the event stream of {self.path} could not be resumed after {self._attempts - 1} attempts "
                f"in {elapsed:.1f} s; last seq {self.last_seq}"
            ) from error
        return delay

    def _backoff(self) -> float:
        """Exponential with equal jitter: half fixed (a floor), half random (so many clients do not reconnect in
        step after the same restart)."""
        if self._attempts == 1:  # a first drop is usually a blip: come back soon
            return _jitter.uniform(0, self.policy.initial_backoff)
        growth: float = 2.0 ** (self._attempts - 1)
        ceiling = min(self.policy.max_backoff, self.policy.initial_backoff * growth)
        return ceiling / 2 + _jitter.uniform(0, ceiling / 2)
