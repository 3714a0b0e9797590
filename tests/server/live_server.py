"""A live `ktx serve` on loopback for the server tests: the app is built by the CLI's own
`build_app` from `ktx serve` arguments and run by uvicorn in a thread of the test process, so
tests reach it over real HTTP with the real clients. (A module, not conftest: test files
import these helpers by name.)"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import httpx
import uvicorn

from ktx.core.cli.main import build_parser
from ktx.core.cli.serve import build_app
from ktx.server.serving import GracefulServer


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


def fail_forward_step(monkeypatch, at: int = 4) -> dict:
    """From now, the engine's `at`-th forward pass raises "simulated kernel failure" (a failure
    mid-stream). Returns the pass counter: set calls["n"] = 0 to fail again; monkeypatch.undo()
    puts the real forward_step back."""
    import ktx.server.engine as engine_mod

    real, calls = engine_mod.forward_step, {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at:
            raise RuntimeError("simulated kernel failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_mod, "forward_step", failing)
    return calls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*flags: str, graceful_s: float = 5) -> LiveServer:
    port = free_port()
    args = build_parser().parse_args(["serve", "--port", str(port), "--device", "cpu", *flags])
    app = build_app(args)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=graceful_s
    )
    server = GracefulServer(config, app.state.models)  # the CLI's server
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
