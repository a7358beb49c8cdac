"""Model routes: which upstream serves a model, and named routes with fallbacks.

Configured by a JSON file (`STEWARD_ROUTES_FILE`):
    {
      "upstreams": {"ollama": {"protocol": "openai", "base_url": "http://127.0.0.1:11434/v1", "keyless": true,
                               "free": true}},
      "routes": {"smart": {"description": "...", "primary": "anthropic/claude-sonnet-4-5",
                           "fallbacks": ["openai/gpt-5.1"]}}
    }
Upstreams "anthropic" and "openai" (the vendors' own endpoints) and the offline
demo model always exist, and "openai-compatible" when a base URL is set for it
(`STEWARD_OPENAI_COMPATIBLE_BASE_URL`). A request names a route: a named one
(from the file, "demo", or "auto") or "provider/model" for any upstream, such as
"openai/gpt-4o-mini" or "ollama/llama3.2".

"auto" is the built-in default agent's route: the first of its candidates
(`STEWARD_AUTO_ROUTE_MODELS`, Anthropic then OpenAI) whose provider has a key for
the caller, their own or the instance's; the demo model when none has. It picks
one target per call and never falls back from a real provider to the demo model.

`"free": true` on an upstream marks every model of it free of charge (a local
server): budgets then hold it at $0 (prices.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.provider import demo
from services.provider.adapters.base import Protocol_, Upstream
from steward.errors import invalid_argument, not_found

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
DEMO_PROTOCOL: Protocol_ = "demo"
AUTO = "auto"
OPENAI_COMPATIBLE = "openai-compatible"
DEFAULT_AUTO_MODELS = ("anthropic/claude-sonnet-4-5", "openai/gpt-4o-mini")


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
    # True for "auto": the targets are candidates, and a call uses only the first one with a key.
    first_with_key: bool = False


class Routes:
    def __init__(self, upstreams: dict[str, Upstream], routes: dict[str, Route]) -> None:
        self._upstreams = upstreams
        self._routes = routes
        self.free_providers: frozenset[str] = frozenset()  # upstreams the routes file marks free

    @classmethod
    def load(
        cls,
        path: Path | None,
        *,
        openai_compatible_base_url: str = "",
        auto_models: Sequence[str] = DEFAULT_AUTO_MODELS,
    ) -> Routes:
        upstreams: dict[str, Upstream] = {
            "anthropic": Upstream("anthropic", "anthropic"),
            "openai": Upstream("openai", "openai"),
            demo.PROVIDER: Upstream(demo.PROVIDER, DEMO_PROTOCOL, keyless=True),
        }
        if openai_compatible_base_url:
            # Local servers (Ollama, llama.cpp) take no key; a key put for "openai-compatible" is still sent.
            upstreams[OPENAI_COMPATIBLE] = Upstream(OPENAI_COMPATIBLE, "openai", openai_compatible_base_url, True)
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
        candidates = [routes.target(model) for model in auto_models]
        routes._routes[AUTO] = Route(
            AUTO,
            "The first of " + ", ".join(t.name for t in candidates) + " with a key; else the offline demo model.",
            [*candidates, routes.target(demo.MODEL_NAME)],
            first_with_key=True,
        )
        for name, entry in dict(raw.get("routes", {})).items():  # type: ignore[call-overload]  # untyped JSON (object): dict() raises on a bad section
            if not isinstance(entry, dict) or "primary" not in entry:
                raise ValueError(f"routes file: route {name!r} needs a primary")
            if name == AUTO or "/" in name:
                raise ValueError(f'routes file: route {name!r}: the name is reserved ("auto", or has a "/")')
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
            if found is not None:
                return found
            if "/" in route:  # "provider/model" names a model directly
                return Route(route, "", [self.target(route)])
            raise not_found("MODEL_NOT_FOUND", self.unknown(route))
        if not model:
            raise invalid_argument("target", "a route or a model is required")
        return Route(model, "", [self.target(model)])

    def known(self, route: str) -> bool:
        """Whether `route` names a route, or a model of a known upstream as "provider/model"."""
        if route in self._routes:
            return True
        provider, _, model = route.partition("/")
        return bool(model) and provider in self._upstreams

    def unknown(self, route: str) -> str:
        """What to tell someone who named a route that is not known: what there is."""
        return (
            f"no model route {route!r}: name one of the routes {', '.join(sorted(self._routes))}, or a model as "
            f"provider/model with a provider of {', '.join(sorted(self._upstreams))}"
        )

    def upstreams(self) -> list[Upstream]:
        """Every upstream, by name."""
        return [self._upstreams[name] for name in sorted(self._upstreams)]

    def routes(self) -> list[Route]:
        """Every named route, by name."""
        return [self._routes[name] for name in sorted(self._routes)]

    def takes_keys(self, provider: str) -> bool:
        """Whether keys may be put for `provider`: an upstream this deployment knows, other than the demo model
        (which takes none)."""
        upstream = self._upstreams.get(provider)
        return upstream is not None and upstream.protocol != DEMO_PROTOCOL

    def targets(self) -> list[Target]:
        """Every model some route names, once, by name."""
        unique = {t.name: t for route in self._routes.values() for t in route.targets}
        return [unique[name] for name in sorted(unique)]
