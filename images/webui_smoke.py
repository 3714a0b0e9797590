"""`nox -s webui_smoke`: Open WebUI (PyPI `open-webui`) against `ktx serve`, wired as compose.yaml
wires them, on loopback. Not in CI: installing Open WebUI takes minutes and its start ~2.

ktx serves the demo model as `ktx`; Open WebUI starts with ktx as its Ollama and OpenAI
backends, no login (WEBUI_AUTH=False on a fresh data folder) and no embedding model to load.
Then, as its page would: sign in (the default user's token), list models (Open WebUI asks ktx's
/api/tags and /v1/models), and chat once through it. ktx's own log must show the calls.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

KTX_PORT, WEBUI_PORT = 10012, 10013


def wait_for(url: str, proc: subprocess.Popen, seconds: float, log: Path) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the process exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} did not answer in {seconds:.0f} s:\n{log.read_text()[-3000:]}")


def main(webui_bin: str = "open-webui") -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ktx-webui-"))
    ktx_log, webui_log = tmp / "ktx.log", tmp / "webui.log"
    base = f"http://127.0.0.1:{KTX_PORT}"
    ktx = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ktx.core.cli.main",
            "serve",
            "--port",
            str(KTX_PORT),
            "--served-model-name",
            "ktx",
        ],
        stdout=ktx_log.open("w"),
        stderr=subprocess.STDOUT,
    )
    env = {
        **os.environ,
        "DATA_DIR": str(tmp / "data"),
        "OLLAMA_BASE_URL": base,
        "OPENAI_API_BASE_URL": f"{base}/v1",
        "OPENAI_API_KEY": "none",
        "WEBUI_AUTH": "False",
        "RAG_EMBEDDING_ENGINE": "ollama",
        "ENABLE_OPENAI_API": "True",
        "ENABLE_OLLAMA_API": "True",
        "HF_HUB_OFFLINE": "1",
    }
    webui = None
    try:
        wait_for(f"{base}/health", ktx, 120, ktx_log)
        webui = subprocess.Popen(
            [webui_bin, "serve", "--host", "127.0.0.1", "--port", str(WEBUI_PORT)],
            stdout=webui_log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,  # it writes a .webui_secret_key where it starts
        )
        ui = f"http://127.0.0.1:{WEBUI_PORT}"
        start_s = wait_for(f"{ui}/health", webui, 600, webui_log)
        with httpx.Client(base_url=ui, timeout=120) as c:
            token = c.post("/api/v1/auths/signin", json={"email": "", "password": ""}).json()["token"]
            c.headers["Authorization"] = f"Bearer {token}"
            models = [m["id"] for m in c.get("/api/models").json()["data"]]
            assert any(m.startswith("ktx") for m in models), models
            model = next(m for m in models if m.startswith("ktx"))
            reply = c.post(
                "/api/chat/completions",
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": "Say hello"}],
                    "stream": False,
                },
            ).json()
            text = reply["choices"][0]["message"]["content"]
            assert text, reply
        called = ktx_log.read_text()
        seen = [p for p in ("/api/tags", "/v1/models", "/api/chat", "/v1/chat/completions") if p in called]
        print(f"Open WebUI up in {start_s:.0f} s; models {models}; answer {text!r}; ktx saw {seen}")
        assert "/api/tags" in called or "/v1/models" in called, "Open WebUI never listed ktx's models"
    finally:
        for proc in (webui, ktx):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main(*sys.argv[1:2])
