"""Model routes: which upstream serves a model, and named routes with fallbacks.

Configured by a JSON file (`STEWARD_ROUTES_FILE`):
    {
      "upstreams": {"ollama": {"protocol": "openai", "base_url": "http://127.0.0.1:11434/v1", "keyless": true,
                               "free": true}},
      "routes": {"smart": {"description": "...", "primary": "anthropic/claude-sonnet-4-5",
                           "fallbacks": ["openai/gpt-5.1"]}}
    }
Upstreams "anthropic" and "openai" (the vendors' own endpoints) and the offline
demo model always exist; a request names a route or a model as "provider/model". `"free": true` marks every
model of an upstream free of charge (a local server): budgets then hold it at $0 (prices.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from services.provider import demo
from services.provider.adapters.base import Protocol_, Upstream
from steward.errors import invalid_argument, not_found
from steward.provider.v1 import model_route_pb2

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
DEMO_PROTOCOL: Protocol_ = "demo"


@dataclass(frozen=True)
class Target:
    upstream: Upstream
    model: str

    @property
    def name(self) -> str:
        return f"{self.upstream.provider}/{self.model}"


@dataclass(frozen=True)
class Route:
    name: str
    description: str
    targets: list[Target] = field(default_factory=list)  # primary first, then fallbacks


class Routes:
    def __init__(self, upstreams: dict[str, Upstream], routes: dict[str, Route]) -> None:
        self._upstreams = upstreams
        self._routes = routes
        self.free_providers: frozenset[str] = frozenset()  # upstreams the routes file marks free

    @classmethod
    def load(cls, path: Path | None) -> Routes:
        upstreams: dict[str, Upstream] = {
            "anthropic": Upstream("anthropic", "anthropic"),
            "openai": Upstream("openai", "openai"),
            demo.PROVIDER: Upstream(demo.PROVIDER, DEMO_PROTOCOL, keyless=True),
        }
        raw: dict[str, object] = json.loads(path.read_text()) if path is not None else {}
        free: set[str] = set()
        for name, entry in dict(raw.get("upstreams", {})).items():  # type: ignore[call-overload]  # untyped JSON (object): dict() raises on a bad section
            if (
                not _NAME.fullmatch(name)
                or not isinstance(entry, dict)
                or entry.get("protocol") not in ("anthropic", "openai")
            ):
                raise ValueError(f"routes file: bad upstream {name!r}")
            keyless = entry.get("keyless", False)
            if not isinstance(keyless, bool):
                raise ValueError(f"routes file: upstream {name!r}: keyless must be true or false")
            upstreams[name] = Upstream(name, entry["protocol"], entry.get("base_url"), keyless)
            if not isinstance(entry.get("free", False), bool):
                raise ValueError(f"routes file: upstream {name!r}: free must be true or false")
            if entry.get("free"):
                free.add(name)
        routes = cls(upstreams, {})
        routes.free_providers = frozenset(free)
        routes._routes[demo.ROUTE] = Route(demo.ROUTE, "The offline demo model.", [routes.target(demo.MODEL_NAME)])
        for name, entry in dict(raw.get("routes", {})).items():  # type: ignore[call-overload]  # untyped JSON (object): dict() raises on a bad section
            if not isinstance(entry, dict) or "primary" not in entry:
                raise ValueError(f"routes file: route {name!r} needs a primary")
            targets = [routes.target(entry["primary"]), *(routes.target(t) for t in entry.get("fallbacks", []))]
            routes._routes[name] = Route(name, str(entry.get("description", "")), targets)
        return routes

    def target(self, model: str) -> Target:
        """The target for "provider/model"; NOT_FOUND (MODEL_NOT_FOUND) for an unknown provider."""
        provider, _, name = model.partition("/")
        upstream = self._upstreams.get(provider)
        if upstream is None or not name:
            raise not_found("MODEL_NOT_FOUND", f"no upstream serves {model!r}")
        return Target(upstream, name)

    def resolve(self, route: str, model: str) -> Route:
        """The targets for a request that names a route or a model."""
        if route:
            found = self._routes.get(route)
            if found is None:
                raise not_found("MODEL_NOT_FOUND", f"no route named {route!r}")
            return found
        if not model:
            raise invalid_argument("target", "a route or a model is required")
        return Route(model, "", [self.target(model)])

    def takes_keys(self, provider: str) -> bool:
        """Whether keys may be put for `provider`: an upstream this deployment knows, other than the demo model
        (which takes none)."""
        upstream = self._upstreams.get(provider)
        return upstream is not None and upstream.protocol != DEMO_PROTOCOL

    def targets(self) -> list[Target]:
        """Every model some route names, once, by name."""
        unique = {t.name: t for route in self._routes.values() for t in route.targets}
        return [unique[name] for name in sorted(unique)]

    def messages(self) -> list[model_route_pb2.ModelRoute]:
        result = []
        for route in sorted(self._routes.values(), key=lambda r: r.name):
            primary, *fallbacks = route.targets
            result.append(
                model_route_pb2.ModelRoute(
                    name=route.name,
                    description=route.description,
                    primary=model_route_pb2.ModelTarget(provider=primary.upstream.provider, model=primary.model),
                    fallbacks=[
                        model_route_pb2.ModelTarget(provider=t.upstream.provider, model=t.model) for t in fallbacks
                    ],
                )
            )
        return result
