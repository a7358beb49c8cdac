"""Generate: one normalized model call with keys, budgets, retries, fallbacks and metering.

For each target of the route (primary, then fallbacks) the caller's own key
for that provider is used, else the instance key; a target with no key is
skipped. Transient failures before any content was streamed are retried with
backoff, then the next target is tried; an open circuit skips a target. Once
content has been streamed, a failure goes up typed (UNAVAILABLE /
UPSTREAM_ERROR, transient) and the caller restarts the whole step. Every
attempt writes a usage row (completed, failed, cancelled). The worst-case
cost is reserved against the caller's budgets before the first attempt and
settled to the actual cost at the end; a route with an unpriced model is
refused there when a budget applies (MODEL_UNPRICED), and otherwise its
usage says cost_unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping

import grpc
import structlog

from services.provider.adapters.base import ACCEPTED_KIND, Adapter, GenerateCall, UpstreamError
from services.provider.db.models import INSTANCE_OWNER
from services.provider.keys.base import KeyStore
from services.provider.metering import Attempt, Metering
from services.provider.prices import Price, PriceTable
from services.provider.resilience import Breakers, RetryPolicy
from services.provider.routes import DEMO_PROTOCOL, Route, Routes, Target
from services.provider.timeouts import Timeouts, with_timeouts
from steward.common.v1 import usage_pb2
from steward.errors import StewardError, not_found
from steward.provider.v1 import key_pb2, usage_record_pb2
from steward.provider.v1 import provider_service_pb2 as pb

log = structlog.get_logger(__name__)
CONTENT_EVENTS = frozenset(
    {"text_delta", "reasoning_delta", "tool_call_started", "tool_call_arguments_delta", "tool_call_finished"}
)


def upstream_error(error: UpstreamError, target: Target) -> StewardError:
    """The gRPC error for a failed upstream: UNAVAILABLE if a retry may help, else FAILED_PRECONDITION."""
    code = grpc.StatusCode.UNAVAILABLE if error.transient else grpc.StatusCode.FAILED_PRECONDITION
    metadata = {
        "transient": str(error.transient).lower(),
        "upstream_reason": error.reason,
        "provider": target.upstream.provider,
        "model": target.name,
    }
    if error.retry_after is not None:
        metadata["retry_after_ms"] = str(round(error.retry_after * 1000))
    return StewardError(code, "UPSTREAM_ERROR", f"{target.name}: {error.message}", metadata=metadata)


def _announcement(number: int, route: Route, target: Target) -> pb.GenerateResponse:
    started = pb.AttemptStarted(attempt=number, route=route.name, provider=target.upstream.provider, model=target.model)
    return pb.GenerateResponse(attempt_started=started)


def estimate_input_tokens(call: GenerateCall) -> int:
    """A generous estimate (about 3 characters per token) for the worst-case reservation."""
    characters = len(call.system) + sum(len(t.input_schema_json) + len(t.description) for t in call.tools)
    for message in call.messages:
        for block in message.content:
            characters += len(block.SerializeToString())
    return characters // 3 + 16 * len(call.messages) + 64


class Generator:
    def __init__(
        self,
        routes: Routes,
        adapters: Mapping[str, Adapter],
        keys: KeyStore,
        prices: PriceTable,
        metering: Metering,
        *,
        breakers: Breakers | None = None,
        policy: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._routes = routes
        self._adapters = adapters
        self._keys = keys
        self._prices = prices
        self._metering = metering
        self._breakers = breakers or Breakers()
        self._policy = policy or RetryPolicy()
        self._timeouts = timeouts or Timeouts()
        self._sleep = sleep
        # Decrypted keys (or their absence) per (owner, provider), until a monotonic time. PutKey and
        # DeleteKey on this replica clear an owner's entries at once; elsewhere within `key_ttl`.
        self._key_cache: dict[tuple[str, str], tuple[str | None, float]] = {}
        self.key_ttl = 5.0

    def forget_keys(self, owner_id: str) -> None:
        """Drop cached keys of an owner (INSTANCE_OWNER: every owner, since they may fall back to it)."""
        if owner_id == INSTANCE_OWNER:
            self._key_cache.clear()
            return
        for cached in [k for k in self._key_cache if k[0] == owner_id]:
            del self._key_cache[cached]

    async def _secret(self, owner_id: str, provider: str) -> str | None:
        cached = self._key_cache.get((owner_id, provider))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        secret = await self._keys.secret_for(owner_id, provider)
        if len(self._key_cache) > 10_000:
            self._key_cache.clear()
        self._key_cache[(owner_id, provider)] = (secret, time.monotonic() + self.key_ttl)
        return secret

    async def _key(self, owner_id: str, target: Target) -> tuple[str, key_pb2.KeyScope.ValueType] | None:
        """The caller's key for the target's provider, else the instance's; "" for a keyless upstream."""
        if target.upstream.protocol == DEMO_PROTOCOL:
            return "", key_pb2.KEY_SCOPE_UNSPECIFIED
        own = await self._secret(owner_id, target.upstream.provider)
        if own is not None:
            return own, key_pb2.KEY_SCOPE_USER
        shared = await self._secret(INSTANCE_OWNER, target.upstream.provider)
        if shared is not None:
            return shared, key_pb2.KEY_SCOPE_INSTANCE
        return ("", key_pb2.KEY_SCOPE_UNSPECIFIED) if target.upstream.keyless else None

    async def has_key(self, owner_id: str, target: Target) -> bool:
        """Whether a call by `owner_id` to `target` would find a key."""
        return await self._key(owner_id, target) is not None

    async def select(self, owner_id: str, route: Route) -> tuple[Target, key_pb2.KeyScope.ValueType] | None:
        """The first target of `route` a call by `owner_id` would use now, and whose key; None if none has a key."""
        for target in route.targets:
            key = await self._key(owner_id, target)
            if key is not None:
                return target, key[1]
        return None

    async def _narrowed(self, owner_id: str, route: Route) -> Route:
        """The route a call takes: for "auto", only its first candidate with a key (never the demo model as a
        fallback of a real provider); any other route as it is."""
        if not route.first_with_key:
            return route
        selected = await self.select(owner_id, route)
        return dataclasses.replace(
            route, targets=[selected[0]] if selected else route.targets[-1:], first_with_key=False
        )

    def worst_case_micros(self, route: Route, call: GenerateCall) -> tuple[int, list[str]]:
        """The most the call may cost on any priced target of the route, and the targets that have no price."""
        tokens = estimate_input_tokens(call)
        worst, unpriced = 0, []
        for target in route.targets:
            price = self._prices.price(target.upstream.provider, target.model)
            if price is None:
                unpriced.append(target.name)
            else:
                worst = max(worst, price.worst_case_micros(tokens, call.max_tokens))
        return worst, unpriced

    async def generate(
        self, request: pb.GenerateRequest, owner_id: str, call: GenerateCall
    ) -> AsyncGenerator[pb.GenerateResponse]:
        """Stream one call through the request's route; see the module docstring."""
        target_kind = request.WhichOneof("target")
        route = self._routes.resolve(
            request.route if target_kind == "route" else "", request.model if target_kind == "model" else ""
        )
        route = await self._narrowed(owner_id, route)
        context = Attempt(owner_id, request.agent_id, request.run_id, request.step, request.request_id, route.name)
        worst, unpriced = self.worst_case_micros(route, call)
        reservation = await self._metering.reserve(context, worst, unpriced)
        tally = _Tally(context, route)
        last: StewardError | None = None
        try:
            for target in route.targets:
                key = await self._key(owner_id, target)
                if key is None:
                    if last is None:  # keep an earlier target's real error if there was one
                        last = not_found("MODEL_NOT_FOUND", f"no key for {target.upstream.provider}")
                        last.metadata["cause"] = "no_key"
                    continue
                breaker = self._breakers[target.upstream.provider]
                for tries in range(1, self._policy.max_attempts + 1):
                    if not breaker.allow():
                        last = upstream_error(UpstreamError("CIRCUIT_OPEN", "circuit open", transient=True), target)
                        break
                    outcome = _Outcome()
                    async with contextlib.aclosing(self._attempt(tally, target, key, call, outcome)) as events:
                        async for event in events:
                            yield event
                    if outcome.error is None:
                        return
                    last = upstream_error(outcome.error, target)
                    delay = self._policy.delay(tries, outcome.error.retry_after) if outcome.error.transient else None
                    if delay is None:
                        break  # a refusal, or no tries left: the next target
                    await self._sleep(delay)
            raise last or not_found("MODEL_NOT_FOUND", f"route {route.name!r} has no usable target")
        finally:
            await asyncio.shield(self._metering.settle(reservation, context, tally.spent))

    async def _attempt(
        self,
        tally: _Tally,
        target: Target,
        key: tuple[str, key_pb2.KeyScope.ValueType],
        call: GenerateCall,
        outcome: _Outcome,
    ) -> AsyncGenerator[pb.GenerateResponse]:
        """Stream one try at `target`, announced, and meter it; `outcome.error` is set when it failed before any
        content (the caller may try again). A failure after content goes up typed: never silently retried mid-way."""
        tally.number += 1
        breaker = self._breakers[target.upstream.provider]
        price = self._prices.price(target.upstream.provider, target.model)
        adapter = self._adapters[target.upstream.protocol]
        announced = False
        usage = usage_pb2.Usage()
        streamed = False
        recorded: usage_record_pb2.AttemptOutcome.ValueType = usage_record_pb2.ATTEMPT_OUTCOME_FAILED
        reason = ""
        try:
            stream = adapter.stream(target.upstream, key[0], dataclasses.replace(call, model=target.model))
            async for event in with_timeouts(stream, self._timeouts):
                kind = event.WhichOneof("event")
                if not announced:
                    announced = True
                    yield _announcement(tally.number, tally.route, target)
                if kind == ACCEPTED_KIND:
                    continue
                if kind == "usage":
                    usage.CopyFrom(event.usage)
                    _price(event.usage, price)
                streamed = streamed or kind in CONTENT_EVENTS
                yield event
            recorded = usage_record_pb2.ATTEMPT_OUTCOME_COMPLETED
            breaker.record_success()
        except UpstreamError as error:
            reason = error.reason
            if error.transient:
                breaker.record_failure()
            else:
                breaker.record_success()  # it answered: a refusal says the upstream is up
            if not announced:  # every attempt is announced, also one refused before its stream
                announced = True
                yield _announcement(tally.number, tally.route, target)
            if streamed:
                raise upstream_error(error, target) from error  # the caller restarts the step
            outcome.error = error
        except (asyncio.CancelledError, GeneratorExit):
            recorded = usage_record_pb2.ATTEMPT_OUTCOME_CANCELLED
            breaker.release()
            raise
        except BaseException:
            breaker.release()
            raise
        finally:
            _price(usage, price)
            tally.spent += usage.cost_micros
            await asyncio.shield(
                self._metering.record(
                    tally.context,
                    provider=target.upstream.provider,
                    model=target.model,
                    number=tally.number,
                    outcome=recorded,
                    usage=usage,
                    key_scope=key[1],
                    error_reason=reason,
                )
            )


def _price(usage: usage_pb2.Usage, price: Price | None) -> None:
    """Set the usage's cost from the model's price; an unpriced model's cost is unknown, never $0."""
    usage.cost_micros = price.cost_micros(usage) if price is not None else 0
    usage.cost_unknown = price is None


@dataclasses.dataclass
class _Tally:
    """One Generate call's count across its tries: the attempts made (which number them) and what they cost."""

    context: Attempt
    route: Route
    number: int = 0
    spent: int = 0


@dataclasses.dataclass
class _Outcome:
    """How one try ended: None, completed; else the upstream's error before any content."""

    error: UpstreamError | None = None
