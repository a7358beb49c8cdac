import asyncio

from services.store.server import main

asyncio.run(main())
