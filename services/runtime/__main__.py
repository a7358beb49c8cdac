import asyncio

from services.runtime.server import main

asyncio.run(main())
