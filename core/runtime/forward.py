"""The decoder stack run directly: embeddings, layers, final norm, LM head.

transformers' model-level forward builds causal masks and rotary tables that ktx's attention
operators do not use (they mask and rotate from the step's ForwardBatch), and some of that
work reads values back from the device. Calling the layers directly skips it, so a decode
step is nothing but the operators' own work: what a CUDA graph captures. The result equals
`model(...)`'s logits: every step of tests/core/test_models.py's greedy comparison with
transformers runs through it, for every architecture.
"""

from __future__ import annotations

import torch


def layers_forward(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    positions: torch.Tensor,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """input_ids, positions: [T] -> logits [len(keep) or T, vocab] (rows `keep` of the step only)."""
    inner, config = model.model, model.config
    hidden = inner.embed_tokens(input_ids[None])  # [1, T, hidden]
    position_ids = positions[None]
    for layer in inner.layers[: config.num_hidden_layers]:
        hidden = layer(hidden, attention_mask=None, position_ids=position_ids, position_embeddings=None)
        if isinstance(hidden, tuple):
            hidden = hidden[0]
    hidden = inner.norm(hidden)[0]  # [T, hidden]
    if keep is not None:
        hidden = hidden[keep.to(hidden.device)]
    logits = model.lm_head(hidden)
    cap = getattr(config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits
