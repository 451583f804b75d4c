"""The exact-entropy loss step at the logits, with and without verl's ``entropy_checkpointing``.

Library of ``scripts/bench_entropy_memory.py`` and ``scripts/gpu_check.py`` (torch only: the
GPU machine may have no verl). What verl's FSDP engine does with the logits of one micro-batch
when the plugin asks for the entropy (``verl/workers/engine/fsdp/transformer_impl.py``, the
``use_remove_padding`` path):

* ``entropy_checkpointing=false``: ``entropy = entropy_from_logits(logits)`` — autograd keeps
  the softmax (one ``tokens × vocab`` tensor) from the forward to the backward;
* ``entropy_checkpointing=true``: ``torch.utils.checkpoint.checkpoint(entropy_from_logits,
  logits)`` — nothing of the entropy is kept; it is recomputed in the backward.

plus the log-probs of the sampled tokens (``logsumexp`` and a gather, what flash-attn's
cross-entropy kernel computes) and the plugin's loss on top: a policy-gradient term and
:func:`g2rpo_verl.algorithms.entropy.shaping_surrogate`. The gradient reaching the logits is
the same either way (recomputation is deterministic); only when memory is held differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from g2rpo_verl.algorithms.entropy import shaping_surrogate  # noqa: E402

QWEN3_VL_VOCAB = 151936
#: ``ppo_max_token_len_per_gpu`` of configs/qwen3vl8b_base.yaml: one micro-batch's tokens
PRODUCTION_TOKENS = 20480


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """``(..., V) -> (...)``: the formula of ``verl.utils.torch_functional.entropy_from_logits``
    (tests/verl_hooks/test_entropy_memory.py checks they agree), here so the GPU check needs no verl."""
    pd = torch.nn.functional.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - torch.sum(pd * logits, dim=-1)


def make_inputs(tokens: int, vocab: int, dtype: torch.dtype, device, seed: int = 0) -> dict[str, torch.Tensor]:
    """One packed micro-batch as ``(1, tokens)`` rows: logits ``(tokens, vocab)``, labels, mask,
    per-token advantages and the shaping weights of 4 rows (``w = β·slope/n``)."""
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(seed)  # drawn on the device: no host copy of the logits
    rows = 4
    logits = torch.randn(tokens, vocab, generator=g, device=device).mul_(2.0).to(dtype)
    return {
        "logits": logits,
        "labels": torch.randint(0, vocab, (tokens,), generator=g, device=device),
        "mask": torch.rand(rows, tokens // rows, generator=g, device=device) > 0.2,
        "advantages": torch.randn(rows, 1, generator=g, device=device),
        "weights": torch.tensor([0.02, -0.02, 0.0, 0.02], device=device) / tokens,
    }


_COMPILED = {}


def compiled_entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """:func:`entropy_from_logits` under ``torch.compile(dynamic=True)``, as verl's engine runs it
    by default (``fsdp_config.use_torch_compile: true``)."""
    if "fn" not in _COMPILED:
        _COMPILED["fn"] = torch.compile(entropy_from_logits, dynamic=True)
    return _COMPILED["fn"](logits)


def loss_and_grad(
    inputs: dict[str, torch.Tensor], checkpointing: bool, compiled: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward + backward of the plugin's loss from the logits; returns ``(loss, d loss / d logits)``.

    The loss: ``-Σ A·log π(y)·mask / Σ mask`` + ``shaping_surrogate(H, mask, w)`` with ``H`` the
    exact per-token entropy, ``(rows, tokens / rows)`` after reshaping the packed tokens.
    """
    logits = inputs["logits"].detach().requires_grad_(True)
    mask = inputs["mask"]
    rows = mask.shape[0]
    fn = compiled_entropy_from_logits if compiled else entropy_from_logits
    if checkpointing:
        entropy = checkpoint(fn, logits, use_reentrant=False)
    else:
        entropy = fn(logits)
    logp = logits.gather(-1, inputs["labels"][:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
    logp, entropy = logp.float().view(rows, -1), entropy.float().view(rows, -1)
    pg = -(inputs["advantages"] * logp * mask).sum() / mask.sum()
    loss = pg + shaping_surrogate(entropy, mask, inputs["weights"])
    loss.backward()
    return loss.detach(), logits.grad


def sampled_loss_and_grad(inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The same step without the entropy (``estimator=sampled`` / shaping off): the baseline."""
    logits = inputs["logits"].detach().requires_grad_(True)
    mask = inputs["mask"]
    logp = logits.gather(-1, inputs["labels"][:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
    logp = logp.float().view(mask.shape[0], -1)
    loss = -(inputs["advantages"] * logp * mask).sum() / mask.sum()
    loss.backward()
    return loss.detach(), logits.grad


CASES = {
    "sampled": lambda x: sampled_loss_and_grad(x),
    "exact": lambda x: loss_and_grad(x, checkpointing=False),
    "exact+entropy_checkpointing": lambda x: loss_and_grad(x, checkpointing=True),
    "exact, compiled": lambda x: loss_and_grad(x, checkpointing=False, compiled=True),
    "exact+checkpointing, compiled": lambda x: loss_and_grad(x, checkpointing=True, compiled=True),
}
