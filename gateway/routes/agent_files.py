"""Agent files: agents kept as YAML (or JSON) documents, applied by name with POST /api/v1/agents/apply and, at start,
from the folder `agents_dir` names (docs/agents.md, ADR 0023).

A file holds one or more YAML documents (separated by `---`), each one agent with the fields of the HTTP agent JSON
(`AgentIn`); `name` and `model_route` are required, `id`, `version` and the times are ignored (so an agent read over
HTTP may be applied as it is). Applying replaces each named agent whole: a field a file leaves out takes its default.
The store applies all the documents of a call in one transaction (AgentService/ApplyAgents): an agent is created,
updated (its version goes up by one) or left unchanged (same content: same version), and agents no file names are
left alone. Every document is checked first: one invalid document applies nothing, and the answer (400
AGENT_FILE_INVALID) lists each document's first error with its file, document index, field and reason.

YAML aliases (`*name`) are refused, since a few of them can expand a small file into a huge value; dates YAML reads
from unquoted text become that text (ISO 8601).

At start, when `agents_dir` is set, the gateway applies the folder's `*.yaml`, `*.yml` and `*.json` files as the user
`agents_user_id` (the dev user unless set): in the background, again while the store is unreachable, and once it
answered; an invalid folder is logged file by file and applies nothing. Every replica does it, which is harmless:
applying the same files again changes nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
import yaml
from aiohttp import web

from gateway import presenters
from gateway.app_keys import CLIENTS, SETTINGS
from gateway.auth.bearer import acting_as
from gateway.background import start_beside_serving
from gateway.bodies import json_object
from gateway.openapi_validation import component_error
from gateway.problems import HttpError
from gateway.routes.agents import _agent as agent_from_json
from gateway.routes.models import route_problem
from steward.auth import Principal
from steward.errors import Reason, StewardError
from steward.provider.v1 import provider_service_pb2 as provider_pb
from steward.store.v1 import store_service_pb2 as store_pb

routes = web.RouteTableDef()
log = structlog.get_logger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")
REQUIRED = ("name", "model_route")
MAX_DOCUMENTS = 500
_OUTCOMES = {
    store_pb.APPLY_OUTCOME_CREATED: "created",
    store_pb.APPLY_OUTCOME_UPDATED: "updated",
    store_pb.APPLY_OUTCOME_UNCHANGED: "unchanged",
}
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # a folder applied at start waits this long between tries, then 30 s
APPLY_TASK = web.AppKey("agent_files_task", asyncio.Task[list[dict[str, Any]] | None])


@dataclass(frozen=True)
class Document:
    """One agent document: the file it came from, its index there, and its JSON."""

    file: str
    index: int
    body: dict[str, Any]


@dataclass(frozen=True)
class FileError:
    """Why one document (or a whole file, `index` None) cannot be applied."""

    file: str
    index: int | None
    field: str | None
    reason: str
    detail: str

    def json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "document": self.index,
            "field": self.field,
            "reason": self.reason,
            "detail": self.detail,
        }


class AgentFilesInvalidError(HttpError):
    """400 AGENT_FILE_INVALID: the files' errors, one per document at most; nothing was applied."""

    def __init__(self, errors: Sequence[FileError]) -> None:
        count = len(errors)
        super().__init__(
            400,
            Reason.AGENT_FILE_INVALID,
            f"{count} agent document{'s are' if count != 1 else ' is'} invalid (see errors); nothing was applied",
        )
        self.errors = list(errors)
        self.extra = {"errors": [item.json() for item in self.errors]}


class _Loader(yaml.SafeLoader):
    """YAML without aliases: `*name` could expand a small file into a huge value."""

    def fetch_alias(self) -> None:
        raise yaml.scanner.ScannerError(None, None, "aliases (*name) are not allowed in agent files", self.get_mark())


def _plain(value: Any) -> Any:
    """`value` as JSON would have it: dates as ISO 8601 text, keys as text; ValueError for anything else."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"holds a value JSON cannot (a YAML {type(value).__name__})")


def parse_file(name: str, text: str) -> tuple[list[Document], list[FileError]]:
    """The agent documents of one file (YAML or JSON), and its errors: at most one per document."""
    try:
        loaded = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be read"
        return [], [FileError(name, None, None, Reason.AGENT_FILE_INVALID, f"not valid YAML or JSON: {problem}{where}")]
    documents: list[Document] = []
    errors: list[FileError] = []
    for index, raw in enumerate(loaded):
        if raw is None:  # an empty document, e.g. after a trailing `---`
            continue
        if not isinstance(raw, dict):
            errors.append(FileError(name, index, None, Reason.AGENT_FILE_INVALID, "a document must be one agent"))
            continue
        try:
            body = _plain(raw)
        except ValueError as exc:
            errors.append(FileError(name, index, None, Reason.AGENT_FILE_INVALID, str(exc)))
            continue
        error = _check(body)
        if error is not None:
            errors.append(FileError(name, index, error[0], Reason.INVALID_ARGUMENT, error[1]))
            continue
        documents.append(Document(name, index, body))
    if not documents and not errors:
        errors.append(FileError(name, None, None, Reason.AGENT_FILE_INVALID, "the file holds no agent"))
    return documents, errors


def _check(body: dict[str, Any]) -> tuple[str, str] | None:
    """The document's first error as (field, what is wrong): the agent JSON's schema, then the fields a file must
    have (a file names its agent, so `name` is required; the store requires `model_route`)."""
    error = component_error("AgentIn", body)
    if error is not None:
        return error
    for field in REQUIRED:
        if not body.get(field):
            return field, "is required"
    return None


async def apply_documents(
    request_clients: Any, documents: Sequence[Document], errors: Sequence[FileError], validate_only: bool
) -> list[dict[str, Any]]:
    """Apply the documents for the current principal; AgentFilesInvalidError when any file has an error (nothing is
    applied then); one result per document otherwise."""
    errors = list(errors)
    seen: dict[str, Document] = {}
    for document in documents:
        name = document.body["name"]
        first = seen.setdefault(name, document)
        if first is not document:
            detail = f"names the agent {name!r} that {first.file} (document {first.index}) names too"
            errors.append(FileError(document.file, document.index, "name", Reason.INVALID_ARGUMENT, detail))
    if documents and not errors:
        routes = await request_clients.provider.ListModelRoutes(provider_pb.ListModelRoutesRequest())
        for document in documents:
            problem = route_problem(routes, document.body["model_route"])
            if problem is not None:
                errors.append(FileError(document.file, document.index, "model_route", Reason.MODEL_NOT_FOUND, problem))
    if errors:
        raise AgentFilesInvalidError(errors)
    if len(documents) > MAX_DOCUMENTS:
        raise AgentFilesInvalidError([FileError("", None, None, Reason.AGENT_FILE_INVALID, "too many agent documents")])
    request = store_pb.ApplyAgentsRequest(
        agents=[agent_from_json(document.body)[0] for document in documents], validate_only=validate_only
    )
    try:
        reply = await request_clients.agents.ApplyAgents(request)
    except StewardError as error:
        index = error.metadata.get("index")
        if error.code != grpc.StatusCode.INVALID_ARGUMENT or index is None or not index.isdigit():
            raise
        document = documents[int(index)]
        field = error.metadata.get("field", "").removeprefix(f"agents[{index}]").removeprefix(".") or None
        detail = error.message.removeprefix(f"agents[{index}].")
        raise AgentFilesInvalidError([FileError(document.file, document.index, field, error.reason, detail)]) from None
    return [
        {
            "file": document.file,
            "document": document.index,
            "result": _OUTCOMES[result.outcome],
            "agent": presenters.agent_json(result.agent),
        }
        for document, result in zip(documents, reply.results, strict=True)
    ]


def _request_documents(body: dict[str, Any]) -> tuple[list[Document], list[FileError]]:
    documents: list[Document] = []
    errors: list[FileError] = []
    for file in body.get("files") or []:
        found, failed = parse_file(file["name"], file["content"])
        documents.extend(found)
        errors.extend(failed)
    for index, agent in enumerate(body.get("agents") or []):
        name = f"agents[{index}]"
        error = _check(agent)
        if error is not None:
            errors.append(FileError(name, 0, error[0], Reason.INVALID_ARGUMENT, error[1]))
        else:
            documents.append(Document(name, 0, agent))
    return documents, errors


@routes.post("/api/v1/agents/apply")
async def apply_agents(request: web.Request) -> web.Response:
    """Create or replace the caller's agents from agent files (`files`) and agent JSON (`agents`), all or none."""
    body = await json_object(request)
    documents, errors = _request_documents(body)
    if not documents and not errors:  # stays: "at least one document" across two fields is not in the document
        raise AgentFilesInvalidError([FileError("", None, None, Reason.AGENT_FILE_INVALID, "no agent documents given")])
    validate_only = bool(body.get("validate_only"))
    results = await apply_documents(request.app[CLIENTS], documents, errors, validate_only)
    return web.json_response({"agents": results, "validate_only": validate_only})


def read_folder(folder: Path) -> list[tuple[str, str]]:
    """The folder's agent files (not its subfolders'), by name: (name, text)."""
    files = sorted(path for path in folder.iterdir() if path.is_file() and path.suffix in SUFFIXES)
    return [(path.name, path.read_text(encoding="utf-8")) for path in files]


async def apply_folder(app: web.Application) -> list[dict[str, Any]] | None:
    """Apply `agents_dir` as `agents_user_id` (see the module docstring): the results, or None when the folder is
    invalid (each error logged). Tries again while the store is unavailable."""
    settings = app[SETTINGS]
    folder = Path(settings.agents_dir)
    user = settings.agents_user_id or settings.dev_user_id
    documents: list[Document] = []
    errors: list[FileError] = []
    try:
        for name, text in read_folder(folder):
            found, failed = parse_file(name, text)
            documents.extend(found)
            errors.extend(failed)
    except OSError as exc:
        log.error("agent_folder_unreadable", folder=str(folder), error=exc.strerror or str(exc))
        return None
    attempt = 0
    while True:
        try:
            with acting_as(Principal(user_id=user)):
                results = await apply_documents(app[CLIENTS], documents, errors, validate_only=False)
        except AgentFilesInvalidError as invalid:
            for error in invalid.errors:
                log.error("agent_file_invalid", folder=str(folder), **error.json())
            return None
        except StewardError as error:
            if error.code != grpc.StatusCode.UNAVAILABLE:
                log.error("agent_folder_not_applied", folder=str(folder), reason=error.reason, detail=error.message)
                return None
            wait = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
            log.warning("agent_folder_waits_for_the_store", folder=str(folder), retry_seconds=wait)
            attempt += 1
            await asyncio.sleep(wait)
            continue
        counts = {outcome: sum(1 for r in results if r["result"] == outcome) for outcome in _OUTCOMES.values()}
        log.info("agent_folder_applied", folder=str(folder), user=user, **counts)
        return results


def install(app: web.Application) -> None:
    """Apply the agent folder at start when `agents_dir` is set (after the gRPC clients are up)."""
    if app[SETTINGS].agents_dir:
        start_beside_serving(app, APPLY_TASK, apply_folder)
