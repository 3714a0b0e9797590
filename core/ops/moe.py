"""Mixture-of-experts: router (gate), routed experts and the block that adds shared experts.

Routing covers every scheme of the architectures we run: softmax (Mixtral, Qwen, DeepSeek-V2)
or sigmoid with a score-correction bias (DeepSeek-V3, Kimi-K2), optional group-limited top-k,
renormalisation and a routed scaling factor. `num_experts_per_tok` (a rule kwarg or
`ktx.core.load(..., num_experts_per_tok=6)`) runs fewer experts than trained, for speed.

`Experts` runs the routed experts on the C++ MoE kernels (ktx.core.cpu_moe) when placed on
the CPU, with the GGUF blocks left in the mmap; `TorchExperts` is the pure-PyTorch reference
(each active expert dequantized when used), also what `Experts` falls back to elsewhere or
with `backend: torch`.

Hybrid (the rest of the model on an accelerator): the CPU experts are started before the
shared experts and awaited after them. Where the backend offers `stream_experts`, the start
and the wait are host callbacks on the accelerator's stream, so the step needs no Python
synchronisation (and fits in a CUDA graph). `gpu_experts: N` keeps N experts of each layer on
the accelerator (the busiest in a routing profile from `ktx profile`, else the first N); the
CPU skips those slots (id -1) and the accelerator runs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import _kernels, cpu, cpu_moe
from ..gguf import GGMLType, quants
from ..models.errors import ModelError
from .base import Operator, adopt


def _routing(config) -> dict:
    mt = config.model_type
    if mt in ("deepseek_v3", "glm4_moe"):  # sigmoid, correction bias, top-2-sum groups
        return dict(
            scoring="sigmoid", group="top2sum", norm=config.norm_topk_prob, scale=config.routed_scaling_factor
        )
    if mt == "deepseek_v2":
        group = "max" if getattr(config, "topk_method", "greedy") == "group_limited_greedy" else None
        return dict(scoring="softmax", group=group, norm=False, scale=config.routed_scaling_factor)
    if mt == "minimax_m2":  # sigmoid scores, the correction bias for the choice, no groups
        return dict(scoring="sigmoid", group=None, norm=True, scale=1.0)
    # gpt-oss: softmax over the top-k logits, the same weights; Qwen3.5 always renormalises
    if mt in ("mixtral", "gpt_oss", "qwen3_5_moe_text"):
        return dict(scoring="softmax", group=None, norm=True, scale=1.0)
    return dict(scoring="softmax", group=None, norm=bool(config.norm_topk_prob), scale=1.0)


def route(
    logits: torch.Tensor,
    top_k: int,
    scoring: str,
    group: str | None = None,
    n_group: int = 1,
    topk_group: int = 1,
    norm: bool = False,
    scale: float = 1.0,
    bias: torch.Tensor | None = None,
):
    """logits: [N, E] float32 -> (ids [N, k] int64, weights [N, k] float32)."""
    scores = logits.softmax(-1) if scoring == "softmax" else logits.sigmoid()
    choice = scores + bias if bias is not None else scores
    if group is not None and n_group > 1:
        grouped = choice.view(choice.shape[0], n_group, -1)
        g = grouped.max(-1).values if group == "max" else grouped.topk(2, dim=-1).values.sum(-1)
        keep = torch.zeros_like(g, dtype=torch.bool).scatter_(1, g.topk(topk_group, dim=-1).indices, True)
        fill = 0.0 if group == "max" else float("-inf")  # as the reference implementations do
        choice = choice.masked_fill(~keep[:, :, None].expand_as(grouped).reshape_as(choice), fill)
    ids = choice.topk(top_k, dim=-1).indices
    weights = scores.gather(1, ids)
    if norm:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return ids, weights * scale


class Gate(Operator):
    def __init__(
        self, key, gguf, config, orig=None, device="cpu", num_experts_per_tok: int | None = None, **kw
    ):
        super().__init__(key, gguf, config, orig, device, **kw)
        self.top_k = int(num_experts_per_tok or config.num_experts_per_tok)
        self.params = _routing(config)
        self.n_group = getattr(config, "n_group", None) or 1
        self.topk_group = getattr(config, "topk_group", None) or 1
        self.weight = self.bias = self.logit_bias = self.router = None

    def load(self) -> None:
        self.weight = self.dequant(f"{self.key}.weight")
        if self.has(f"{self.key}.bias"):  # gpt-oss's router adds a bias to its logits
            self.logit_bias = self.dequant(f"{self.key}.bias").float()
        layer = self.key.rsplit(".", 1)[0]
        if self.has(f"{layer}.exp_probs_b.bias"):
            self.bias = self.dequant(f"{layer}.exp_probs_b.bias")
        self.router = self._cpu_router()

    def unload(self) -> None:
        self.weight = self.bias = self.logit_bias = self.router = None

    def _cpu_router(self):
        """The C++ router (core/kernels/routing.h) for this gate on the CPU, or None (the
        reference `route` then runs)."""
        w = self.weight
        if self.device.type != "cpu" or w.dtype != torch.float32 or w.shape[1] % 32:
            return None
        p = self.params
        group = {None: 0, "max": 1, "top2sum": 2}[p["group"]]
        return _kernels.Router(
            _kernels.QMatrix(int(GGMLType.F32), w.data_ptr(), w.shape[0], w.shape[1]),
            self.bias.data_ptr() if self.bias is not None else 0,
            self.top_k,
            0 if p["scoring"] == "softmax" else 1,
            group,
            self.n_group,
            self.topk_group,
            bool(p["norm"]),
            float(p["scale"]),
            cpu.default_threads(),
            self.logit_bias.data_ptr() if self.logit_bias is not None else 0,
        )

    def route(self, x: torch.Tensor):
        # x: [N, hidden] -> ids, weights: [N, k]
        if self.router is not None and x.is_cpu:
            x = x.float().contiguous()
            ids = torch.empty(x.shape[0], self.top_k, dtype=torch.int64)
            weights = torch.empty(x.shape[0], self.top_k)
            self.router.forward(x.data_ptr(), x.shape[0], ids.data_ptr(), weights.data_ptr())
            return ids, weights
        logits = F.linear(x.float(), self.weight, self.logit_bias)
        return route(
            logits,
            self.top_k,
            n_group=self.n_group,
            topk_group=self.topk_group,
            bias=self.bias,
            **self.params,
        )


class TorchExperts(Operator):
    """Routed experts from `ffn_{gate,up,down}_exps` ([E, I, H], [E, I, H], [E, H, I]): the
    PyTorch reference.

    The experts run where they are placed, whatever device the input comes from: on the CPU
    the GGUF blocks stay in the mmap; on an accelerator they are uploaded once as blocks (what
    the memory plan counts) and each active expert is expanded there by the backend's kernel."""

    def __init__(self, key, gguf, config, orig=None, device="cpu", **kwargs):
        super().__init__(key, gguf, config, orig, device, **kwargs)
        self.parts = self._blocks = None
        self.biases: dict[str, torch.Tensor] = {}
        self.swiglu = swiglu_of(config)

    def load(self) -> None:
        self.parts, self.biases = {}, {}
        for part in ("gate", "up", "down"):
            t = self.tensor(f"{self.key}.ffn_{part}_exps.weight")
            self.parts[part] = (t, t.data.reshape(t.shape[0], -1))  # one row of bytes per expert
            if self.has(f"{self.key}.ffn_{part}_exps.bias"):  # gpt-oss
                self.biases[part] = self.dequant(f"{self.key}.ffn_{part}_exps.bias").float()
        if self.accelerated:  # no kernel runs there: this reference does
            self._blocks = {part: self._upload(raw) for part, (_, raw) in self.parts.items()}

    def _upload(self, raw) -> torch.Tensor:
        import warnings

        with warnings.catch_warnings():  # a read-only mmap view: only ever copied from here
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(raw).to(self.device)

    def unload(self) -> None:
        self.parts = self._blocks = None
        self.biases = {}

    def expert_weight(self, part: str, e: int) -> torch.Tensor:
        """Expert e's `part` matrix, float32, on this operator's device."""
        t, raw = self.parts[part]
        shape = tuple(t.shape[1:])
        if self._blocks is not None:
            from ..backend import kernels

            kern = kernels(self.device.type)
            if kern is not None and hasattr(kern, "dequantize"):
                try:
                    return kern.dequantize(self._blocks[part][e], int(t.type), shape, torch.float32)
                except NotImplementedError:
                    pass  # a type without a device kernel: expanded on the CPU, then copied
        w = quants.dequantize(raw[e], t.type, shape, torch.float32)
        return w if self.device.type == "cpu" else w.to(self.device)

    def forward(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # x: [N, H]; ids/weights: [N, k] -> [N, H] float32, on x's device
        where = x.device
        x, ids, weights = x.to(self.device).float(), ids.to(self.device), weights.to(self.device)
        out = torch.zeros_like(x)
        # Tokens grouped by expert with one sort and one count read back: a single host sync
        # per layer (not one per expert) on an accelerator. Within an expert the tokens keep
        # their order, so the sums run as they would token by token.
        k = ids.shape[1]
        order = ids.reshape(-1).argsort(stable=True)
        counts = torch.bincount(ids.reshape(-1), minlength=self.parts["gate"][0].shape[0]).tolist()
        start = 0
        for e, n in enumerate(counts):
            if not n:
                continue
            picked = order[start : start + n]
            start += n
            token, slot = picked // k, picked % k
            h = x[token]
            g = h @ self.expert_weight("gate", e).T + self._bias("gate", e)
            u = h @ self.expert_weight("up", e).T + self._bias("up", e)
            y = self._act(g, u) @ self.expert_weight("down", e).T
            out.index_add_(0, token, (y + self._bias("down", e)) * weights[token, slot, None])
        return out.to(where)

    def _bias(self, part: str, e) -> torch.Tensor | float:
        b = self.biases.get(part)
        return 0.0 if b is None else b[e].to(self.device)

    def _act(self, g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return activate(g, u, self.swiglu)


def swiglu_of(config) -> tuple[float, float] | None:
    """gpt-oss's clamped SwiGLU (alpha, limit), or None for SiLU(gate) * up."""
    if getattr(config, "model_type", None) != "gpt_oss":
        return None
    return float(config.swiglu_alpha), float(config.swiglu_limit)


def activate(g: torch.Tensor, u: torch.Tensor, swiglu: tuple[float, float] | None) -> torch.Tensor:
    """The experts' gated activation: SiLU(g) * u, or gpt-oss's clamped SwiGLU."""
    if swiglu is None:
        return F.silu(g) * u
    alpha, limit = swiglu
    g, u = g.clamp(max=limit), u.clamp(-limit, limit)
    return g * torch.sigmoid(g * alpha) * (u + 1)


BACKENDS = ("auto", "kernel", "torch")


class Experts(TorchExperts):
    """Routed experts on the C++ kernels (CPU), the reference elsewhere.

    Rule kwargs: `backend: auto|kernel|torch` (auto: kernel on the CPU), `threads` (default
    KTX_THREADS or one per physical core), `exact` (float32 activations; default KTX_EXACT).
    """

    def __init__(
        self,
        key,
        gguf,
        config,
        orig=None,
        device="cpu",
        backend: str = "auto",
        threads: int | None = None,
        exact: bool | None = None,
        gpu_experts: int = 0,
        gpu_device: str | None = None,
        profile: str | None = None,
        **kwargs,
    ):
        super().__init__(key, gguf, config, orig, device, **kwargs)
        if backend not in BACKENDS:
            raise ValueError(f"Experts backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if backend == "kernel" and self.device.type != "cpu":
            raise ValueError(f"{key}: backend 'kernel' runs on the CPU; place the experts with device: cpu")
        if gpu_experts and gpu_device is None:
            raise ValueError(f"{key}: gpu_experts needs gpu_device (where those experts run)")
        self.backend, self.threads, self.exact = backend, threads, exact
        self.n_gpu, self.profile = int(gpu_experts), profile
        self.gpu_device = torch.device(gpu_device) if gpu_device else None
        self.kernel = self._result = self._stream = None
        self.gpu_ids = self.gpu_slot = self.gpu_w = None
        # Benchmarks set this to time a step without the CPU's share: every CPU slot skipped.
        self.cpu_off = False

    def load(self) -> None:
        super().load()
        if self.n_gpu:
            self._load_gpu_experts()
        if self.backend == "torch" or self.device.type != "cpu":
            return
        gate, up, down = (cpu_moe.expert_tensor(self.parts[p][0]) for p in ("gate", "up", "down"))
        self.kernel = cpu_moe.CpuMoE(gate, up, down, threads=self.threads, exact=self.exact)
        if self.biases or self.swiglu is not None:
            b = self.biases
            self.kernel.set_extras(b.get("gate"), b.get("up"), b.get("down"), self.swiglu)

    def unload(self) -> None:
        super().unload()
        self.kernel = self._stream = self.gpu_ids = self.gpu_slot = self.gpu_w = None

    # -- experts kept on the accelerator -------------------------------------------------------
    def _load_gpu_experts(self) -> None:
        n_experts = self.parts["gate"][0].shape[0]
        chosen = choose_gpu_experts(self.key, n_experts, self.n_gpu, self.profile)
        dev = self.gpu_device
        dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
        # stacked [N, inter, hidden] (gate, up) and [N, hidden, inter] (down), expanded on the device
        self.gpu_w = tuple(
            torch.stack([self._expert_on(part, e, dev, dtype) for e in chosen])
            for part in ("gate", "up", "down")
        )
        self.gpu_ids = torch.tensor(chosen, device=dev)
        slot = torch.full((n_experts,), -1, dtype=torch.long)
        slot[chosen] = torch.arange(len(chosen))
        self.gpu_slot = slot.to(dev)  # expert id -> its index among the GPU experts, or -1

    def _expert_on(self, part: str, e: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        from .base import dequant_to

        t, raw = self.parts[part]
        one = _ExpertSlice(raw[e], t.type, tuple(t.shape[1:]))
        return dequant_to(one, device, dtype)

    def _gpu_part(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor):
        """(ids for the CPU with the GPU's slots as -1, the GPU experts' weighted sum [n, hidden]).

        Dense over the N kept experts (each token times each, weighted 0 where not routed): no
        data-dependent shapes, so it can be captured in a graph; N is small."""
        dev = self.gpu_device
        local = self.gpu_slot[ids.to(dev)]  # [n, k]
        on_gpu = local >= 0
        dense = torch.zeros(ids.shape[0], len(self.gpu_ids), device=dev)
        dense.scatter_add_(1, local.clamp(min=0), weights.to(dev).float() * on_gpu)  # [n, N]
        wg, wu, wd = self.gpu_w
        h = x.to(dev, wg.dtype)
        g, u = torch.einsum("th,eih->eti", h, wg), torch.einsum("th,eih->eti", h, wu)
        kept = {p: b[self.gpu_ids.cpu()].to(dev, wg.dtype)[:, None, :] for p, b in self.biases.items()}
        act = activate(g + kept.get("gate", 0.0), u + kept.get("up", 0.0), self.swiglu)
        y = (torch.einsum("eti,ehi->eth", act, wd) + kept.get("down", 0.0)).float()  # [N, n, hidden]
        return ids.masked_fill(on_gpu.to(ids.device), -1), torch.einsum("te,eth->th", dense, y)

    # -- running -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.kernel is None and self.gpu_w is None:
            return super().forward(x, ids, weights)
        if x.device.type == "cpu" and self.gpu_w is None and not self.cpu_off:
            # on this thread: submit/sync would hand the call to the background runner and back
            return self.kernel(x.float(), ids, weights)
        self.submit(x, ids, weights)
        return self.sync()

    def submit(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> None:
        """Starts the experts (the CPU's in the background); collect the result with sync(), or
        drop it with cancel()."""
        self.cancel()  # a call left pending by a failed step
        gpu_part = None
        if self.gpu_w is not None:
            ids, gpu_part = self._gpu_part(x, ids, weights)
        if self.cpu_off:
            ids = torch.full_like(ids, -1)
        if self.kernel is None:
            self._result = (TorchExperts.forward(self, x, ids.clamp(min=0), weights * (ids >= 0)), gpu_part)
            return
        stream = self._stream_for(x.device)
        if stream is not None:
            stream.submit(x, ids, weights)
        else:
            self.kernel.submit(x.float(), ids, weights)
        self._result = (None, gpu_part)

    def sync(self) -> torch.Tensor:
        """The experts' output [n, hidden] float32, on the device of the input given to submit()."""
        (cpu_out, gpu_part), self._result = self._result, None
        if cpu_out is None:
            cpu_out = self._stream.sync() if self._stream is not None else self.kernel.sync()
        if gpu_part is not None:
            return cpu_out.to(gpu_part.device) + gpu_part
        return cpu_out

    def cancel(self) -> None:
        """Drops a submitted call after waiting for the CPU's share (a step that raised between
        submit and sync: the next step must start clean)."""
        if self._result is None:
            return
        (cpu_out, _), self._result = self._result, None
        if cpu_out is None:
            (self._stream or self.kernel).cancel()

    def _stream_for(self, device: torch.device):
        """The backend's stream-ordered runner of this layer's CPU experts, or None."""
        if device.type == "cpu":
            self._stream = None
            return None
        if self._stream is None or self._stream.device != device:
            from ..backend import kernels

            make = getattr(kernels(device.type), "stream_experts", None)
            self._stream = make(self.kernel, device) if make is not None else None
        return self._stream

    def extra_repr(self) -> str:
        where = "cpu kernels" if self.kernel is not None else "torch reference"
        if self.gpu_ids is not None:
            where += f", {len(self.gpu_ids)} experts on {self.gpu_device}"
        return f"key={self.key}, {where}"


class _ExpertSlice:
    """One expert's rows of a stacked GGUF tensor, shaped like a GGUF tensor for dequant_to."""

    def __init__(self, raw, ggml_type, shape):
        self.raw, self.type, self.shape = raw.reshape(-1), ggml_type, shape

    def dequantize(self, dtype=torch.float32) -> torch.Tensor:
        return quants.dequantize(self.raw, self.type, self.shape, dtype)


def choose_gpu_experts(key: str, n_experts: int, n: int, profile: str | None) -> list[int]:
    """The n experts of layer `key` to keep on the GPU: the most used in a routing profile
    (`ktx profile`), or the first n when there is none or it lacks this layer."""
    n = min(n, n_experts)
    if profile:
        try:
            counts = json.loads(Path(profile).read_text())["layers"].get(key)
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise ModelError(
                f"routing profile {profile}: cannot read it ({e}); record one with `ktx profile`"
            ) from e
        if counts is not None:
            if len(counts) != n_experts:
                raise ModelError(
                    f"routing profile {profile}: layer {key} has {len(counts)} experts, the model "
                    f"{n_experts}; it was recorded on another model"
                )
            order = sorted(range(n_experts), key=lambda e: (-counts[e], e))
            return sorted(order[:n])
    return list(range(n))


class MoE(Operator):
    """Router + routed experts + shared experts (DeepSeek, GLM-4.x, or Qwen2-MoE's gated one)."""

    def __init__(self, key, gguf, config, orig=None, device="cpu", **kwargs):
        super().__init__(key, gguf, config, orig, device, **kwargs)
        adopt(self, orig, ("gate", "experts", "shared_experts", "shared_expert", "shared_expert_gate"))
        if self.gate is None and isinstance(getattr(orig, "router", None), torch.nn.Module):
            self.gate = orig.router  # gpt-oss names its router so
        # gpt-oss's decoder layer unpacks (hidden, router scores) from its MLP
        self.tuple_out = type(orig).__name__ == "GptOssMLP"

    def load(self) -> None:
        for name, cls in (("gate", Gate), ("experts", Experts)):
            if not hasattr(getattr(self, name), "route" if name == "gate" else "expert_weight"):
                raise ModelError(
                    f"{self.key}: the MoE block's {name} must be replaced by a ktx operator "
                    f"(ktx.core.ops.moe.{cls.__name__} or compatible); check the rule file"
                )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        ids, weights = self.gate.route(x)
        shared = self.shared_experts if self.shared_experts is not None else self.shared_expert
        # Experts on the CPU kernels while the rest runs on an accelerator: start them, run the
        # shared experts there, then wait. With everything on the CPU the two would only fight
        # over the same cores.
        overlap = x.device.type != "cpu" and hasattr(self.experts, "submit")
        if overlap:
            self.experts.submit(x, ids, weights)
        else:
            y = self.experts(x, ids, weights)
        s = None
        try:
            if shared is not None:
                s = shared(x).float()
                if self.shared_expert_gate is not None:
                    s = torch.sigmoid(self.shared_expert_gate(x).float()) * s
        except BaseException:
            if overlap:  # an OOM in the shared experts, say: the CPU's call must not stay pending
                self.experts.cancel()
            raise
        if overlap:
            y = self.experts.sync().to(x.device)
        if s is not None:
            y = y + s
        y = y.to(hidden_states.dtype).reshape(shape)
        return (y, None) if self.tuple_out else y
