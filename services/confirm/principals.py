"""Who may call what (the contract's scoping rules), and how a principal is recorded.

- User RPCs (GetConfirmation, ListConfirmations, DecideConfirmation, ListAuditEvents) serve any
  principal acting for a user, the user's own or a service acting for it; never a service on
  its own account.
- Runtime-only RPCs need the runtime acting for the run's user (token `sub` the user, `act`
  "runtime").
- Feed RPCs (WatchDecisions, ListDecidedConfirmations) need the runtime on its own account
  (`sub` "service:runtime") and serve every user's decisions.

Anyone else gets PERMISSION_DENIED. A principal is recorded (decided_by, audit actor) as the
user id when the user called, and as `service:<actor>` when a service acted for the user.
"""

from __future__ import annotations

import grpc

from steward.auth import SERVICE_PREFIX, Principal, current_principal, require_user
from steward.errors import StewardError

RUNTIME = "runtime"
RUNTIME_SERVICE = f"{SERVICE_PREFIX}{RUNTIME}"


def _denied(message: str) -> StewardError:
    return StewardError(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", message)


def require_person() -> Principal:
    """The principal of a user RPC: a user, possibly acted for by a service."""
    return require_user()


def require_runtime_for_user() -> Principal:
    """The principal of a runtime-only RPC: the runtime acting for a user."""
    principal = current_principal()
    if principal.is_service or principal.actor != RUNTIME:
        raise _denied("only the runtime acting for a user may call this")
    return principal


def require_runtime_service() -> Principal:
    """The principal of a feed RPC: the runtime on its own account."""
    principal = current_principal()
    if principal.user_id != RUNTIME_SERVICE or principal.actor not in ("", RUNTIME):
        raise _denied("only the runtime service may read the decision feed")
    return principal


def principal_id(principal: Principal) -> str:
    """How a principal is recorded: the user id, or `service:<actor>` when a service acted for the user."""
    return f"{SERVICE_PREFIX}{principal.actor}" if principal.actor else principal.user_id
