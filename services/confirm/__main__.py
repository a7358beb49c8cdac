import asyncio

from services.confirm.server import main

asyncio.run(main())
