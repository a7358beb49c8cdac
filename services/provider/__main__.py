import asyncio

from services.provider.server import main

asyncio.run(main())
