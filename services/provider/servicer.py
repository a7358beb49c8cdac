"""ProviderService: a thin adapter from the contract to the generator, keys and metering."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import grpc

from services.provider import demo
from services.provider.adapters.base import GenerateCall
from services.provider.coalesce import coalesced
from services.provider.db.models import INSTANCE_OWNER
from services.provider.generate import Generator
from services.provider.keys.base import KeyStore, StoredKey
from services.provider.metering import Metering
from services.provider.routes import Routes, Target
from services.provider.usage import UsageQueries, page_size
from steward import paging
from steward.auth import Principal, current_principal, require_service, require_user
from steward.errors import invalid_argument
from steward.provider.v1 import budget_pb2, key_pb2, model_route_pb2
from steward.provider.v1 import provider_service_pb2 as pb
from steward.provider.v1 import provider_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]

MAX_MESSAGES = 10_000
MAX_OUTPUT_TOKENS = 200_000
DEFAULT_MAX_TOKENS = 1024
MAX_BUDGET_MICROS = 10**15
_KEYS_KIND = "keys.1"
_SCOPE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _key_message(key: StoredKey) -> key_pb2.ProviderKey:
    message = key_pb2.ProviderKey(
        id=key.id,
        provider=key.provider,
        label=key.label,
        last4=key.last4,
        scope=key_pb2.KEY_SCOPE_INSTANCE if key.owner_id == INSTANCE_OWNER else key_pb2.KEY_SCOPE_USER,
    )
    message.create_time.FromDatetime(key.create_time)
    message.update_time.FromDatetime(key.update_time)
    return message


def _key_owner(principal: Principal, scope: int) -> str:
    """Users manage their own keys; the instance's keys are managed by services (admin tools) only."""
    if scope == key_pb2.KEY_SCOPE_INSTANCE:
        require_service()
        return INSTANCE_OWNER
    if scope not in (key_pb2.KEY_SCOPE_UNSPECIFIED, key_pb2.KEY_SCOPE_USER):
        raise invalid_argument("scope", "unknown key scope")
    return require_user().user_id


def _target(target: Target) -> model_route_pb2.ModelTarget:
    return model_route_pb2.ModelTarget(provider=target.upstream.provider, model=target.model)


def _call(request: pb.GenerateRequest) -> GenerateCall:
    if not request.messages:
        raise invalid_argument("messages", "messages must not be empty")
    if len(request.messages) > MAX_MESSAGES:
        raise invalid_argument("messages", f"at most {MAX_MESSAGES} messages")
    if not 0 <= request.max_tokens <= MAX_OUTPUT_TOKENS:
        raise invalid_argument("max_tokens", f"max_tokens must be 0..{MAX_OUTPUT_TOKENS}")
    if request.WhichOneof("target") is None:
        raise invalid_argument("target", "a route or a model is required")
    if request.reasoning_budget_tokens < 0:
        raise invalid_argument("reasoning_budget_tokens", "must not be negative")
    return GenerateCall(
        model="",
        messages=list(request.messages),
        system=request.system,
        tools=list(request.tools),
        max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=request.temperature if request.HasField("temperature") else None,
        stop_sequences=list(request.stop_sequences),
        reasoning_budget_tokens=request.reasoning_budget_tokens,
        cache_prefix_messages=max(0, request.prompt_cache.prefix_messages),
        cache_key=request.prompt_cache.cache_key,
        prompt_cache=request.HasField("prompt_cache"),
    )


def _budget_scope(
    scope: budget_pb2.BudgetScope.ValueType, scope_id: str
) -> tuple[budget_pb2.BudgetScope.ValueType, str]:
    if scope in (budget_pb2.BUDGET_SCOPE_UNSPECIFIED, budget_pb2.BUDGET_SCOPE_USER):
        if scope_id:
            raise invalid_argument("scope_id", "the user scope takes no scope_id")
        return budget_pb2.BUDGET_SCOPE_USER, ""
    if scope in (budget_pb2.BUDGET_SCOPE_AGENT, budget_pb2.BUDGET_SCOPE_RUN):
        if not _SCOPE_ID.fullmatch(scope_id):
            raise invalid_argument("scope_id", "an agent or run id is required")
        return scope, scope_id
    raise invalid_argument("scope", "unknown budget scope")


class ProviderServicer(pb_grpc.ProviderServiceServicer):
    def __init__(
        self,
        generator: Generator,
        routes: Routes,
        keys: KeyStore,
        metering: Metering,
        usage: UsageQueries,
        *,
        coalesce_window: float = 0.0,
    ) -> None:
        self._generator = generator
        self._routes = routes
        self._keys = keys
        self._metering = metering
        self._usage = usage
        self._coalesce_window = coalesce_window

    async def Generate(self, request: pb.GenerateRequest, context: Context) -> AsyncIterator[pb.GenerateResponse]:
        owner = require_user().user_id
        events = self._generator.generate(request, owner, _call(request))
        async for event in coalesced(events, self._coalesce_window):
            yield event

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        """Every routed model, and whether the caller has a key for it (own or the instance's)."""
        owner = current_principal().user_id
        models = []
        for target in self._routes.targets():
            if target.upstream.provider == demo.PROVIDER:
                models.append(demo.model())
                continue
            available = await self._generator.has_key(owner, target)
            models.append(
                model_route_pb2.Model(
                    name=target.name, provider=target.upstream.provider, model=target.model, available=available
                )
            )
        return pb.ListModelsResponse(models=models)

    async def ListModelRoutes(self, request: pb.ListModelRoutesRequest, context: Context) -> pb.ListModelRoutesResponse:
        """Every named route and every provider, and what a call by the caller would use now."""
        owner = current_principal().user_id
        routes = []
        for route in self._routes.routes():
            primary, *fallbacks = route.targets
            message = model_route_pb2.ModelRoute(
                name=route.name,
                description=route.description,
                primary=_target(primary),
                fallbacks=[_target(t) for t in fallbacks],
            )
            selected = await self._generator.select(owner, route)
            if selected is not None:
                message.available = True
                message.selected.CopyFrom(_target(selected[0]))
                message.selected_key_scope = selected[1]
            routes.append(message)
        providers = [
            model_route_pb2.ModelProvider(
                name=upstream.provider,
                keyless=upstream.keyless,
                available=await self._generator.has_key(owner, Target(upstream, "")),
            )
            for upstream in self._routes.upstreams()
        ]
        return pb.ListModelRoutesResponse(routes=routes, providers=providers)

    async def PutKey(self, request: pb.PutKeyRequest, context: Context) -> pb.PutKeyResponse:
        owner = _key_owner(current_principal(), request.scope)
        if not self._routes.takes_keys(request.provider):
            raise invalid_argument("provider", "not a provider of this deployment that takes a key")
        stored = await self._keys.put(owner, request.provider, request.label, request.secret)
        self._generator.forget_keys(owner)
        return pb.PutKeyResponse(key=_key_message(stored))

    async def DeleteKey(self, request: pb.DeleteKeyRequest, context: Context) -> pb.DeleteKeyResponse:
        principal = current_principal()
        owner = INSTANCE_OWNER if principal.is_service else principal.user_id
        if not request.id:
            raise invalid_argument("id", "id is required")
        await self._keys.delete(owner, request.id)
        self._generator.forget_keys(owner)
        return pb.DeleteKeyResponse()

    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        principal = current_principal()
        owner = INSTANCE_OWNER if principal.is_service else principal.user_id
        # Key stores list by provider, and an owner has one key per provider: the provider is the keyset.
        after = paging.decode(request.page_token, _KEYS_KIND, (str,))
        size = page_size(request.page_size)
        # Sorted here, in the order the token compares in: a database's collation may order names otherwise.
        listed = sorted(await self._keys.list(owner), key=lambda key: key.provider)
        keys = [key for key in listed if after is None or key.provider > after[0]]
        window = keys[:size]
        next_token = paging.encode(_KEYS_KIND, (window[-1].provider,)) if len(keys) > size else ""
        return pb.ListKeysResponse(keys=[_key_message(k) for k in window], next_page_token=next_token)

    async def GetBudget(self, request: pb.GetBudgetRequest, context: Context) -> pb.GetBudgetResponse:
        scope, scope_id = _budget_scope(request.scope, request.scope_id)
        budget = await self._metering.get_budget(require_user().user_id, scope, scope_id)
        return pb.GetBudgetResponse(budget=budget)

    async def SetBudget(self, request: pb.SetBudgetRequest, context: Context) -> pb.SetBudgetResponse:
        scope, scope_id = _budget_scope(request.scope, request.scope_id)
        if not 0 <= request.limit_micros <= MAX_BUDGET_MICROS:
            raise invalid_argument("limit_micros", f"limit_micros must be 0..{MAX_BUDGET_MICROS}")
        period = request.period or budget_pb2.BUDGET_PERIOD_MONTH
        if period not in (
            budget_pb2.BUDGET_PERIOD_DAY,
            budget_pb2.BUDGET_PERIOD_MONTH,
            budget_pb2.BUDGET_PERIOD_LIFETIME,
        ):
            raise invalid_argument("period", "unknown budget period")
        budget = await self._metering.set_budget(require_user().user_id, scope, scope_id, request.limit_micros, period)
        return pb.SetBudgetResponse(budget=budget)

    async def ListUsageRecords(
        self, request: pb.ListUsageRecordsRequest, context: Context
    ) -> pb.ListUsageRecordsResponse:
        records, next_token = await self._usage.records(require_user().user_id, request)
        return pb.ListUsageRecordsResponse(records=records, next_page_token=next_token)

    async def SummarizeUsage(self, request: pb.SummarizeUsageRequest, context: Context) -> pb.SummarizeUsageResponse:
        summaries, next_token = await self._usage.summarize(require_user().user_id, request)
        return pb.SummarizeUsageResponse(summaries=summaries, next_page_token=next_token)
