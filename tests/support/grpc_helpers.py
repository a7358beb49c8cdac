"""Helpers for calling the services directly over gRPC in tests."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

from google.protobuf.descriptor import ServiceDescriptor

from steward.auth import METADATA_KEY, TokenSigner

AREAS = ("common", "store", "provider", "confirm", "runtime")


def principal_metadata(secret: str, user_id: str, actor: str = "") -> tuple[tuple[str, str], ...]:
    """Call metadata carrying a valid internal token for `user_id`, acted for by `actor` if given."""
    return ((METADATA_KEY, TokenSigner(secret, issuer="tests").mint(user_id, actor=actor)),)


def all_services() -> Iterator[tuple[str, ServiceDescriptor]]:
    """(area, service) for every service in the generated contracts."""
    for area in AREAS:
        package = importlib.import_module(f"steward.{area}.v1")
        for module_info in pkgutil.iter_modules(package.__path__):
            if module_info.name.endswith("_pb2"):
                module = importlib.import_module(f"steward.{area}.v1.{module_info.name}")
                for service in module.DESCRIPTOR.services_by_name.values():
                    yield area, service
