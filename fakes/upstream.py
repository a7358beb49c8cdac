"""A scriptable fake of the Anthropic and OpenAI HTTP APIs, served by aiohttp on a real port.

Each model request (`POST /v1/messages`, `POST /v1/chat/completions`) takes the next scripted behaviour from the
queue, or the default one. Every request is recorded, with its headers (names lower-cased) and its parsed body.
Any API key is accepted; a request with no key, or missing a field the real API requires, is refused the way the
real API refuses it (without taking a scripted behaviour). A request with a caching hint (`cache_control`
breakpoints, a `prompt_cache_key`) meets a prompt cache (fakes/cache.py) and reports the tokens it read or wrote.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fakes import anthropic as anthropic_wire
from fakes import openai as openai_wire
from fakes.cache import PromptCache
from fakes.script import (
    Behavior,
    Cut,
    Fail,
    FakeToolCall,
    Malformed,
    RecordedRequest,
    Reply,
    Stall,
    StreamError,
    capped_reply,
    reply_of,
)

# The behaviours are re-exported: `from fakes.upstream import FakeUpstream, Reply, ...` works as well as `from fakes`.
__all__ = [
    "Behavior",
    "Cut",
    "Fail",
    "FakeToolCall",
    "FakeUpstream",
    "Malformed",
    "RecordedRequest",
    "Reply",
    "Stall",
    "StreamError",
]


@dataclass(frozen=True)
class _Wire:
    """One protocol's formats."""

    name: str
    request_error: Callable[[dict[str, str], Any], Fail | None]
    error_body: Callable[[Fail], dict[str, Any]]
    response_headers: Callable[[], dict[str, str]]
    whole: Callable[[Reply, str], dict[str, Any]]
    stream: Callable[[Reply, str, dict[str, Any]], list[bytes]]
    malformed_chunk: Callable[[bytes | None], bytes]
    stream_error_chunk: Callable[[Fail], bytes]


def _openai_stream(reply: Reply, model: str, body: dict[str, Any]) -> list[bytes]:
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return openai_wire.stream_chunks(reply, model, include_usage)


_ANTHROPIC = _Wire(
    name="anthropic",
    request_error=anthropic_wire.request_error,
    error_body=anthropic_wire.error_body,
    response_headers=anthropic_wire.response_headers,
    whole=anthropic_wire.message,
    stream=lambda reply, model, _body: anthropic_wire.stream_chunks(reply, model),
    malformed_chunk=anthropic_wire.malformed_chunk,
    stream_error_chunk=anthropic_wire.stream_error_chunk,
)
_OPENAI = _Wire(
    name="openai",
    request_error=openai_wire.request_error,
    error_body=openai_wire.error_body,
    response_headers=openai_wire.response_headers,
    whole=openai_wire.completion,
    stream=_openai_stream,
    malformed_chunk=openai_wire.malformed_chunk,
    stream_error_chunk=openai_wire.stream_error_chunk,
)


class FakeUpstream:
    """Fake Anthropic + OpenAI upstream. `enqueue` behaviours; they are consumed one per model request."""

    def __init__(self, default: Behavior | None = None) -> None:
        self.default: Behavior = default if default is not None else Reply()
        self.requests: list[RecordedRequest] = []
        self.cache = PromptCache()  # what requests with a caching hint left cached (fakes/cache.py)
        self._queue: deque[Behavior] = deque()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    def enqueue(self, *behaviors: Behavior) -> None:
        self._queue.extend(behaviors)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._runner is not None:
            raise RuntimeError("the fake upstream is already started")
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        # Cancel a handler when its client goes away (a stalled reply must not outlive a timed-out client).
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self._url = f"http://{bound_host}:{bound_port}"
        return self._url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
        self._url = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the fake upstream is not started")
        return self._url

    @property
    def anthropic_base_url(self) -> str:
        """The root URL: the anthropic SDK appends `/v1/messages`."""
        return self.url

    @property
    def openai_base_url(self) -> str:
        """The root URL + `/v1`: the openai SDK appends `/chat/completions`."""
        return self.url + "/v1"

    # -- handlers --------------------------------------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self._model_request(request, _ANTHROPIC)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._model_request(request, _OPENAI)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        """Not scripted: always the list, in the Anthropic shape when asked with an `anthropic-version` header."""
        headers = {name.lower(): value for name, value in request.headers.items()}
        protocol = "anthropic" if "anthropic-version" in headers else "openai"
        self.requests.append(RecordedRequest(protocol, request.path, headers, {}))
        if protocol == "anthropic":
            return web.json_response(anthropic_wire.models(openai_wire.MODELS), headers=_ANTHROPIC.response_headers())
        return web.json_response(openai_wire.models(), headers=_OPENAI.response_headers())

    async def _model_request(self, request: web.Request, wire: _Wire) -> web.StreamResponse:
        headers = {name.lower(): value for name, value in request.headers.items()}
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.requests.append(RecordedRequest(wire.name, request.path, headers, body if isinstance(body, dict) else {}))
        refusal = wire.request_error(headers, body)
        if refusal is not None:
            return self._fail(wire, refusal)
        behavior = self._queue.popleft() if self._queue else self.default
        if isinstance(behavior, Fail):
            return self._fail(wire, behavior)
        reply = self._cached(wire, body, capped_reply(reply_of(behavior), wire.name, body))
        model = str(body["model"])
        if isinstance(behavior, StreamError) and body.get("stream") is not True:
            return self._fail(wire, Fail(behavior.status, message=behavior.message))  # no stream to fail inside
        if isinstance(behavior, Stall) and (behavior.after_chunks == 0 or body.get("stream") is not True):
            await asyncio.sleep(behavior.seconds)
        if body.get("stream") is True:
            return await self._stream(request, wire, behavior, wire.stream(reply, model, body), reply.chunk_delay)
        return await self._whole(request, wire, behavior, wire.whole(reply, model))

    def _cached(self, wire: _Wire, body: dict[str, Any], reply: Reply) -> Reply:
        """The reply with the prompt cache's reads and writes for this request (fakes/cache.py), unless the script
        set cache tokens of its own."""
        if reply.cache_read_input_tokens or reply.cache_write_input_tokens:
            return reply
        use = self.cache.anthropic(body) if wire is _ANTHROPIC else self.cache.openai(body)
        if not use.read and not use.written:
            return reply
        return dataclasses.replace(reply, cache_read_input_tokens=use.read, cache_write_input_tokens=use.written)

    def _fail(self, wire: _Wire, fail: Fail) -> web.StreamResponse:
        headers = wire.response_headers()
        if fail.retry_after is not None:
            seconds = fail.retry_after
            headers["retry-after"] = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
        return web.json_response(wire.error_body(fail), status=fail.status, headers=headers)

    async def _whole(
        self, request: web.Request, wire: _Wire, behavior: Behavior, payload: dict[str, Any]
    ) -> web.StreamResponse:
        """A non-streamed answer. A `Cut` sends half the body it announced; a `Malformed` sends a body that is not
        JSON."""
        headers = wire.response_headers()
        if isinstance(behavior, Malformed):
            return web.Response(body=b'{"id": "broken", "content": [', content_type="application/json", headers=headers)
        data = json.dumps(payload).encode()
        if not isinstance(behavior, Cut):
            return web.Response(body=data, content_type="application/json", headers=headers)
        response = web.StreamResponse(headers=headers)
        response.content_type = "application/json"
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        return self._cut(request, response)

    async def _stream(
        self, request: web.Request, wire: _Wire, behavior: Behavior, chunks: list[bytes], delay: float
    ) -> web.StreamResponse:
        """Server-sent events, one chunk per event; a misbehaviour applies after its `after_chunks` chunks."""
        response = web.StreamResponse(headers=wire.response_headers() | {"cache-control": "no-cache"})
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        await response.prepare(request)
        try:
            stall_at = min(behavior.after_chunks, len(chunks)) if isinstance(behavior, Stall) else -1
            for index in range(len(chunks) + 1):
                if isinstance(behavior, Stall) and 0 < stall_at == index:
                    await asyncio.sleep(behavior.seconds)
                if isinstance(behavior, Cut) and behavior.after_chunks <= index:
                    return self._cut(request, response)
                if isinstance(behavior, StreamError) and behavior.after_chunks <= index:
                    fail = Fail(behavior.status, message=behavior.message)
                    await response.write(wire.stream_error_chunk(fail))
                    break
                if isinstance(behavior, Malformed) and behavior.after_chunks <= index:
                    await response.write(wire.malformed_chunk(chunks[index] if index < len(chunks) else None))
                    break
                if index == len(chunks):
                    break
                if index > 0 and delay > 0:
                    await asyncio.sleep(delay)
                await response.write(chunks[index])
            await response.write_eof()
        except ConnectionError:  # the client went away mid-stream
            pass
        return response

    @staticmethod
    def _cut(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """Drop the connection without finishing the body: the client sees a truncated response, not a clean end."""
        transport = request.transport
        if transport is not None:
            transport.close()
        response.force_close()
        return response
