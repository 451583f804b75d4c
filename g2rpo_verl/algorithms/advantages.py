"""The G²RPO (``gs_grpo``) and GS-GDPO (``gs_gdpo``) advantage estimators, in pure torch.

Both are two-stage rank transports onto N(0, 1) (see :mod:`g2rpo_verl.algorithms.gaussian`):

    gs_grpo:  a_i = gaussianize(R within prompt group g(i))
              A_i = gaussianize(a within task τ(i), whole batch)

    gs_gdpo:  a_i^c = gaussianize(component c within group g(i)), for each component c
              s_i   = Σ_c w_c · a_i^c
              A_i   = gaussianize(s within task τ(i))

The second stage is what gives every task the same advantage distribution (≈ N(0, 1)), so a
task with dense rewards cannot out-pull a task with binary ones.

A reward component that does not apply to a sample (``present[i, c] == False``) is left out
of that component's ranking in the sample's group, and contributes 0 — the neutral value — to
the sample's sum ``s_i``. It is neither scored as a 0 reward (which would rank the sample
below its group mates) nor allowed to shift the other samples' ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from g2rpo_verl.algorithms.gaussian import gaussianize_float64

__all__ = ["gs_grpo_advantages", "gs_gdpo_advantages"]


def _check_ids(name: str, ids: torch.Tensor, n: int) -> None:
    if ids.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(ids.shape)}")
    if ids.is_floating_point():
        raise ValueError(f"{name} must be an integer tensor (use torch.unique(..., return_inverse=True))")


def _finish(adv64: torch.Tensor, like: torch.Tensor, response_mask: torch.Tensor | None) -> torch.Tensor:
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    adv = adv64.to(dtype)
    if response_mask is None:
        return adv
    if response_mask.ndim != 2 or response_mask.shape[0] != adv.shape[0]:
        raise ValueError(f"response_mask must have shape ({adv.shape[0]}, T), got {tuple(response_mask.shape)}")
    return adv.unsqueeze(-1) * response_mask.to(dtype)


def gs_grpo_advantages(
    scores: torch.Tensor,
    group_ids: torch.Tensor,
    task_ids: torch.Tensor,
    response_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """G²RPO advantages.

    Args:
        scores: ``(N,)`` scalar outcome rewards, finite.
        group_ids: ``(N,)`` integer prompt-group labels (verl's ``uid``, made integer).
        task_ids: ``(N,)`` integer task labels.
        response_mask: optional ``(N, T)`` mask; when given the result is broadcast over it.

    Returns:
        ``(N,)`` advantages — or ``(N, T)`` equal to ``A_i · response_mask[i, t]`` — in the
        dtype of ``scores``. Zero-sum within each task, ``|A| ≤ Φ⁻¹(1 − 0.5/n_τ)``.
    """
    n = scores.shape[0] if scores.ndim == 1 else -1
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D (N,), got shape {tuple(scores.shape)}")
    _check_ids("group_ids", group_ids, n)
    _check_ids("task_ids", task_ids, n)
    stage1 = gaussianize_float64(scores, group_ids)
    return _finish(gaussianize_float64(stage1, task_ids), scores, response_mask)


def gs_gdpo_advantages(
    components: torch.Tensor,
    group_ids: torch.Tensor,
    task_ids: torch.Tensor,
    weights: Sequence[float] | torch.Tensor | None = None,
    present: torch.Tensor | None = None,
    response_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """GS-GDPO advantages: per-component group transport, weighted sum, task transport.

    Args:
        components: ``(N, K)`` reward components; entries where ``present`` is False are
            ignored (they may hold anything, NaN included).
        group_ids: ``(N,)`` integer prompt-group labels.
        task_ids: ``(N,)`` integer task labels.
        weights: ``K`` finite weights, at least one positive (default: all 1).
        present: optional ``(N, K)`` bool, False where a component does not apply to a sample.
        response_mask: optional ``(N, T)`` mask, as in :func:`gs_grpo_advantages`.

    Returns:
        ``(N,)`` (or ``(N, T)``) advantages in the dtype of ``components``. With ``K == 1``
        and every component present this equals :func:`gs_grpo_advantages`.
    """
    if components.ndim != 2:
        raise ValueError(f"components must be 2-D (N, K), got shape {tuple(components.shape)}")
    n, k = components.shape
    _check_ids("group_ids", group_ids, n)
    _check_ids("task_ids", task_ids, n)
    if weights is None:
        weights = [1.0] * k
    w = torch.as_tensor(weights, dtype=torch.float64, device=components.device)
    if w.shape != (k,):
        raise ValueError(f"weights must have {k} entries (one per component), got {tuple(w.shape)}")
    if not torch.isfinite(w).all() or not (w > 0).any():
        raise ValueError(f"weights must be finite with at least one positive, got {w.tolist()}")
    if present is None:
        present = torch.ones(n, k, dtype=torch.bool, device=components.device)
    elif present.shape != (n, k):
        raise ValueError(f"present must have shape ({n}, {k}), got {tuple(present.shape)}")
    present = present.to(torch.bool)
    bad = present & ~torch.isfinite(components)
    if bad.any():
        i, c = (int(x) for x in bad.nonzero()[0])
        raise ValueError(f"component {c} of sample {i} is {components[i, c].item()} (not finite)")

    # All K component rankings in one call: segment = (component, group), present entries only.
    rows, cols = present.nonzero(as_tuple=True)
    dense_group = torch.unique(group_ids, return_inverse=True)[1]
    seg = cols * (int(dense_group.max()) + 1 if n else 1) + dense_group[rows]
    per_comp = torch.zeros(n, k, dtype=torch.float64, device=components.device)
    per_comp[rows, cols] = gaussianize_float64(components[rows, cols], seg)
    # Equal weighted sums reached through different float rounding must still tie in stage 2.
    summed = torch.round(per_comp @ w, decimals=12)
    return _finish(gaussianize_float64(summed, task_ids), components, response_mask)
