"""ConversationService: conversations and their messages, scoped by the caller."""

from __future__ import annotations

from typing import Any

import grpc

from services.store import validation as v
from services.store.db.conversations import ConversationRepository
from steward.auth import current_principal
from steward.store.v1 import store_service_pb2 as pb
from steward.store.v1 import store_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]

MAX_TITLE_LENGTH = 500


class ConversationServicer(pb_grpc.ConversationServiceServicer):
    def __init__(self, conversations: ConversationRepository) -> None:
        self._conversations = conversations

    async def CreateConversation(
        self, request: pb.CreateConversationRequest, context: Context
    ) -> pb.CreateConversationResponse:
        v.plain_text(request.title, "title", MAX_TITLE_LENGTH)
        if request.agent_id:
            v.require_id(request.agent_id, "agent_id")
        conversation = await self._conversations.create(
            current_principal().user_id, request.title, request.agent_id, v.optional_request_id(request.request_id)
        )
        return pb.CreateConversationResponse(conversation=conversation)

    async def GetConversation(self, request: pb.GetConversationRequest, context: Context) -> pb.GetConversationResponse:
        conversation = await self._conversations.get(current_principal().user_id, v.require_id(request.id, "id"))
        return pb.GetConversationResponse(conversation=conversation)

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: Context
    ) -> pb.ListConversationsResponse:
        items, next_token = await self._conversations.list_conversations(
            current_principal().user_id, request.page_token, v.page_size(request.page_size)
        )
        return pb.ListConversationsResponse(conversations=items, next_page_token=next_token)

    async def DeleteConversation(
        self, request: pb.DeleteConversationRequest, context: Context
    ) -> pb.DeleteConversationResponse:
        await self._conversations.delete(current_principal().user_id, v.require_id(request.id, "id"))
        return pb.DeleteConversationResponse()

    async def AppendMessage(self, request: pb.AppendMessageRequest, context: Context) -> pb.AppendMessageResponse:
        message = await self._conversations.append(
            current_principal().user_id,
            v.require_id(request.conversation_id, "conversation_id"),
            v.chat_message(request.message, "message"),
            v.optional_request_id(request.request_id),
        )
        return pb.AppendMessageResponse(message=message)

    async def ListMessages(self, request: pb.ListMessagesRequest, context: Context) -> pb.ListMessagesResponse:
        items, next_token = await self._conversations.list_messages(
            current_principal().user_id,
            v.require_id(request.conversation_id, "conversation_id"),
            request.page_token,
            v.page_size(request.page_size, default=100, maximum=1000),
        )
        return pb.ListMessagesResponse(messages=items, next_page_token=next_token)
