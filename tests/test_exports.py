"""The public names of the shared library's hand-written modules, pinned.

Every hand-written module under libs/steward declares `__all__`; the lists below pin them, so a name becomes
public (or stops being public) only on purpose. The rest of the tree imports only those names: never a private
one (`_name`), never one a module does not export. The generated `*_pb2*` modules and their area packages
(`steward.<area>`, `steward.<area>.v1`, made by `make protos`) are left out.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "libs"
STEWARD = LIBRARY / "steward"
IMPORTERS = ("services", "gateway", "cli", "tests", "bench", "fakes")

EXPORTS: dict[str, list[str]] = {
    "steward": [],
    "steward.agents": ["DEFAULT_AGENT_NAME"],
    "steward.auth": [
        "AUDIENCE",
        "METADATA_KEY",
        "SERVICE_PREFIX",
        "Principal",
        "TokenSigner",
        "TokenVerifier",
        "current_principal",
        "maybe_current_principal",
        "require_service",
        "require_user",
        "reset_principal",
        "service_principal",
        "set_principal",
        "verifier_for",
    ],
    "steward.canonical": ["arguments_hash", "canonical", "canonical_json", "parse", "sha256_hex"],
    "steward.decision_schemas": ["DRAFT_2020_12", "MAX_SCHEMA_LENGTH", "decision_schema_problem"],
    "steward.client": [
        "Agent",
        "AppliedAgent",
        "AsyncClient",
        "AuthenticationError",
        "BadRequestError",
        "Client",
        "ClientTool",
        "Confirmation",
        "ConflictError",
        "ContentBlock",
        "Conversation",
        "CursorExpiredError",
        "Decision",
        "Limits",
        "Message",
        "NotFoundError",
        "Page",
        "PermissionDeniedError",
        "Preview",
        "RateLimitedError",
        "Run",
        "RunError",
        "RunEvent",
        "RunStarted",
        "ServerError",
        "StewardAPIError",
        "StewardClientError",
        "StewardConnectionError",
        "StreamPolicy",
        "Tool",
        "ToolCallDelta",
        "ToolCatalog",
        "ToolResult",
        "ToolServer",
        "UnavailableError",
        "Usage",
    ],
    "steward.client.aio": ["AsyncClient"],
    "steward.client.calls": [
        "DEFAULT_URL",
        "Call",
        "apply_agents",
        "cancel_run",
        "client_headers",
        "create_conversation",
        "create_run",
        "decide_confirmation",
        "delete_conversation",
        "get_agent",
        "get_confirmation",
        "get_conversation",
        "get_run",
        "list_agent_tools",
        "list_agents",
        "list_confirmations",
        "list_conversations",
        "list_messages",
        "list_runs",
        "list_tools",
        "post_message",
        "resolve",
        "submit_tool_results",
    ],
    "steward.client.errors": [
        "AuthenticationError",
        "BadRequestError",
        "ConflictError",
        "CursorExpiredError",
        "NotFoundError",
        "PermissionDeniedError",
        "RateLimitedError",
        "ServerError",
        "StewardAPIError",
        "StewardClientError",
        "StewardConnectionError",
        "UnavailableError",
        "error_for_status",
        "parse_retry_after",
    ],
    "steward.client.models": [
        "END_EVENT_TYPES",
        "Agent",
        "AppliedAgent",
        "ClientTool",
        "Confirmation",
        "ContentBlock",
        "Conversation",
        "Decision",
        "Limits",
        "Message",
        "Page",
        "Preview",
        "Run",
        "RunError",
        "RunEvent",
        "RunStarted",
        "Tool",
        "ToolCallDelta",
        "ToolCatalog",
        "ToolResult",
        "ToolServer",
        "Usage",
    ],
    "steward.client.stream": ["EventStream", "StreamInterruptedError", "StreamPolicy"],
    "steward.client.sync": ["Client"],
    "steward.db": ["READ_ONLY", "configure_sqlite", "create_engine", "create_sessionmaker"],
    "steward.errors": [
        "KNOWN_REASONS",
        "Reason",
        "StewardError",
        "failed_precondition",
        "from_rpc_error",
        "http_status_for",
        "internal",
        "invalid_argument",
        "not_found",
        "not_implemented",
        "to_grpc_status",
        "unauthenticated",
    ],
    "steward.logs": ["configure_logging"],
    "steward.migrations": ["ServiceMigrations"],
    "steward.orm": ["metadata"],
    "steward.paging": [
        "MAX_TOKEN_LENGTH",
        "KeyPart",
        "Keyset",
        "after_key",
        "decode",
        "encode",
        "page_size",
        "read_page",
    ],
    "steward.pg_wakeups": ["PostgresWakeups", "asyncpg_dsn"],
    "steward.rpc": [],
    "steward.rpc.channels": ["AREAS", "DEFAULT_READY_WAIT", "create_channel", "service_config"],
    "steward.rpc.client_errors": ["error_interceptors"],
    "steward.rpc.drain": ["Drain", "shutting_down", "until_drained"],
    "steward.rpc.readiness": ["Readiness"],
    "steward.rpc.interceptors": ["REQUEST_ID_KEY", "ServerInterceptor", "database_away", "principal_interceptors"],
    "steward.rpc.server": [
        "MAX_MESSAGE_BYTES",
        "GrpcServer",
        "ServiceRegistration",
        "registration",
        "serve_main",
        "start_grpc_server",
        "wait_for_shutdown_signal",
    ],
    "steward.settings": ["MIN_SECRET_BYTES", "CommonSettings"],
    "steward.timeutil": ["aware", "now", "timestamp"],
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _generated(path: Path) -> bool:
    """A generated module: `*_pb2*`, or the `__init__` of an area package (`steward/<area>`, `steward/<area>/v1`)."""
    if "_pb2" in path.name:
        return True
    if path.name != "__init__.py":
        return False
    package = path.parent
    return (package / "v1").is_dir() or (package.name == "v1" and package.parent.parent == STEWARD)


def _hand_written_modules() -> list[str]:
    return sorted(_module_name(p) for p in STEWARD.rglob("*.py") if not _generated(p))


def test_the_walk_finds_the_library() -> None:
    modules = _hand_written_modules()
    assert "steward.errors" in modules
    assert "steward.rpc.server" in modules
    assert not any(".v1" in name for name in modules)


@pytest.mark.parametrize("name", _hand_written_modules())
def test_every_hand_written_module_declares_all(name: str) -> None:
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list), f"{name} has no __all__"
    assert name in EXPORTS, f"{name} is not pinned in EXPORTS"


@pytest.mark.parametrize(("name", "expected"), sorted(EXPORTS.items()))
def test_exported_members(name: str, expected: list[str]) -> None:
    module = importlib.import_module(name)
    exported = list(getattr(module, "__all__", []))
    assert exported == expected
    assert len(set(exported)) == len(exported)
    missing = [member for member in exported if not hasattr(module, member)]
    assert missing == []


def _imports(tree: ast.Module) -> Iterator[tuple[int, str, str]]:
    """(line, module, name) for every name the tree takes from a hand-written steward module: `from m import name`,
    and `m.name` where m was bound by `from steward import m` or `import steward.m as m`."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in EXPORTS:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in EXPORTS:
                    aliases[alias.asname or alias.name] = submodule
                else:
                    yield node.lineno, node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in EXPORTS and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            yield node.lineno, aliases[node.value.id], node.attr


def test_the_tree_imports_only_exported_names() -> None:
    sources = [p for root in IMPORTERS for p in (REPO / root).rglob("*.py") if "_pb2" not in p.name]
    assert len(sources) > 30  # the walk still finds the code
    wrong = []
    for path in sources:
        for line, module, name in _imports(ast.parse(path.read_text(), str(path))):
            if name == "*" or name.startswith("_") or name not in EXPORTS[module]:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {module}.{name}")
    assert wrong == []
