"""Which failures may pass (a dependency away, a stream cut off) and which end the run: the runtime's one classifier.

`classify` sorts a failure into three faults:

- OUTAGE: the dependency itself is away or cut off: UNAVAILABLE (a refused connection, a broken stream, a server
  shutting down all arrive as it), DEADLINE_EXCEEDED on a call that may be repeated (idempotent), or a connection
  error the socket raised. The runtime tries again with `backoff` for up to `OUTAGE_BOUND` seconds, then gives the
  run back (releases its lease) instead of failing it.
- PASSING: the dependency answered and says this may pass: the provider's `transient` metadata flag, which it sets
  on upstream errors after its own retries and fallbacks (rate limits, 5xx, a cut upstream stream). A model step is
  restarted a few times (`steps.STEP_RESTARTS`): each try may be charged, so it is not retried for as long.
- TERMINAL: everything else. LEASE_LOST (another replica holds the run) is terminal whatever the code and flag; so
  is a `transient: "false"` flag.

`classify_tool` sorts the status an MCP tool call ended with (ADR 0016): the server away is an OUTAGE when the call was
not sent (UNAVAILABLE), or was cut off (CONNECTION_LOST) and may be made again (`safe_to_repeat`: a read, or a write
whose server applies it once per idempotency key). The call is then made again with its key, within its own tool
timeout. Everything else stands as it is (TERMINAL: the result goes to the model, or to the ledger as outcome unknown).
"""

from __future__ import annotations

import enum
import random
import time

import grpc

from services.runtime.tools.model import ToolCallStatus
from steward.errors import Reason, StewardError

# How long a dependency may stay away before the run is given back (its lease released, a sweep takes it from its
# checkpoint), counted from the first failure in a row. Long enough for a restart or a failover, short enough that
# a replica does not sit on a run a healthier one could drive. A run's own wall-clock limit (30 s for interactive
# runs by default) may end it first, incomplete (timeout), as it would without an outage.
OUTAGE_BOUND = 30.0
BACKOFF_START = 0.2
BACKOFF_CAP = 2.0


class Fault(enum.Enum):
    OUTAGE = "outage"
    PASSING = "passing"
    TERMINAL = "terminal"

    @property
    def transient(self) -> bool:
        return self is not Fault.TERMINAL


def classify(error: BaseException, *, idempotent: bool) -> Fault:
    """The fault a failed call shows; `idempotent`: the call may be made again with no effect twice (a read, or a
    write keyed by a request id), so that a deadline that passed says no more than that the server was slow."""
    if isinstance(error, StewardError):
        return _classify_status(error.code, error.reason, error.metadata.get("transient"), idempotent=idempotent)
    if isinstance(error, ConnectionError):  # refused, reset, a broken pipe: nothing answered
        return Fault.OUTAGE
    return Fault.TERMINAL


def classify_tool(status: ToolCallStatus, *, safe_to_repeat: bool) -> Fault:
    """The fault a tool call's status shows. `safe_to_repeat`: a call made again with the same idempotency key has no
    further effect (a read; a write whose server honours the key). TIMEOUT is the call's own limit, not an outage (a
    read that passes it ends the run incomplete); a PROTOCOL_ERROR is the server's answer; neither is repeated."""
    if status is ToolCallStatus.UNAVAILABLE:  # not sent: nothing ran, whatever the tool
        return Fault.OUTAGE
    if status is ToolCallStatus.CONNECTION_LOST and safe_to_repeat:  # it may have run: only a repeat that is safe
        return Fault.OUTAGE
    return Fault.TERMINAL


def _classify_status(code: grpc.StatusCode, reason: str, flag: str | None, *, idempotent: bool) -> Fault:
    if reason == Reason.LEASE_LOST:  # fenced: trying again could only write around the new holder
        return Fault.TERMINAL
    # Then the sender's own word: it knows whether its upstream's failure may pass.
    if flag == "true":
        return Fault.PASSING
    if flag == "false":
        return Fault.TERMINAL
    if code == grpc.StatusCode.UNAVAILABLE:
        return Fault.OUTAGE
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and idempotent:
        return Fault.OUTAGE
    return Fault.TERMINAL


def backoff(attempt: int) -> float:
    """Seconds to wait before try `attempt + 1` (0 for the first retry): exponential from `BACKOFF_START`, capped at
    `BACKOFF_CAP`, with jitter (half to all of it) so that runs cut off together do not come back together."""
    delay = min(BACKOFF_CAP, BACKOFF_START * 2.0 ** min(attempt, 16))
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


class Outage:
    """One dependency's failures in a row: the wait before the next try, until it has been away `OUTAGE_BOUND`."""

    def __init__(self, bound: float | None = None) -> None:
        self._bound = OUTAGE_BOUND if bound is None else bound  # read when made, so a test may shorten it
        self._since: float | None = None
        self._attempt = 0

    def next_wait(self) -> float | None:
        """After a failure: seconds to wait before trying again, or None when the dependency has been away too
        long (the caller gives up: it gives the run back)."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if now - self._since >= self._bound:
            return None
        wait = backoff(self._attempt)
        self._attempt += 1
        return wait

    @property
    def began(self) -> bool:
        """True right after the first failure of this outage (the one a client is told about)."""
        return self._attempt == 1

    def over(self) -> None:
        """The dependency answered: a later failure starts a new outage."""
        self._since, self._attempt = None, 0
