"""Steward's Python client: `Client` (blocking) and `AsyncClient` over the HTTP API, needing only httpx.

from steward.client import Client
with Client() as steward:  # STEWARD_URL, STEWARD_TOKEN
    started = steward.messages.post(steward.conversations.create("hi").id, "Hello")
    for event in steward.runs.events(started.run.id):
        print(event.type, event.data)
"""

from steward.client.aio import AsyncClient
from steward.client.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    CursorExpiredError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    StewardAPIError,
    StewardClientError,
    StewardConnectionError,
    UnavailableError,
)
from steward.client.models import (
    Agent,
    AppliedAgent,
    ClientTool,
    Confirmation,
    ContentBlock,
    Conversation,
    Decision,
    Limits,
    Message,
    Page,
    Preview,
    Run,
    RunError,
    RunEvent,
    RunStarted,
    Tool,
    ToolCallDelta,
    ToolCatalog,
    ToolResult,
    ToolServer,
    Usage,
)
from steward.client.stream import StreamPolicy
from steward.client.sync import Client

__all__ = [
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
]
