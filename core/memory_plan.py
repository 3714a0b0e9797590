"""How much memory a placement needs on each device, computed before any weight is read.

Each GGUF tensor goes where the module that reads it is placed (the rules' dry run): on the
CPU it stays in the mmap (file bytes, counted against RAM); on an accelerator it is expanded
to bfloat16 (2 bytes per value; float32 for 1-D tensors: norms, biases), or kept as GGUF blocks
with `weights: gguf` (then each call expands a matrix: the largest such temporary is counted).
Routed experts placed on an accelerator are uploaded as blocks and expanded one expert at a
time; those kept on the GPU beside CPU experts (`gpu_experts`) move their share there, in
bfloat16. The KV cache goes with each attention layer, and MLA's prefill workspace with them.
A plan that does not fit is refused with what to change, before minutes of loading end in an
out-of-memory error.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models.errors import ModelError
from .models.names import gguf_prefix

GIB = 1 << 30
# Activations, cuBLAS/Triton workspaces and the allocator's slack on an accelerator.
ACCEL_WORKSPACE = GIB
# The most one MLA prefill attention makes in temporaries (ops/mla.py keeps within it), counted
# on each device holding MLA layers on top of the workspace.
MLA_ATTENTION_WORKSPACE = GIB // 2


@dataclass
class MemoryPlan:
    parts: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # (device, part)

    def add(self, device: str, part: str, nbytes: int) -> None:
        self.parts[(device, part)] += int(nbytes)

    def per_device(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for (device, _), n in self.parts.items():
            out[device] += n
        return dict(out)

    def lines(self) -> list[str]:
        """One line per device: total, then its parts, largest first."""
        rows = []
        for device, total in sorted(self.per_device().items()):
            parts = sorted(((n, p) for (d, p), n in self.parts.items() if d == device), reverse=True)
            # GiB, or MiB for a plan under 1 GiB (a tiny model is not "0.00 GiB")
            unit, scale = ("GiB", GIB) if total >= GIB else ("MiB", 1 << 20)
            detail = ", ".join(f"{p} {n / scale:.2f}" for n, p in parts if n)
            memory = "RAM" if device == "cpu" else "VRAM"
            rows.append(f"{device} {memory} {total / scale:.2f} {unit} ({detail})")
        return rows

    def check(self, free: dict[str, int]) -> None:
        """Raises ModelError naming each device whose need exceeds `free` (bytes) and what to do."""
        over = []
        for device, need in sorted(self.per_device().items()):
            have = free.get(device)
            if have is None or need <= have:
                continue
            if device == "cpu":
                advice = "use a smaller quantization, or keep experts on the GPU (--gpu-experts)"
            else:
                advice = (
                    "lower --gpu-experts or --cache-lens, keep more on the CPU with --rules, "
                    "or hold the GPU's linear weights as GGUF blocks (rule kwarg weights: gguf: "
                    "about half the bytes, linear layers ~2x slower)"
                )
            over.append(f"{device} needs {need / GIB:.2f} GiB, {have / GIB:.2f} GiB free: {advice}")
        if over:
            raise ModelError("the model does not fit: " + "; ".join(over) + "\n" + "\n".join(self.lines()))


def _kv_values_per_token(config: Any) -> int:
    if getattr(config, "kv_lora_rank", None):  # MLA: one latent plus the shared rotary key
        return int(config.kv_lora_rank + config.qk_rope_head_dim)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * int(getattr(config, "num_key_value_heads", None) or heads) * int(head_dim)


def _recurrent_values(config: Any) -> int:
    """A gated DeltaNet layer's state for one sequence: S [nv][dk][dv] and the conv inputs."""
    nk, dk = int(config.linear_num_key_heads), int(config.linear_key_head_dim)
    nv, dv = int(config.linear_num_value_heads), int(config.linear_value_head_dim)
    return nv * dk * dv + (2 * nk * dk + nv * dv) * (int(config.linear_conv_kernel_dim) - 1)


def _owner(name: str, by_prefix: dict[str, str]) -> str | None:
    """The module path that reads GGUF tensor `name`."""
    m = re.match(r"blk\.(\d+)\.", name)
    if m and "_exps." in name:
        return f"model.layers.{m.group(1)}.mlp.experts"
    best = max((p for p in by_prefix if name.startswith(p + ".")), key=len, default=None)
    if best is not None:
        return by_prefix[best]
    return f"model.layers.{m.group(1)}" if m else None


def _part(name: str) -> str:
    if "_exps." in name:
        return "experts"
    if name.startswith("token_embd"):
        return "embeddings"
    if name.startswith("output."):
        return "output"
    if "_shexp." in name:
        return "shared experts"
    return "layers"


def plan_memory(
    gf: Any,
    arch: str,
    config: Any,
    devices: dict[str, str],
    rule_kwargs: dict[str, dict] | None = None,
    cache_tokens: int = 4096,
) -> MemoryPlan:
    """`devices`: module path -> device (the injection's dry run); `rule_kwargs`: module path ->
    the kwargs its rule gives (weights: gguf, gpu_experts, gpu_device)."""
    rule_kwargs = rule_kwargs or {}
    by_prefix = {}  # GGUF prefix -> module path; bare "blk.N" is every block's, so left out
    for path in devices:
        prefix = gguf_prefix(arch, path)
        if prefix is not None and not re.fullmatch(r"blk\.\d+", prefix):
            by_prefix[prefix] = path
    plan = MemoryPlan()
    expanded: dict[str, int] = defaultdict(int)  # per device: the largest per-call expansion
    n_layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    for name, t in gf.tensors.items():
        m = re.match(r"blk\.(\d+)\.", name)
        if n_layers and m and int(m.group(1)) >= n_layers:
            continue  # a next-token-prediction layer (GLM-4.x files): loaded nowhere, never read
        path = _owner(name, by_prefix)
        device, kwargs = devices.get(path, "cpu"), rule_kwargs.get(path, {})
        tied_output = name == "token_embd.weight" and "output.weight" not in gf.tensors
        if tied_output and devices.get("lm_head", "cpu") != "cpu":  # lm_head expands its own copy
            plan.add(devices["lm_head"], "output", t.n_elements * 2)
        if device == "cpu":
            plan.add("cpu", _part(name), t.nbytes)
            continue
        matrix = len(t.shape) > 1
        if "_exps." in name:
            # routed experts on an accelerator: uploaded as blocks, the gate, up and down of one
            # expert expanded in float32 per call (ops/moe.py TorchExperts)
            plan.add(device, _part(name), t.nbytes)
            expanded[device] = max(expanded[device], 3 * 4 * t.n_elements // t.shape[0])
        elif kwargs.get("weights") == "gguf" and matrix:
            # blocks kept; each call expands the matrix in bfloat16 (ops/linear.py)
            plan.add(device, _part(name), t.nbytes)
            expanded[device] = max(expanded[device], 2 * t.n_elements)
        else:
            plan.add(device, _part(name), t.n_elements * (2 if matrix else 4))
    _add_gpu_experts(plan, gf, rule_kwargs, arch)
    per_token = _kv_values_per_token(config)
    mla = bool(getattr(config, "kv_lora_rank", None))
    for path, device in devices.items():
        if path.endswith(".self_attn") and path.count(".") == 3:
            plan.add(device, "KV cache", cache_tokens * per_token * (4 if device == "cpu" else 2))
            if mla and device != "cpu" and (device, "MLA prefill") not in plan.parts:
                plan.add(device, "MLA prefill", MLA_ATTENTION_WORKSPACE)
        elif path.endswith(".linear_attn") and path.count(".") == 3:
            # Qwen3-Next's gated DeltaNet: float32 states of one sequence (each concurrent one
            # holds its own: the server's batch multiplies this)
            plan.add(device, "recurrent state, per sequence", 4 * _recurrent_values(config))
    for device, nbytes in expanded.items():
        plan.add(device, "expanded per call", nbytes)
    for device in {d for d, _ in plan.parts if d != "cpu"}:
        plan.add(device, "workspace", ACCEL_WORKSPACE)
    return plan


def _add_gpu_experts(plan: MemoryPlan, gf: Any, rule_kwargs, arch: str) -> None:
    # the experts kept on the GPU are expanded there; the CPU still maps the whole file
    for path, kwargs in rule_kwargs.items():
        n = int(kwargs.get("gpu_experts") or 0)
        if not n or not path.endswith(".experts"):
            continue
        prefix = gguf_prefix(arch, path)
        for part in ("gate", "up", "down"):
            t = gf.tensors.get(f"{prefix}.ffn_{part}_exps.weight")
            if t is None:
                continue
            share = min(n, t.shape[0]) / t.shape[0]
            plan.add(kwargs["gpu_device"], "GPU experts", share * t.n_elements * 2)


def free_memory(devices: set[str]) -> dict[str, int]:
    """Bytes usable now on each device: RAM from /proc/meminfo (MemTotal: the experts are an
    mmap, page cache that may push out other caches), accelerator free memory from its backend."""
    free: dict[str, int] = {}
    for device in devices:
        if device == "cpu":
            total = _meminfo("MemTotal")
            if total is not None:
                free["cpu"] = int(total * 0.95)
            continue
        import torch

        kind = device.partition(":")[0]
        mod = getattr(torch, kind, None)
        if mod is not None and hasattr(mod, "mem_get_info"):
            free[device] = int(mod.mem_get_info(torch.device(device))[0])
    return free


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
