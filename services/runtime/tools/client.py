"""Client-side tools: the caller's own tools, offered to the model beside the agent's.

CreateRun takes them (`CreateRunRequest.client_tools`) and the store keeps them with the run, named
"client.<name>". A call to one ends the step's resolution with a `client_tool_requested` event and
pauses the run (awaiting client tool) until SubmitToolResults delivers the results, which are
checkpointed like any tool result before the run goes on.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from services.runtime.tools.toolbox import CLIENT_PREFIX, Kind, ToolInfo
from steward.common.v1 import content_pb2
from steward.errors import invalid_argument
from steward.store.v1 import run_pb2

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TOOLS = 64


def qualified(specs: list[content_pb2.ToolSpec]) -> list[content_pb2.ToolSpec]:
    """The caller's specs, checked, with their names qualified as "client.<name>"."""
    if len(specs) > MAX_TOOLS:
        raise invalid_argument("client_tools", f"at most {MAX_TOOLS} client tools")
    seen: set[str] = set()
    out = []
    for index, spec in enumerate(specs):
        name = spec.name.removeprefix(CLIENT_PREFIX)
        if not NAME.fullmatch(name) or name in seen:
            raise invalid_argument(f"client_tools[{index}].name", "names must be unique and match [A-Za-z0-9_-]{1,64}")
        seen.add(name)
        schema = _schema(spec.input_schema_json, f"client_tools[{index}].input_schema_json")
        out.append(
            content_pb2.ToolSpec(
                name=CLIENT_PREFIX + name, description=spec.description, input_schema_json=json.dumps(schema)
            )
        )
    return out


def _schema(text: str, field: str) -> dict[str, Any]:
    try:
        schema = json.loads(text) if text.strip() else {"type": "object"}
    except ValueError as exc:
        raise invalid_argument(field, "must be a JSON Schema object") from exc
    if not isinstance(schema, dict):
        raise invalid_argument(field, "must be a JSON Schema object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise invalid_argument(field, f"is not a valid JSON Schema: {exc.message}") from exc
    return schema


def infos(run: run_pb2.Run) -> list[ToolInfo]:
    return [
        ToolInfo(spec.name, spec.description, spec.input_schema_json, Kind.CLIENT, needs_confirmation=False)
        for spec in run.client_tools
    ]


def validate(tool: ToolInfo, arguments: object) -> str | None:
    validator = Draft202012Validator(json.loads(tool.input_schema_json))
    error = next(iter(validator.iter_errors(arguments)), None)
    return None if error is None else f"invalid arguments for {tool.name}: {error.message}"
