import asyncio

from bench.foundation import main

asyncio.run(main())
