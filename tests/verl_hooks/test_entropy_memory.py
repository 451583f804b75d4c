"""The exact-entropy step of scripts/entropy_memory.py: verl's formula, and the gradient the
plugin's loss sends to the logits is unchanged by the option that bounds its memory.

The bounding option is verl's own compiled entropy (``fsdp_config.use_torch_compile=true`` on the
``use_remove_padding`` path: the engine runs ``torch.compile(entropy_from_logits)``);
``entropy_checkpointing`` recomputes in backward. Memory and time of each, side by side:
``scripts/bench_entropy_memory.py`` (docs/production.md).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from entropy_memory import entropy_from_logits, loss_and_grad, make_inputs  # noqa: E402


def test_the_scripts_entropy_is_verls():
    from verl.utils.torch_functional import entropy_from_logits as verl_entropy

    logits = 3 * torch.randn(64, 1000, dtype=torch.float64)
    assert torch.equal(entropy_from_logits(logits), verl_entropy(logits))
    p = torch.softmax(logits, -1)
    assert torch.allclose(entropy_from_logits(logits), -(p * p.log()).sum(-1), rtol=1e-12, atol=1e-12)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_gradient_unchanged_by_compiling_or_checkpointing_the_entropy():
    inputs = make_inputs(256, 3000, torch.float32, "cpu")
    loss, grad = loss_and_grad(inputs, checkpointing=False)
    # the shaping term reaches the logits: the gradient differs from the policy-gradient term alone
    no_shaping = dict(inputs, weights=torch.zeros_like(inputs["weights"]))
    assert _relative(loss_and_grad(no_shaping, checkpointing=False)[1], grad) > 1e-3
    ckpt_loss, ckpt_grad = loss_and_grad(inputs, checkpointing=True)
    assert torch.equal(ckpt_grad, grad) and torch.equal(ckpt_loss, loss)  # recomputation is deterministic
    compiled_loss, compiled_grad = loss_and_grad(inputs, checkpointing=False, compiled=True)
    assert _relative(compiled_grad, grad) <= 1e-6
    assert abs((compiled_loss - loss).item()) <= 1e-6 * abs(loss.item())
