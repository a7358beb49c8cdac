"""Conversations and messages: /api/v1/conversations[/{id}[/messages]]."""

from __future__ import annotations

from aiohttp import web

from gateway import presenters
from gateway.app_keys import CLIENTS
from gateway.bodies import idempotency_key, input_blocks, json_object, page
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import store_service_pb2 as store_pb

routes = web.RouteTableDef()


@routes.post("/api/v1/conversations")
async def create_conversation(request: web.Request) -> web.Response:
    body = await json_object(request)
    reply = await request.app[CLIENTS].conversations.CreateConversation(
        store_pb.CreateConversationRequest(
            title=body.get("title") or "",
            request_id=idempotency_key(request),
        )
    )
    return web.json_response(presenters.conversation_json(reply.conversation), status=201)


@routes.get("/api/v1/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    page_size, page_token = page(request)
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
    page_size, page_token = page(request)
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
    reply = await request.app[CLIENTS].runtime.CreateRun(
        runtime_pb.CreateRunRequest(
            conversation_id=request.match_info["conversation_id"],
            input=input_blocks(body["content"]),
            run_id=body.get("run_id") or "",
            request_id=idempotency_key(request) or body.get("request_id") or "",
        )
    )
    run = presenters.run_json(reply.run)
    return web.json_response(
        {"run": run, "existed": reply.existed, "events_url": f"/api/v1/runs/{reply.run.id}/events"},
        status=200 if reply.existed else 202,
    )
