"""A chat completion request's body, checked, and what it asks for: a new run or the continuation of one.

- The last message is a user message → a **new run** in a new conversation: the earlier messages are
  its history, the last one the run's input. The one exception: the message before it is an answer
  that ended at a confirmation (it names `Steward run` and its `confirmation`s) → the **continuation**
  of that run (the new user message's text is not used; see `gateway/run_notices.py`).
- The last messages are tool results → their `tool_call_id`s are the ids this API returned
  (`call_<run id>_<call id>`, `run_log.call_id_for`) → **submit** them to that paused run and continue it.
  Results for ids it did not mint (a history from elsewhere) → a new run on the whole history with no new input.
- System and developer messages are dropped: an agent's run always uses the agent's system prompt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.openai_api.errors import invalid
from gateway.run_log import CLIENT_PREFIX, run_of_call_id
from steward.common.v1 import content_pb2

MAX_MESSAGES = 500
MAX_TOOLS = 64
_RUN_MARK = re.compile(r"Steward run `([0-9a-f-]{36})`")
_CONFIRMATION_MARK = re.compile(r"confirmation `([A-Za-z0-9_-]{1,64})`")


@dataclass(frozen=True)
class NewRun:
    history: list[content_pb2.ChatMessage]
    input: list[content_pb2.ContentBlock]  # empty: run on the history as it is


@dataclass(frozen=True)
class SubmitResults:
    run_id: str
    results: list[content_pb2.ToolResultBlock]  # with the run's own call ids


@dataclass(frozen=True)
class ContinueAfterConfirmation:
    run_id: str
    confirmation_ids: frozenset[str]


Plan = NewRun | SubmitResults | ContinueAfterConfirmation


@dataclass(frozen=True)
class ChatRequest:
    model: str
    plan: Plan
    stream: bool = False
    include_usage: bool = False
    tools: list[content_pb2.ToolSpec] = field(default_factory=list)


def _text(content: object, where: str, *, required: bool) -> list[str]:
    """A message's content as texts: a string, or a list of text parts; null or "" only where allowed."""
    if content is None or content == "":
        if required:
            raise invalid(where, "must not be empty")
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list) or not content:
        raise invalid(where, "must be a string or a list of text parts")
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise invalid(f"{where}[{index}]", 'only text parts ({"type": "text", "text": "..."}) are supported')
        texts.append(part["text"])
    return texts


def _blocks(texts: list[str]) -> list[content_pb2.ContentBlock]:
    return [content_pb2.ContentBlock(text=content_pb2.TextBlock(text=text)) for text in texts if text]


def _tool_calls(message: dict[str, Any], where: str) -> list[content_pb2.ContentBlock]:
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise invalid(f"{where}.tool_calls", "must be a list")
    blocks = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not isinstance(function, dict):
            raise invalid(f"{where}.tool_calls[{index}]", "must have an id and a function")
        name, arguments = function.get("name"), function.get("arguments", "{}")
        if not isinstance(name, str) or not name or not isinstance(arguments, str):
            raise invalid(f"{where}.tool_calls[{index}].function", "must have a name and arguments (JSON text)")
        block = content_pb2.ToolCallBlock(id=call["id"], name=CLIENT_PREFIX + name, arguments_json=arguments)
        blocks.append(content_pb2.ContentBlock(tool_call=block))
    return blocks


def _message(message: object, index: int) -> content_pb2.ChatMessage | None:
    """One OpenAI message as a Steward chat message; None for those that are dropped."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise invalid(where, "must be an object")
    role = message.get("role")
    if not isinstance(role, str):
        raise invalid(f"{where}.role", "must be system, developer, user, assistant or tool")
    if role in {"system", "developer"}:
        return None
    if role == "user":
        texts = _text(message.get("content"), f"{where}.content", required=True)
        return content_pb2.ChatMessage(role=content_pb2.ROLE_USER, content=_blocks(texts))
    if role == "assistant":
        blocks = _blocks(_text(message.get("content"), f"{where}.content", required=False))
        blocks += _tool_calls(message, where)
        return content_pb2.ChatMessage(role=content_pb2.ROLE_ASSISTANT, content=blocks) if blocks else None
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise invalid(f"{where}.tool_call_id", "is required")
        content = "\n".join(_text(message.get("content"), f"{where}.content", required=False))
        result = content_pb2.ToolResultBlock(tool_call_id=call_id, content=content)
        block = content_pb2.ContentBlock(tool_result=result)
        return content_pb2.ChatMessage(role=content_pb2.ROLE_TOOL, content=[block])
    raise invalid(f"{where}.role", "must be system, developer, user, assistant or tool")


def _check_rounds(history: list[content_pb2.ChatMessage]) -> None:
    """Every tool call has a result after it, and every result answers an earlier call."""
    calls: set[str] = set()
    answered: set[str] = set()
    for message in history:
        for block in message.content:
            if block.HasField("tool_call"):
                calls.add(block.tool_call.id)
            elif block.HasField("tool_result"):
                if block.tool_result.tool_call_id not in calls:
                    raise invalid("messages", f"tool result {block.tool_result.tool_call_id!r} answers no earlier call")
                answered.add(block.tool_result.tool_call_id)
    if calls - answered:
        raise invalid("messages", f"tool calls without a result: {sorted(calls - answered)}")


def _results_plan(history: list[content_pb2.ChatMessage]) -> Plan:
    tail = 0
    while tail < len(history) and history[-1 - tail].role == content_pb2.ROLE_TOOL:
        tail += 1
    results = [m.content[0].tool_result for m in history[len(history) - tail :]]
    decoded = [run_of_call_id(r.tool_call_id) for r in results]
    if all(d is None for d in decoded):  # a history from elsewhere: run on it as it is
        _check_rounds(history)
        return NewRun(history, [])
    runs = {d[0] for d in decoded if d is not None}
    if None in decoded or len(runs) != 1:
        raise invalid("messages", "the trailing tool results must all answer tool calls of one Steward run")
    own = [
        content_pb2.ToolResultBlock(tool_call_id=d[1], content=r.content)
        for r, d in zip(results, decoded, strict=True)
        if d is not None
    ]
    return SubmitResults(runs.pop(), own)


def _last_assistant_text(raw: list[Any]) -> str:
    if len(raw) < 2 or not isinstance(raw[-2], dict) or raw[-2].get("role") != "assistant":
        return ""
    content = raw[-2].get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _plan(raw: list[Any]) -> Plan:
    history = []
    for index, item in enumerate(raw):
        message = _message(item, index)
        if message is not None:
            history.append(message)
    if not history or history[-1].role == content_pb2.ROLE_ASSISTANT:
        raise invalid("messages", "the last message must be a user message or tool results")
    if history[-1].role == content_pb2.ROLE_TOOL:
        return _results_plan(history)
    said = _last_assistant_text(raw)
    run = _RUN_MARK.search(said)
    confirmations = frozenset(_CONFIRMATION_MARK.findall(said))
    if run and confirmations:
        return ContinueAfterConfirmation(run.group(1), confirmations)
    _check_rounds(history[:-1])
    return NewRun(history[:-1], list(history[-1].content))


def _tools(body: dict[str, Any]) -> list[content_pb2.ToolSpec]:
    tools = body.get("tools") or []
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise invalid("tools", f"must be a list of at most {MAX_TOOLS} tools")
    if body.get("tool_choice") == "none":
        return []
    specs = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise invalid(f"tools[{index}]", 'must be {"type": "function", "function": {...}}')
        name, description = function.get("name"), function.get("description", "")
        parameters = function.get("parameters", {"type": "object"})
        if not isinstance(name, str) or not isinstance(description, str) or not isinstance(parameters, dict):
            raise invalid(f"tools[{index}].function", "needs a name, an optional description and parameters object")
        specs.append(content_pb2.ToolSpec(name=name, description=description, input_schema_json=json.dumps(parameters)))
    return specs


def parse(body: dict[str, Any]) -> ChatRequest:
    """The request, checked; 400 (INVALID_ARGUMENT, naming the field) for anything this API cannot honour."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "is required")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_MESSAGES:
        raise invalid("messages", f"must be a non-empty list of at most {MAX_MESSAGES} messages")
    n = body.get("n", 1)
    if n is not None and (isinstance(n, bool) or n != 1):
        raise invalid("n", "only one choice (n = 1) is supported")
    stream = body.get("stream") or False
    options = body.get("stream_options") or {}
    if not isinstance(stream, bool) or not isinstance(options, dict):
        raise invalid("stream", "stream must be a boolean and stream_options an object")
    return ChatRequest(
        model=model,
        plan=_plan(raw),
        stream=stream,
        include_usage=bool(options.get("include_usage")),
        tools=_tools(body),
    )
