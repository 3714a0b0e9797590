"""Running the app: uvicorn, with a shutdown that lets the requests in flight end properly.

uvicorn's graceful shutdown waits `timeout_graceful_shutdown` seconds for open connections,
then cancels them: a stream still generating would stop without its last chunk and `[DONE]`
(on a slow or busy machine, any long answer). So as soon as shutdown begins, the engine is
told to drain with a deadline a little inside uvicorn's: it takes no new requests, and at the
deadline ends each request in flight with the tokens it has (finish_reason "length"). uvicorn's
own wait starts only once the engine has ended them: a step still running at the deadline (a
slow machine, a long prefill chunk) finishes first, so its streams are not cut either.
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn

# What the engine leaves uvicorn between its deadline and uvicorn's: the last chunks' way out.
DRAIN_MARGIN_S = 2.0
DEFAULT_GRACE_S = 10.0  # when uvicorn has no timeout of its own


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, engine) -> None:
        super().__init__(config)
        self.engine = engine

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        timeout = self.config.timeout_graceful_shutdown
        grace = DEFAULT_GRACE_S if timeout is None else max(0.5, timeout - DRAIN_MARGIN_S)
        self.engine.drain(grace)
        await asyncio.to_thread(self.engine.wait_idle)
        await super().shutdown(sockets=sockets)
