"""The decoder stack run directly: embeddings, layers, final norm, LM head.

transformers' model-level forward builds causal masks and rotary tables that ktx's attention
operators do not use (they mask and rotate from the step's ForwardBatch), and some of that
work reads values back from the device. Walking the model's StepPlan (runtime/plan.py)
skips it and the per-module call chain, so a step is nothing but the operators' own work:
what a CUDA graph captures. The result equals `model(...)`'s logits: every step of
tests/core/test_models.py's greedy comparison with transformers runs through it, for every
architecture.
"""

from __future__ import annotations

import torch

from .plan import StepPlan


def layers_forward(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    positions: torch.Tensor,
    keep: torch.Tensor | None = None,
    hidden: bool = False,
) -> torch.Tensor:
    """input_ids, positions: [T] -> logits [len(keep) or T, vocab] (rows `keep` of the step only);
    hidden: the final norm's output instead of logits."""
    return StepPlan.of(model)(input_ids, positions, keep, hidden)
