"""A bounded cache of SDK clients, one per (base URL, key), for one lazily imported SDK."""

from __future__ import annotations

import asyncio
import importlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class SdkClients(Generic[C]):
    def __init__(
        self, module: str, default_base_url: str, build: Callable[[str, str], C], max_clients: int = 32
    ) -> None:
        self._module = module
        self._default_base_url = default_base_url
        self._build = build
        self._max_clients = max_clients
        self._clients: OrderedDict[tuple[str, str], C] = OrderedDict()

    def get(self, base_url: str | None, api_key: str) -> C:
        """The client for (base URL or the vendor's default, key), built on first use."""
        key = (base_url or self._default_base_url, api_key)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self._build(*key)
            while len(self._clients) > self._max_clients:
                # Dropped, not closed: a stream in flight keeps its client; the SDK closes it when collected.
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(key)
        return client

    async def warm_up(self) -> None:
        """Import the SDK in a worker thread, so that the first call does not block the event loop on it."""
        await asyncio.to_thread(importlib.import_module, self._module)

    async def aclose(self) -> None:
        """Close every cached client."""
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            await client.close()
