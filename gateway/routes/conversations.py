"""Conversations and messages: /api/v1/conversations[/{id}[/messages]]."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import presenters
from gateway.bodies import field_error, json_object, optional_str
from gateway.keys import CLIENTS
from steward.common.v1 import content_pb2
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import store_service_pb2 as store_pb

routes = web.RouteTableDef()

MAX_TEXT = 200_000
MAX_BLOCKS = 100


def _page(request: web.Request) -> tuple[int, str]:
    raw = request.query.get("page_size", "0")
    if not raw.isdecimal() or len(raw) > 6:
        raise field_error("page_size", "must be a non-negative integer")
    return int(raw), request.query.get("page_token", "")


def _input_blocks(body: dict[str, Any]) -> list[content_pb2.ContentBlock]:
    content = body.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise field_error("content", "must be a non-empty string or a non-empty list of blocks")
    if len(content) > MAX_BLOCKS:
        raise field_error("content", f"must have at most {MAX_BLOCKS} blocks")
    blocks = []
    for index, item in enumerate(content):
        if not isinstance(item, dict) or item.get("type") != "text" or not isinstance(item.get("text"), str):
            raise field_error(f"content[{index}]", 'must be {"type": "text", "text": "..."}')
        if not item["text"].strip():
            raise field_error(f"content[{index}].text", "must not be blank")
        if len(item["text"]) > MAX_TEXT:
            raise field_error(f"content[{index}].text", f"must be at most {MAX_TEXT} characters")
        blocks.append(content_pb2.ContentBlock(text=content_pb2.TextBlock(text=item["text"])))
    return blocks


@routes.post("/api/v1/conversations")
async def create_conversation(request: web.Request) -> web.Response:
    body = await json_object(request)
    reply = await request.app[CLIENTS].conversations.CreateConversation(
        store_pb.CreateConversationRequest(
            title=optional_str(body, "title", 500),
            request_id=request.headers.get("Idempotency-Key", ""),
        )
    )
    return web.json_response(presenters.conversation_json(reply.conversation), status=201)


@routes.get("/api/v1/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    page_size, page_token = _page(request)
    reply = await request.app[CLIENTS].conversations.ListConversations(
        store_pb.ListConversationsRequest(page_size=page_size, page_token=page_token)
    )
    return web.json_response(
        {
            "conversations": [presenters.conversation_json(c) for c in reply.conversations],
            "next_page_token": reply.next_page_token or None,
        }
    )


@routes.get("/api/v1/conversations/{conversation_id}")
async def get_conversation(request: web.Request) -> web.Response:
    reply = await request.app[CLIENTS].conversations.GetConversation(
        store_pb.GetConversationRequest(id=request.match_info["conversation_id"])
    )
    return web.json_response(presenters.conversation_json(reply.conversation))


@routes.delete("/api/v1/conversations/{conversation_id}")
async def delete_conversation(request: web.Request) -> web.Response:
    await request.app[CLIENTS].conversations.DeleteConversation(
        store_pb.DeleteConversationRequest(id=request.match_info["conversation_id"])
    )
    return web.Response(status=204)


@routes.get("/api/v1/conversations/{conversation_id}/messages")
async def list_messages(request: web.Request) -> web.Response:
    page_size, page_token = _page(request)
    reply = await request.app[CLIENTS].conversations.ListMessages(
        store_pb.ListMessagesRequest(
            conversation_id=request.match_info["conversation_id"], page_size=page_size, page_token=page_token
        )
    )
    return web.json_response(
        {
            "messages": [presenters.message_json(m) for m in reply.messages],
            "next_page_token": reply.next_page_token or None,
        }
    )


@routes.post("/api/v1/conversations/{conversation_id}/messages")
async def post_message(request: web.Request) -> web.Response:
    """Add a user message and start a run that answers it; read the answer from the run's events."""
    body = await json_object(request)
    blocks = _input_blocks(body)
    reply = await request.app[CLIENTS].runtime.CreateRun(
        runtime_pb.CreateRunRequest(
            conversation_id=request.match_info["conversation_id"],
            input=blocks,
            run_id=optional_str(body, "run_id", 64),
            request_id=request.headers.get("Idempotency-Key", "") or optional_str(body, "request_id", 128),
        )
    )
    run = presenters.run_json(reply.run)
    return web.json_response(
        {"run": run, "existed": reply.existed, "events_url": f"/api/v1/runs/{reply.run.id}/events"},
        status=200 if reply.existed else 202,
    )
