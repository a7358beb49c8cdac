"""Requests checked against the OpenAPI document before their handler runs.

For every operation under /api/ the document gives a JSON request body schema and query parameter
schemas; they are compiled once per process into JSON Schema (Draft 2020-12, OpenAPI 3.1's dialect)
validators, with the document's `$ref`s inlined. The middleware, after authentication and rate limits,
checks the query parameters the request has (coerced from text by their schema's type) and the JSON body
(read by `bodies.json_object`, which keeps it for the handler). The first violation is a 400 problem,
INVALID_ARGUMENT, whose `detail` names the field and whose `metadata` carries `field` (dotted, as the
handlers' own errors name fields), `in` (`body` or `query`) and, for bodies, `pointer` (RFC 6901).

Messages are made here from the failed keyword and never quote the value: a body may hold a secret (a
provider key), and what a client sent is not repeated back or logged. The document is the one statement of
a request's shape: handlers do not repeat its checks (types, required and unknown fields, enums, lengths,
patterns, ranges, query parameter types) and keep only what it cannot say, each with a comment saying why
(a rule across fields, "at least one field", sizes in bytes, values that depend on the time or the server's
state, and headers, which are not checked here). An `integer` is a JSON number written without a fraction
(3.0 is not one) and a `number` is finite (Python's json reads NaN and Infinity), as the handlers had it.
The OpenAI-compatible routes under /v1 are not validated here: they answer errors in OpenAI's shape.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

from gateway import openapi
from gateway.auth.bearer import Handler
from gateway.bodies import json_object
from gateway.problems import HttpError

VALIDATED_PREFIX = "/api/"
_INTEGER = re.compile(r"-?[0-9]{1,20}")
MAX_REF_DEPTH = 64
PATTERNS = {r"\S": "must not be blank"}  # patterns that read better in words


def _is_integer(_: object, instance: object) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(_: object, instance: object) -> bool:
    return _is_integer(_, instance) or (isinstance(instance, float) and math.isfinite(instance))


# Draft 2020-12 with JSON's numbers as the handlers read them: 3.0 is no integer, NaN and Infinity no number.
RequestValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number}),
)


class InvalidRequestError(HttpError):
    """A request that does not match the document: 400 INVALID_ARGUMENT naming the field."""

    def __init__(self, field: str, detail: str, *, where: str, pointer: str = "") -> None:
        super().__init__(400, "INVALID_ARGUMENT", f"{field}: {detail}")
        self.metadata = {"field": field, "in": where}
        if where == "body":
            self.metadata["pointer"] = pointer


@dataclass(frozen=True)
class Operation:
    """The compiled checks of one operation."""

    body: Validator | None
    query: dict[str, tuple[Validator, str]]  # name -> (validator, schema type)
    required_query: frozenset[str]


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _target(document: Mapping[str, Any], ref: str) -> Any:
    node: Any = document
    for token in ref.removeprefix("#/").split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def _inlined(document: Mapping[str, Any], node: Any, depth: int = 0) -> Any:
    """`node` with every local `$ref` replaced by what it names. Validating a schema without references is
    several times faster than resolving them on every request (the document has no recursive schemas)."""
    if depth > MAX_REF_DEPTH:
        raise RuntimeError("the OpenAPI document's schemas nest too deeply (a recursive $ref?)")
    if isinstance(node, dict):
        if "$ref" in node:
            return _inlined(document, _target(document, str(node["$ref"])), depth + 1)
        return {key: _inlined(document, value, depth + 1) for key, value in node.items()}
    if isinstance(node, list):
        return [_inlined(document, value, depth + 1) for value in node]
    return node


def _schema_type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return str(kind)


def _compile(document: dict[str, Any]) -> dict[tuple[str, str], Operation]:
    def validator(schema: dict[str, Any]) -> Validator:
        inlined = _inlined(document, schema)
        RequestValidator.check_schema(inlined)
        return RequestValidator(inlined)

    compiled: dict[tuple[str, str], Operation] = {}
    for path, item in document["paths"].items():
        if not path.startswith(VALIDATED_PREFIX):
            continue
        for method, operation in item.items():
            if method not in openapi.METHODS:
                continue
            body = None
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                body = validator(content["application/json"]["schema"])
            query: dict[str, tuple[Validator, str]] = {}
            required: set[str] = set()
            for parameter in [*item.get("parameters", []), *operation.get("parameters", [])]:
                parameter = _inlined(document, parameter)
                if parameter["in"] != "query":
                    continue
                query[parameter["name"]] = (validator(parameter["schema"]), _schema_type(parameter["schema"]))
                if parameter.get("required"):
                    required.add(parameter["name"])
            compiled[(method.upper(), path)] = Operation(body, query, frozenset(required))
    return compiled


@functools.cache
def operations() -> dict[tuple[str, str], Operation]:
    """Every validated operation by (METHOD, path template), compiled once per process."""
    return _compile(openapi.document())


def _dotted(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _pointer(path: Iterable[Any]) -> str:
    return "".join("/" + _escape(str(part)) for part in path)


def _plural(count: object, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def _message(error: ValidationError) -> tuple[list[Any], str]:
    """Where the error is (a path into the instance) and what is wrong, without quoting the value."""
    path, keyword, expected = list(error.absolute_path), str(error.validator), error.validator_value
    instance = error.instance
    if keyword == "required" and isinstance(instance, dict):
        missing = next((name for name in expected if name not in instance), "")
        return [*path, missing], "is required"
    if keyword == "additionalProperties" and isinstance(instance, dict):
        known = set(error.schema.get("properties", {}))
        unknown = sorted(name for name in instance if name not in known)
        return [*path, unknown[0] if unknown else ""], "is not a known field"
    messages: dict[str, Callable[[], str]] = {
        "type": lambda: f"must be of type {' or '.join(expected) if isinstance(expected, list) else expected}",
        "enum": lambda: f"must be one of {', '.join('null' if v is None else str(v) for v in expected)}",
        "const": lambda: f"must be {expected}",
        "minLength": lambda: f"must be at least {_plural(expected, 'character')}",
        "maxLength": lambda: f"must be at most {_plural(expected, 'character')}",
        "pattern": lambda: PATTERNS.get(str(expected), f"must match the pattern {expected}"),
        "minimum": lambda: f"must be at least {expected}",
        "maximum": lambda: f"must be at most {expected}",
        "exclusiveMinimum": lambda: f"must be more than {expected}",
        "exclusiveMaximum": lambda: f"must be less than {expected}",
        "minItems": lambda: f"must have at least {_plural(expected, 'item')}",
        "maxItems": lambda: f"must have at most {_plural(expected, 'item')}",
        "uniqueItems": lambda: "must not repeat items",
        "minProperties": lambda: f"must have at least {_plural(expected, 'field')}",
        "maxProperties": lambda: f"must have at most {_plural(expected, 'field')}",
        "oneOf": lambda: "does not match any of the allowed forms",
        "anyOf": lambda: "does not match any of the allowed forms",
        "format": lambda: f"must be a valid {expected}",
    }
    make = messages.get(keyword)
    return path, make() if make is not None else f"is not valid ({keyword})"


def _first_error(validator: Validator, instance: Any) -> ValidationError | None:
    """The error to report: the first by position in the instance, then the most specific one."""
    errors = list(validator.iter_errors(instance))
    if not errors:
        return None
    return min(errors, key=lambda e: ([str(p) for p in e.absolute_path], -len(e.absolute_path), str(e.validator)))


def _describe(error: ValidationError) -> tuple[list[Any], str]:
    """Where and what; for a value that matches none of a oneOf's forms, the error of the form it came closest
    to (one that failed deeper inside the value, else one whose type it has), or the types it may have."""
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return _message(error)
    deepest = max(error.context, key=lambda e: len(e.absolute_path))
    if len(deepest.absolute_path) > len(error.absolute_path):
        return _describe(deepest)
    typed = [e for e in error.context if e.validator != "type"]
    if typed:
        return _describe(typed[0])
    kinds: list[str] = []
    for alternative in error.context:
        value = alternative.validator_value
        kinds.extend(value if isinstance(value, list) else [value])
    return list(error.absolute_path), f"must be of type {' or '.join(kinds)}"


def check_body(operation: Operation, body: dict[str, Any]) -> None:
    if operation.body is None:
        return
    error = _first_error(operation.body, body)
    if error is not None:
        path, detail = _describe(error)
        raise InvalidRequestError(_dotted(path), detail, where="body", pointer=_pointer(path))


def _coerced(raw: str, kind: str) -> Any:
    if kind == "integer" and _INTEGER.fullmatch(raw):
        return int(raw)
    if kind == "boolean" and raw in ("true", "false"):
        return raw == "true"
    return raw


def check_query(operation: Operation, query: Mapping[str, str]) -> None:
    for name in sorted(operation.required_query - set(query)):
        raise InvalidRequestError(name, "is required", where="query")
    for name, (validator, kind) in operation.query.items():
        raw = query.get(name)
        if raw is None:
            continue
        value = _coerced(raw, kind)
        error = _first_error(validator, value)
        if error is not None:
            _, detail = _message(error)
            raise InvalidRequestError(name, detail, where="query")


@web.middleware
async def validation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the request against its operation in the document before the handler runs."""
    resource = request.match_info.route.resource
    operation = operations().get((request.method, resource.canonical)) if resource is not None else None
    if operation is not None:
        check_query(operation, request.query)
        if operation.body is not None:
            check_body(operation, await json_object(request))
    return await handler(request)


@functools.cache
def component_validator(name: str) -> Validator:
    """A validator of the document's schema `components/schemas/<name>`, compiled once per process."""
    document = openapi.document()
    inlined = _inlined(document, document["components"]["schemas"][name])
    RequestValidator.check_schema(inlined)
    return RequestValidator(inlined)


def component_error(name: str, instance: Any) -> tuple[str, str] | None:
    """The first way `instance` fails the schema `name` (the dotted field and what is wrong, as request bodies are
    answered), or None when it matches. For values that are not request bodies, such as agent files."""
    error = _first_error(component_validator(name), instance)
    if error is None:
        return None
    path, detail = _describe(error)
    return _dotted(path), detail
