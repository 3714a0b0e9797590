"""The live server fixture shared by the server tests (helpers in live_server.py)."""

from __future__ import annotations

import pytest
from live_server import start_server


@pytest.fixture(scope="session")
def live(demo_gguf):
    """The demo model behind the OpenAI and Ollama APIs: batch 16, 16k cache tokens, 32 new
    tokens by default, prefix cache on."""
    srv = start_server("--max-batch-size", "16", "--cache-lens", "16384", "--max-new-tokens", "32")
    yield srv
    srv.stop()
