"""A private Docker engine for CI and for machines without one (images/smoke.py uses it).

`engine()` yields a DOCKER_HOST: the one already reachable, or a dockerd started here on a
private socket, data root and exec root (kept in ~/.cache/ktx/docker so layers survive between
runs), with no bridge and no iptables rules, so that every container runs on the host's
network and nothing addresses a private-range IP. The daemon is stopped by its PID on the way
out. What the machine lacks is installed first, when it can be (root and apt): Debian's
docker.io and mmdebstrap, and Debian trixie's buildx and compose plugins, which bookworm does
not package, unpacked into a private DOCKER_CONFIG.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

STATE = Path(os.environ.get("KTX_DOCKER_STATE", Path.home() / ".cache" / "ktx" / "docker"))
PLUGINS = {"docker-buildx": "buildx", "docker-compose": "compose"}
TRIXIE = "deb http://deb.debian.org/debian trixie main\n"


def run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit(f"missing {', '.join(packages)} and cannot install them here (needs root and apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run("apt-get", "install", "-y", "-q", "--no-install-recommends", *packages, env=env)
    except subprocess.CalledProcessError:  # a stale package index: refresh it once
        run("apt-get", "update", "-q", env=env)
        run("apt-get", "install", "-y", "-q", "--no-install-recommends", *packages, env=env)


def ensure_tools() -> dict[str, str]:
    """dockerd, mmdebstrap and the buildx/compose plugins; returns the environment to run docker with."""
    missing = [
        p for p, exe in (("docker.io", "dockerd"), ("mmdebstrap", "mmdebstrap")) if not shutil.which(exe)
    ]
    if missing:
        _apt_install(*missing)
    config = STATE / "config"
    plugins = config / "cli-plugins"
    env = {**os.environ, "DOCKER_CONFIG": str(config)}
    need = [deb for deb, name in PLUGINS.items() if not (plugins / f"docker-{name}").exists()]
    if need:
        _fetch_trixie_plugins(need, plugins)
    return env


def _fetch_trixie_plugins(debs: list[str], plugins: Path) -> None:
    # apt-get download from a private sources list and state: the system's apt is untouched
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "sources.list").write_text(TRIXIE)
        (t / "lists" / "partial").mkdir(parents=True)
        (t / "cache" / "archives" / "partial").mkdir(parents=True)
        opts = [
            f"-oDir::Etc::SourceList={t / 'sources.list'}",
            "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::State::Lists={t / 'lists'}",
            f"-oDir::Cache={t / 'cache'}",
        ]
        run("apt-get", *opts, "update", "-q")
        run("apt-get", *opts, "download", *debs, cwd=t)
        plugins.mkdir(parents=True, exist_ok=True)
        for deb in t.glob("*.deb"):
            out = t / deb.stem
            run("dpkg-deb", "-x", str(deb), str(out))
            for exe in out.rglob("docker-*"):
                if exe.is_file() and exe.name in {f"docker-{n}" for n in PLUGINS.values()}:
                    shutil.copy2(exe, plugins / exe.name)


def _reachable(env: dict[str, str]) -> bool:
    return subprocess.run(["docker", "info"], env=env, capture_output=True).returncode == 0


@contextlib.contextmanager
def engine() -> Iterator[dict[str, str]]:
    """The environment for docker commands, with a daemon answering (started here if none is)."""
    env = ensure_tools()
    if os.environ.get("DOCKER_HOST") and _reachable(env):
        yield env
        return
    root = STATE
    sock = root / "docker.sock"
    env["DOCKER_HOST"] = f"unix://{sock}"
    if _reachable(env):  # one left from an earlier run
        yield env
        return
    (root / "data").mkdir(parents=True, exist_ok=True)
    exec_root = Path(tempfile.mkdtemp(prefix="ktx-dockerd-"))  # short: a socket path's limit
    log = open(root / "dockerd.log", "ab")  # noqa: SIM115 - open for the daemon's whole life
    daemon = subprocess.Popen(
        [
            "dockerd",
            "-H", env["DOCKER_HOST"],
            "--data-root", str(root / "data"),
            "--exec-root", str(exec_root),
            "--pidfile", str(root / "dockerd.pid"),
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--storage-driver=overlay2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )  # fmt: skip
    try:
        for _ in range(120):
            if _reachable(env):
                break
            if daemon.poll() is not None:
                raise SystemExit(f"dockerd exited with {daemon.returncode}: see {root / 'dockerd.log'}")
            time.sleep(0.5)
        else:
            raise SystemExit(f"dockerd did not answer in 60 s: see {root / 'dockerd.log'}")
        yield env
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
        shutil.rmtree(exec_root, ignore_errors=True)
