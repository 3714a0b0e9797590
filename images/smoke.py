"""`nox -s image_smoke`: build ktx:cpu and use it as a user would, on this machine's loopback.

1. static: `docker buildx bake --print all` resolves every target with its tags and base;
   `docker compose config -q` accepts compose.yaml with each override file;
2. the base: `mmdebstrap bookworm | docker import` (no registry here) unless it exists;
3. ktx:cpu built with the CI overlay's values (`docker buildx build --network=host`: bake
   cannot set the network), the CPU torch wheel from pip's local find-links in the context,
   the host's CA bundle as the `cacert` secret when there is one;
4. in it: `ktx doctor --json`, `ktx generate --json`; then the server (the image's own command):
   time to healthy, the OpenAI and Ollama clients' chat against it;
5. compose.yaml's ktx service (with compose.ci.yaml) up to healthy and answering, then down (the
   web UI's image cannot be pulled here: its wiring is checked by `compose config` only).
Prints the image's size, the times, and a JSON line of them. The engine: images/engine.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from engine import engine, run

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"cpu", "cuda-amx", "rocm", "xpu", "ascend"}
OVERRIDES = [
    "compose.nvidia.yaml",
    "compose.rocm.yaml",
    "compose.xpu.yaml",
    "compose.ascend.yaml",
    "compose.ci.yaml",
]
BASE = "ktx-base:bookworm"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PORT = 10002  # the image's server port, and its healthcheck's


def check_bake(env) -> dict:
    out = run("docker", "buildx", "bake", "--print", "all", env=env, cwd=ROOT, capture_output=True, text=True)
    plan = json.loads(out.stdout)
    targets = plan["target"]
    assert set(targets) == TARGETS, f"bake resolves {sorted(targets)}, expected {sorted(TARGETS)}"
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    for name, t in targets.items():
        assert f"ktx:{name}" in t["tags"] and f"ktx:{name}-{version}" in t["tags"], (name, t["tags"])
        assert t["args"]["BASE_IMAGE"], name
        assert t["dockerfile"] == "images/Dockerfile", name
    assert "ktx:cuda" in targets["cuda-amx"]["tags"]  # the alias
    assert "triton" in targets["cuda-amx"]["args"]["TORCH_SPEC"]
    assert "pytorch-triton-rocm" in targets["rocm"]["args"]["TORCH_SPEC"]
    xpu = targets["xpu"]["args"]["TORCH_SPEC"].split()
    assert "pytorch-triton-xpu" in xpu and "triton" not in xpu  # plain triton would shadow the XPU build
    # each torch_npu release pins the torch of its own version: the two must agree
    ascend = dict(req.split("==") for req in targets["ascend"]["args"]["TORCH_SPEC"].split())
    assert ascend.get("torch_npu") == ascend.get("torch"), ascend
    print(
        "bake resolves:", ", ".join(f"{n} <- {t['args']['BASE_IMAGE']}" for n, t in sorted(targets.items()))
    )
    return plan


def check_compose(env) -> None:
    run("docker", "compose", "-f", "compose.yaml", "config", "-q", env=env, cwd=ROOT)
    for extra in OVERRIDES:
        run("docker", "compose", "-f", "compose.yaml", "-f", extra, "config", "-q", env=env, cwd=ROOT)


def ensure_base(env) -> None:
    if subprocess.run(["docker", "image", "inspect", BASE], env=env, capture_output=True).returncode == 0:
        return
    t0 = time.perf_counter()
    strap = subprocess.Popen(
        [
            "mmdebstrap", "--variant=apt", "--include=python3,python3-venv,libgomp1",
            "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "bookworm", "-", "http://deb.debian.org/debian",
        ],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    run("docker", "import", "-", BASE, stdin=strap.stdout, env=env)
    if strap.wait() != 0:
        raise SystemExit(f"mmdebstrap failed with {strap.returncode}")
    print(f"base {BASE}: {time.perf_counter() - t0:.0f} s")


def local_torch_wheel() -> None:
    """The CPU torch wheel from pip's find-links into images/wheels/ (PyPI's torch is CUDA's)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    links = [
        v.strip("'")
        for k, v in (ln.split("=", 1) for ln in out.splitlines() if "=" in ln)
        if "find-links" in k
    ]
    wheels = ROOT / "images" / "wheels"
    for folder in links:
        for whl in Path(folder).glob("torch-2.13.0+cpu-*.whl"):
            if not (wheels / whl.name).exists():
                shutil.copy2(whl, wheels / whl.name)
            return
    print("no local CPU torch wheel: the build takes it from the CPU index")


def ci_args(env) -> dict:
    """The CI overlay's build args for the cpu target (its base, no torch index)."""
    files = ["-f", "docker-bake.hcl", "-f", "docker-bake.ci.hcl"]
    out = run(
        "docker",
        "buildx",
        "bake",
        *files,
        "--print",
        "cpu",
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    args = json.loads(out.stdout)["target"]["cpu"]["args"]
    assert args["BASE_IMAGE"] == BASE, args
    return args


def build(env, plan: dict) -> float:
    args = {**plan["target"]["cpu"]["args"], **ci_args(env)}
    args["COMMIT"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                    text=True).stdout.strip() or "unknown"  # fmt: skip
    cmd = ["docker", "buildx", "build", "--network=host", "--load", "-f", "images/Dockerfile"]
    for k, v in args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    if CA_BUNDLE.is_file():
        cmd += ["--secret", f"id=cacert,src={CA_BUNDLE}"]
    cmd += ["-t", "ktx:cpu", "."]
    t0 = time.perf_counter()
    run(*cmd, env=env, cwd=ROOT)
    return time.perf_counter() - t0


def use_image(env) -> dict:
    import docker
    import httpx
    import ollama
    import openai

    client = docker.DockerClient(base_url=env["DOCKER_HOST"])
    image = client.images.get("ktx:cpu")
    size_gb = image.attrs["Size"] / 1e9
    doctor = json.loads(
        client.containers.run("ktx:cpu", ["doctor", "--json"], network_mode="host", remove=True)
    )
    assert doctor["kernels"]["supported"], doctor
    gen = client.containers.run(
        "ktx:cpu", ["generate", "--prompt", "The capital of France is", "--max-new-tokens", "8", "--json"],
        network_mode="host", remove=True,
    )  # fmt: skip
    answer = json.loads(gen)  # --json: stdout holds the JSON alone (progress goes to stderr)
    assert answer["completion_tokens"] > 0 and answer["text"], answer
    with httpx.Client() as h:
        try:
            h.get(f"http://127.0.0.1:{PORT}/health", timeout=1)
            raise SystemExit(f"port {PORT} is taken on this machine: the server test needs it")
        except httpx.TransportError:
            pass
    t0 = time.perf_counter()
    server = client.containers.run("ktx:cpu", network_mode="host", detach=True, init=True)
    try:
        while True:
            server.reload()
            health = server.attrs["State"].get("Health", {}).get("Status")
            if health == "healthy":
                break
            if server.status == "exited" or time.perf_counter() - t0 > 180:
                raise SystemExit(
                    f"the server did not become healthy ({health}):\n{server.logs().decode()[-3000:]}"
                )
            time.sleep(0.5)
        to_healthy = time.perf_counter() - t0
        base = f"http://127.0.0.1:{PORT}"
        oa = openai.OpenAI(base_url=f"{base}/v1", api_key="none")
        model = oa.models.list().data[0].id  # the image's default: the demo model's own name
        chat = oa.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hello"}], max_tokens=8, temperature=0
        )
        assert chat.choices[0].message.content, chat
        reply = ollama.Client(host=base).chat(
            model=model, messages=[{"role": "user", "content": "Say hello"}], options={"num_predict": 8}
        )
        assert reply.message.content, reply
        tags = [m.model for m in ollama.Client(host=base).list().models]
        assert [t.removesuffix(":latest") for t in tags] == [model], tags  # Ollama's names carry a tag
    finally:
        server.stop(timeout=10)
        server.remove()
    return {"image_gb": size_gb, "docker_run_to_healthy_s": to_healthy}


def compose_up(env) -> float:
    """Seconds for `docker compose up --wait ktx` (compose.yaml + compose.ci.yaml) to be healthy;
    its API must answer with the served name the compose file gives."""
    import httpx

    models = tempfile.mkdtemp(prefix="ktx-models-")
    cenv = {**env, "KTX_IMAGE": "ktx:cpu", "KTX_MODELS": models}
    files = ["-f", "compose.yaml", "-f", "compose.ci.yaml"]
    t0 = time.perf_counter()
    try:
        run("docker", "compose", *files, "up", "-d", "--wait", "ktx", env=cenv, cwd=ROOT)
        up_s = time.perf_counter() - t0
        listed = httpx.get(f"http://127.0.0.1:{PORT}/v1/models", timeout=10).json()
        assert [m["id"] for m in listed["data"]] == ["ktx"], listed
    finally:
        run("docker", "compose", *files, "down", "-v", env=cenv, cwd=ROOT)
        shutil.rmtree(models, ignore_errors=True)
    return up_s


def main() -> None:
    t0 = time.perf_counter()
    with engine() as env:
        plan = check_bake(env)
        check_compose(env)
        ensure_base(env)
        local_torch_wheel()
        build_s = build(env, plan)
        figures = use_image(env)
        figures["compose_up_to_healthy_s"] = compose_up(env)
    figures = {**figures, "build_s": build_s, "total_s": time.perf_counter() - t0}
    print(
        f"ktx:cpu {figures['image_gb']:.2f} GB, built in {build_s:.0f} s, healthy "
        f"{figures['docker_run_to_healthy_s']:.1f} s after docker run, "
        f"{figures['compose_up_to_healthy_s']:.1f} s after compose up; smoke {figures['total_s']:.0f} s"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
