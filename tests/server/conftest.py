"""The live server fixture shared by the server tests (helpers in live_server.py)."""

from __future__ import annotations

import pytest
from live_server import start_server
from tiny_models import make_tiny

from ktx.core.convert.hf_to_gguf import convert_hf


@pytest.fixture(scope="session")
def live(demo_gguf):
    """The demo model behind the OpenAI and Ollama APIs: batch 16, 16k cache tokens, 32 new
    tokens by default, prefix cache on."""
    srv = start_server("--max-batch-size", "16", "--cache-lens", "16384", "--max-new-tokens", "32")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def tiny_live(tmp_path_factory):
    """A random-weight tiny qwen3moe (q8_0, a byte-level vocabulary, no chat template of its
    own) behind the APIs: batch 8, 8k cache tokens, 16 new tokens by default."""
    d = tmp_path_factory.mktemp("tiny_server")
    gguf = convert_hf(make_tiny("qwen3moe", d / "hf"), d / "m.gguf", "q8_0", progress=False).path
    srv = start_server(
        "--gguf", str(gguf), "--max-batch-size", "8", "--cache-lens", "8192", "--max-new-tokens", "16"
    )
    yield srv
    srv.stop()
