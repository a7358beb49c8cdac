"""`python -m services.confirm`: migrate the database to head, then serve until SIGTERM."""

import asyncio

from services.confirm.server import main

asyncio.run(main())
