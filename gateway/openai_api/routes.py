"""GET /v1/models[/{model}] and POST /v1/chat/completions."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import structlog
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from gateway import run_log
from gateway.app_keys import CLIENTS, SETTINGS, Clients
from gateway.bodies import json_object
from gateway.middlewares import REQUEST_ID
from gateway.openai_api.errors import OpenAIError, as_openai_error, openai_errors
from gateway.openai_api.requests import ChatRequest, ContinueAfterConfirmation, NewRun, SubmitResults, parse
from gateway.openai_api.shapes import DONE, Answer, event_data, model_json
from steward.agents import DEFAULT_AGENT_NAME
from steward.auth import current_principal
from steward.errors import Reason, StewardError
from steward.runtime.v1 import runtime_service_pb2 as runtime_pb
from steward.store.v1 import agent_pb2, run_pb2
from steward.store.v1 import store_service_pb2 as store_pb

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

MAX_AGENT_PAGES = 20


async def _agents(clients: Clients) -> list[agent_pb2.Agent]:
    agents: list[agent_pb2.Agent] = []
    token = ""
    for _ in range(MAX_AGENT_PAGES):
        reply = await clients.agents.ListAgents(store_pb.ListAgentsRequest(page_size=500, page_token=token))
        agents.extend(reply.agents)
        token = reply.next_page_token
        if not token:
            break
    return agents


async def _agent_id(clients: Clients, model: str) -> str:
    """The agent a model name stands for: the caller's agent of that name, else "" for "steward"."""
    try:
        return (await clients.agents.GetAgent(store_pb.GetAgentRequest(name=model))).agent.id
    except StewardError as error:
        if error.reason != Reason.AGENT_NOT_FOUND:
            raise
    if model == DEFAULT_AGENT_NAME:
        return ""
    raise _model_not_found(model)


def _models(agents: list[agent_pb2.Agent]) -> list[dict[str, object]]:
    owner = current_principal().user_id
    models = [model_json(agent.name, agent.create_time.seconds, owner) for agent in agents]
    if all(agent.name != DEFAULT_AGENT_NAME for agent in agents):
        models.insert(0, model_json(DEFAULT_AGENT_NAME, 0, "steward"))
    return models


@routes.get("/v1/models")
@openai_errors
async def list_models(request: web.Request) -> web.StreamResponse:
    agents = await _agents(request.app[CLIENTS])
    return web.json_response({"object": "list", "data": _models(agents)})


@routes.get("/v1/models/{model}")
@openai_errors
async def get_model(request: web.Request) -> web.StreamResponse:
    name = request.match_info["model"]
    for model in _models(await _agents(request.app[CLIENTS])):
        if model["id"] == name:
            return web.json_response(model)
    raise OpenAIError(404, "model_not_found", f"The model `{name}` does not exist or you do not have access to it.")


def _model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404, "model_not_found", f"The model `{model}` does not exist or you do not have access to it.", param="model"
    )


async def _new_run(clients: Clients, chat: ChatRequest, plan: NewRun) -> run_pb2.Run:
    """A run answering the request's last user message, in a new conversation holding the request's history: one
    runtime call, which finds the agent named by `model`, and creates the conversation and the run (and claims
    it) in one store transaction."""
    request = runtime_pb.CreateRunRequest(input=plan.input, agent_name=chat.model, client_tools=chat.tools)
    request.new_conversation.title = f"{chat.model} (/v1/chat/completions)"
    request.new_conversation.messages.extend(plan.history)
    try:
        return (await clients.runtime.CreateRun(request)).run
    except StewardError as error:
        if error.reason == Reason.AGENT_NOT_FOUND:
            raise _model_not_found(chat.model) from error
        raise


async def _begin(clients: Clients, chat: ChatRequest) -> tuple[run_pb2.Run, run_log.Start]:
    """Start or continue the run the request asks for; what of its log answers this request."""
    plan = chat.plan
    if isinstance(plan, NewRun):
        return await _new_run(clients, chat, plan), run_log.from_start
    await _agent_id(clients, chat.model)  # a follow-up names a model that exists
    if isinstance(plan, SubmitResults):
        answered = run_log.after_results({result.tool_call_id for result in plan.results})
        try:
            reply = await clients.runtime.SubmitToolResults(
                runtime_pb.SubmitToolResultsRequest(run_id=plan.run_id, results=plan.results)
            )
        except StewardError as error:
            if error.reason != Reason.RUN_STATE_CONFLICT:
                raise
            run = (await clients.runs.GetRun(store_pb.GetRunRequest(id=plan.run_id))).run
            if run.state != run_pb2.RUN_STATE_EXPIRED:
                raise
            # The results came after the run's pause deadline: the answer is its end (ADR 0018), read from its log.
            return run, answered
        return reply.run, answered
    assert isinstance(plan, ContinueAfterConfirmation)
    run = (await clients.runs.GetRun(store_pb.GetRunRequest(id=plan.run_id))).run
    return run, run_log.after_decisions(plan.confirmation_ids)


def _headers(run: run_pb2.Run) -> dict[str, str]:
    return {"X-Steward-Run-Id": run.id, "X-Steward-Conversation-Id": run.conversation_id}


@routes.post("/v1/chat/completions")
@openai_errors
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Run the agent named by `model` (or continue its paused run) and answer as OpenAI's API would."""
    chat = parse(await json_object(request))
    clients = request.app[CLIENTS]
    run, start = await _begin(clients, chat)
    answer = Answer(completion_id=f"chatcmpl-{run.id}", model=chat.model)
    if chat.stream:
        return await _stream(request, chat, run, start, answer)
    async with contextlib.aclosing(run_log.pieces(clients, run, start)) as pieces:
        async for piece in pieces:
            answer.add(piece)
    return web.json_response(answer.completion_json(), headers=_headers(run))


async def _stream(
    request: web.Request, chat: ChatRequest, run: run_pb2.Run, start: run_log.Start, answer: Answer
) -> web.StreamResponse:
    """The answer as SSE chunks, with a comment ping every `sse_ping_seconds` (a client that left is noticed then,
    and its upstream stream cancelled; the run goes on). A failure after the stream began is sent as an `error`
    event.

    A step the runtime restarts (`step_restarted`) cannot be taken back from a stream: the chunks already sent
    keep the abandoned step's partial text, and the stream goes on with the redone step's text after it (no
    marker is inserted: a chunk's content is the model's text). The non-streamed completion of the same run,
    the conversation's stored message and every reader of the whole log hold the redone step's text only."""
    headers = {"X-Request-ID": request.get(REQUEST_ID, ""), **_headers(run)}
    ping = request.app[SETTINGS].sse_ping_seconds
    # OpenAI's stream answers a POST, and its clients split events on "\n\n" as OpenAI sends them.
    async with sse_response(request, headers=headers, sep="\n", allow_all_methods=True, ping_interval=ping) as sse:
        pump = asyncio.create_task(_pump(request, chat, run, start, answer, sse))
        gone = asyncio.create_task(sse.wait())  # ends when a ping finds the client gone
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone):
                task.cancel()
            await asyncio.gather(pump, gone, return_exceptions=True)
        if not pump.cancelled() and pump.exception() is None and pump.result():
            sse.stop_streaming()  # no ping after [DONE]: the stream ends with it
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                await sse.send(DONE)
    return sse


async def _pump(
    request: web.Request,
    chat: ChatRequest,
    run: run_pb2.Run,
    start: run_log.Start,
    answer: Answer,
    sse: EventSourceResponse,
) -> bool:
    """Send the answer's chunks; True when all were sent (`[DONE]` follows, once the pings have stopped). A
    failure after the stream began is an `error` event."""
    try:
        await sse.send(event_data(answer.chunk({"role": "assistant", "content": ""})))
        async with contextlib.aclosing(run_log.pieces(request.app[CLIENTS], run, start)) as pieces:
            async for piece in pieces:
                for chunk in answer.chunks_for(piece):
                    await sse.send(event_data(chunk))
        if chat.include_usage:
            await sse.send(event_data(answer.usage_chunk()))
        return True
    except (ConnectionResetError, TimeoutError):
        return False  # the client left, or stopped reading for aiohttp_sse's send timeout; the run goes on
    except Exception as exc:  # noqa: BLE001 - the headers are sent: the failure can only be told in the stream
        if isinstance(exc, StewardError) and exc.code == grpc.StatusCode.CANCELLED:
            return False
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            await sse.send(event_data(as_openai_error(exc).body()))
        return False
