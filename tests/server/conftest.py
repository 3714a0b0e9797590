"""A live `ktx serve` on loopback (the demo model), shared by the server tests.

The app is built by the CLI's own `build_app` from `ktx serve` arguments and run by uvicorn
in a thread of the test process, so tests reach it over real HTTP with the real clients.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from ktx.core.cli.main import build_parser
from ktx.core.cli.serve import build_app


@dataclass
class LiveServer:
    url: str
    app: object
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def engine(self):
        return self.app.state.engine

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until the scheduler holds no request (cancellations are handled between steps)."""
        deadline = time.monotonic() + timeout
        while not self.engine.idle() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.engine.idle(), "requests still running"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*flags: str) -> LiveServer:
    port = free_port()
    args = build_parser().parse_args(["serve", "--port", str(port), "--device", "cpu", *flags])
    app = build_app(args)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return LiveServer(url, app, server, thread)
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("the test server did not start")


@pytest.fixture(scope="session")
def live(demo_gguf):
    """The demo model behind the OpenAI and Ollama APIs: batch 16, 16k cache tokens, 32 new
    tokens by default, prefix cache on."""
    srv = start_server("--max-batch-size", "16", "--cache-lens", "16384", "--max-new-tokens", "32")
    yield srv
    srv.stop()
