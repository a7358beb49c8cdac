import asyncio
import sys

from bench import foundation, gateway, provider, runtime, store, transport
from steward.logs import configure_logging

SUITES = {
    "transport": transport.main,
    "foundation": foundation.main,
    "store": store.main,
    "provider": provider.main,
    "runtime": runtime.main,
    "gateway": gateway.main,
}


async def run(names: list[str]) -> None:
    configure_logging("bench", "WARNING", json=False)
    for name in names:
        await SUITES[name]()


asyncio.run(run(sys.argv[1:] or list(SUITES)))
