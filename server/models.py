"""The models a server offers: one fixed model (`ktx serve --gguf FILE`), or a directory of GGUF
files (`ktx serve --models DIR`) loaded when a request names one.

In a directory, every `*.gguf` file is a model named by its stem (lower case), a split set
(`name-00001-of-00003.gguf`) one model named `name`, and a subdirectory holding GGUF files one
model named by the subdirectory. The directory is read again whenever the list is asked for or a
request names a model not seen yet, so files copied in while serving are found.

A model is loaded on its first request. Its memory plan (core/memory_plan.py), known before any
weight is read, decides whether it fits beside the models already loaded within the budget
(`--models-memory-gb`, default the machine's RAM as the plan counts it); if it does not, the least
recently used idle models are unloaded until it does, and a model that cannot fit even alone is
refused with the plan's reason. Each use keeps a model loaded for its keep-alive (Ollama's
`keep_alive`: seconds or "5m", 0 unloads it once idle, a negative value keeps it); the
server's default is `--keep-alive`. A fixed model is never unloaded.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf as gguf_py

from .engine import Engine
from .errors import RequestError

log = logging.getLogger("ktx.server")

SPLIT = re.compile(r"^(?P<base>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.gguf$", re.IGNORECASE)
DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$")
UNIT_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def describe(gf) -> dict[str, Any]:
    """What clients show of a GGUF: family, parameter count, quantization, context length."""
    meta = gf.metadata
    arch = meta.get("general.architecture") or "unknown"
    params = sum(t.n_elements for t in gf.tensors.values())
    return {
        "family": arch,
        "parameters": params,
        "parameter_size": human(params),
        "quantization_level": quantization(gf),
        "context_length": int(meta.get(f"{arch}.context_length") or 0),
    }


def human(n: int) -> str:
    """8.0B, 268M, 12K: as Ollama's parameter_size reads."""
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    return f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def quantization(gf) -> str:
    """The file type llama-quantize wrote (`Q4_K_M`); else the type holding most matrix bytes."""
    file_type = gf.metadata.get("general.file_type")
    try:
        name = gguf_py.LlamaFileType(int(file_type)).name
        if name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except (TypeError, ValueError):
        pass
    weight: Counter = Counter()
    for t in gf.tensors.values():
        if len(t.shape) == 2:
            weight[t.type.name] += t.nbytes
    return weight.most_common(1)[0][0] if weight else "unknown"


def keep_alive_seconds(value: Any, default: float | None) -> float | None:
    """Ollama's keep_alive as seconds (None: forever); a 400 if it is neither a number nor a
    duration such as "5m", "30s", "1h"."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise RequestError("keep_alive must be a number of seconds or a duration such as 5m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = DURATION.match(str(value).strip())
        if m is None:
            raise RequestError(f"keep_alive {value!r}: give seconds or a duration such as 5m, 1h, -1")
        seconds = float(m.group(1)) * UNIT_S[m.group(2)]
    return None if seconds < 0 else seconds


@dataclass
class Entry:
    """One model the server offers, loaded or not."""

    name: str
    paths: list[Path]
    info: dict[str, Any]
    size: int
    modified: float
    engine: Engine | None = None
    plan: Any = None  # its memory plan once loaded
    fixed: bool = False  # the one model of --gguf: never unloaded
    last_used: float = 0.0
    expires_at: float | None = None  # None: kept loaded

    @property
    def names(self) -> set[str]:
        base = self.name.removesuffix(":latest")
        return {self.name, base, f"{base}:latest"}

    @property
    def digest(self) -> str:
        # a digest of the file's identity, not of its bytes (hashing many GB would take minutes)
        return hashlib.sha256(f"{self.paths[0]}:{self.size}:{self.modified}".encode()).hexdigest()

    @property
    def context(self) -> int:
        if self.engine is not None:
            return min(self.engine.context, self.engine.pool.capacity)
        return self.info["context_length"]

    @classmethod
    def of_engine(cls, engine: Engine) -> Entry:
        paths = [Path(p) for p in engine.model.gguf.paths]
        return cls(
            engine.model_name,
            paths,
            describe(engine.model.gguf),
            *_size_and_mtime(paths),
            engine=engine,
            plan=getattr(engine.model, "memory_plan", None),
            fixed=True,
        )


def _size_and_mtime(paths: list[Path]) -> tuple[int, float]:
    """The model's bytes on disk (every shard) and its first file's modification time."""
    stats = [p.stat() for p in paths]
    return sum(s.st_size for s in stats), stats[0].st_mtime


def _model_files(directory: Path) -> dict[str, Path]:
    """name -> what gguf.open takes (a file, a split set's first shard, a directory)."""
    found: dict[str, Path] = {}
    for p in sorted(directory.iterdir()):
        if p.is_dir():
            if any(q.suffix.lower() == ".gguf" for q in p.iterdir()):
                found[p.name.lower()] = p
        elif p.suffix.lower() == ".gguf":
            m = SPLIT.match(p.name)
            if m is None:
                found[p.stem.lower()] = p
            elif int(m["i"]) == 1:
                found[m["base"].lower()] = p
    return found


class Models:
    """The served models; see the module docstring. `load(entry, on_plan)` builds an entry's
    Engine, calling on_plan(plan) with its memory plan before reading weights (it may raise to
    refuse the load)."""

    def __init__(
        self,
        directory: Path | None = None,
        load: Callable[[Entry, Callable[[Any], None]], Engine] | None = None,
        budget: dict[str, int] | None = None,
        keep_alive_s: float | None = 300.0,
        grace_s: float = 10.0,
        context_cap: int | None = None,
    ):
        self.directory, self._load, self.budget = directory, load, budget or {}
        # what a request may hold once a model loads (--cache-lens, --ctx-size): the context
        # listed for a model not loaded yet, so clients size requests right before the first
        self.context_cap = context_cap
        self.keep_alive_s, self.grace_s = keep_alive_s, grace_s
        self.entries: dict[str, Entry] = {}
        self._loading = asyncio.Lock()
        self._lock = threading.RLock()  # entries change on the loading thread and the loop
        self._reaper: asyncio.Task | None = None
        self.metrics = None
        if directory is not None:
            self.scan()

    @classmethod
    def single(cls, engine: Engine) -> Models:
        models = cls()
        models.entries[engine.model_name] = Entry.of_engine(engine)
        return models

    # -- what there is -------------------------------------------------------------------------
    @property
    def default(self) -> Engine | None:
        """The engine a request that names no model gets: the fixed one, or the only one."""
        fixed = [e.engine for e in self.entries.values() if e.fixed]
        if fixed:
            return fixed[0]
        loaded = self.loaded()
        return loaded[0].engine if len(loaded) == 1 else None

    def scan(self) -> list[Entry]:
        """The entries, the directory read again (new files added, removed ones dropped unless loaded)."""
        if self.directory is None:
            return list(self.entries.values())
        try:
            files = _model_files(self.directory)
        except OSError as e:
            log.warning("cannot read the models directory %s: %s", self.directory, e)
            files = {}
        with self._lock:
            for name in [n for n in self.entries if n not in files and self.entries[n].engine is None]:
                del self.entries[name]
            for name, path in files.items():
                if name not in self.entries:
                    entry = self._entry(name, path)
                    if entry is not None:
                        known, cap = entry.info["context_length"], self.context_cap
                        if cap:
                            entry.info["context_length"] = min(known, cap) if known else cap
                        self.entries[name] = entry
            return sorted(self.entries.values(), key=lambda e: e.name)

    def _entry(self, name: str, path: Path) -> Entry | None:
        from ktx.core import gguf

        try:
            with gguf.open(path) as gf:
                paths = [Path(p) for p in gf.paths]
                info = describe(gf)
        except Exception as e:  # a malformed or partly copied file: listed once it reads
            log.warning("skipping %s: %s", path, e)
            return None
        return Entry(name, [path, *paths[1:]] if path.is_dir() else paths, info, *_size_and_mtime(paths))

    def find(self, name: str | None) -> Entry | None:
        for entry in self.entries.values():
            if name in entry.names:
                return entry
        return None

    def loaded(self) -> list[Entry]:
        with self._lock:
            return [e for e in self.entries.values() if e.engine is not None]

    def engines(self) -> list[Engine]:
        return [e.engine for e in self.loaded()]

    # -- a request's model -------------------------------------------------------------------
    async def get(self, name: str | None, keep_alive: Any = None, param: str = "model") -> Engine:
        """The engine of the model `name` (None: the default), loaded if it is not; its
        keep-alive renewed. 404 for an unknown name, 400 for a model that cannot fit, 503 when
        the room it needs is held by models serving requests."""
        entry = self.resolve(name, param)
        seconds = keep_alive_seconds(keep_alive, self.keep_alive_s)
        if entry.engine is None:
            async with self._loading:
                if entry.engine is None:
                    await asyncio.to_thread(self._load_entry, entry)
        entry.last_used = time.monotonic()
        if not entry.fixed:
            entry.expires_at = None if seconds is None else entry.last_used + seconds
        return entry.engine

    def resolve(self, name: str | None, param: str = "model") -> Entry:
        if not name:
            engine = self.default
            if engine is not None:
                return self.find(engine.model_name)
            if len(self.scan()) == 1:
                return next(iter(self.entries.values()))
            raise RequestError(
                f"{param} is required: name one of {', '.join(sorted(self.entries))}", param=param
            )
        entry = self.find(name)
        if entry is None and self.directory is not None:
            self.scan()
            entry = self.find(name)
        if entry is None:
            here = ", ".join(sorted(self.entries)) or "none"
            raise RequestError(
                f"the model {name!r} does not exist here; this server has: {here}",
                status=404,
                param=param,
                code="model_not_found",
            )
        return entry

    def _load_entry(self, entry: Entry) -> None:
        from ktx.core.models.errors import ModelError

        def on_plan(plan) -> None:
            self._make_room(entry.name, plan)
            entry.plan = plan

        log.info("loading %s", entry.name)
        try:
            engine = self._load(entry, on_plan)
        except RequestError:
            raise
        except ModelError as e:
            raise RequestError(f"the model {entry.name!r} cannot be loaded: {e}", param="model") from None
        engine.metrics = self.metrics
        engine.start()
        with self._lock:
            entry.engine = engine
        log.info("loaded %s", entry.name)

    def _make_room(self, name: str, plan) -> None:
        """Unloads idle models, least recently used first, until `plan` fits the budget."""
        need = plan.per_device()
        for device, n in need.items():
            if device in self.budget and n > self.budget[device]:
                gib = 1 << 30
                raise RequestError(
                    f"the model {name!r} needs {n / gib:.2f} GiB on {device}, more than the "
                    f"{self.budget[device] / gib:.2f} GiB the server may use (--models-memory-gb): "
                    + "; ".join(plan.lines()),
                    param="model",
                )

        def over() -> list[str]:
            held: Counter = Counter()
            for e in self.loaded():
                held.update(e.plan.per_device() if e.plan is not None else {})
            return [d for d, n in need.items() if d in self.budget and held[d] + n > self.budget[d]]

        while over():
            idle = [e for e in self.loaded() if not e.fixed and e.engine.idle()]
            if not idle:
                busy = ", ".join(e.name for e in self.loaded())
                raise RequestError(
                    f"the model {name!r} does not fit beside the models serving requests ({busy}): "
                    "try again when they are done",
                    status=503,
                    type="server_error",
                )
            self._unload(min(idle, key=lambda e: e.last_used))

    def _unload(self, entry: Entry) -> None:
        with self._lock:
            engine, entry.engine, entry.plan, entry.expires_at = entry.engine, None, None, None
        if engine is None:
            return
        log.info("unloading %s", entry.name)
        engine.shutdown(self.grace_s)
        del engine
        gc.collect()

    async def unload(self, name: str) -> bool:
        """Unloads `name` once its requests are done (Ollama's keep_alive 0); False if fixed."""
        entry = self.resolve(name, "model")
        if entry.fixed:
            return False
        entry.expires_at = time.monotonic()
        await self._reap()
        return True

    # -- keep-alive ------------------------------------------------------------------------------
    async def _reap(self) -> None:
        now = time.monotonic()
        for entry in self.loaded():
            if entry.fixed or entry.expires_at is None or entry.expires_at > now:
                continue
            if entry.engine.idle():
                async with self._loading:
                    await asyncio.to_thread(self._unload, entry)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._reap()
            except Exception:
                log.exception("unloading an expired model failed")

    # -- the server's life -----------------------------------------------------------------------
    def start(self) -> None:
        for engine in self.engines():
            if not engine._thread.is_alive():
                engine.start()
        if self.directory is not None and self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    def drain(self, grace_s: float) -> None:
        for engine in self.engines():
            engine.drain(grace_s)

    def wait_idle(self) -> None:
        for engine in self.engines():
            engine.wait_idle()

    def shutdown(self, grace_s: float) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for engine in self.engines():
            engine.shutdown(grace_s)

    def stats(self) -> dict[str, Any]:
        total: Counter = Counter()
        for engine in self.engines():
            total.update(engine.stats())
        keys = (
            "running",
            "waiting",
            "kv_blocks_total",
            "kv_blocks_used",
            "kv_blocks_cached",
            "kv_blocks_in_requests",
        )
        return {k: total[k] for k in keys}

    def expires(self, entry: Entry) -> float | None:
        """Seconds from now until `entry` unloads (None: never)."""
        if entry.fixed or entry.expires_at is None:
            return None
        return max(0.0, entry.expires_at - time.monotonic())


def memory_budget(gb: float | None) -> dict[str, int]:
    """The budget of --models-memory-gb (RAM), else RAM as the memory plan counts it."""
    from ktx.core.memory_plan import free_memory

    if gb is not None:
        return {"cpu": int(gb * (1 << 30))}
    return free_memory({"cpu"})
