"""G²RPO's core map: rank-based optimal transport of scores onto N(0, 1).

For the N scores of one segment (a prompt group, or a task), the k-th smallest (k = 1..N)
is sent to the standard-normal quantile ``q_k = Φ⁻¹((k − 0.5) / N)``; equal scores share the
mean of the quantiles of the positions they occupy. This is the 1-D optimal transport map
from the empirical distribution onto the N-point discretisation of N(0, 1), so the output

* depends only on ranks (any strictly increasing transform of the input gives the same map),
* sums to zero in every segment and is bounded by ``|q| ≤ Φ⁻¹(1 − 0.5/N)``,
* is 0 for a segment of one element or a segment whose elements are all equal.

``gaussianize`` handles every segment of a batch in one pass (two stable sorts and a few
gathers), on whatever device the tensors live on.
"""

from __future__ import annotations

import torch

__all__ = ["gaussianize", "gaussianize_float64"]


def gaussianize(values: torch.Tensor, group_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Map each segment of ``values`` onto N(0, 1) quantiles by rank, ties averaged.

    Args:
        values: ``(N,)`` real scores. Must be finite.
        group_ids: ``(N,)`` integer segment labels (any values, any order); ``None`` puts all
            of ``values`` in one segment.

    Returns:
        ``(N,)`` tensor on ``values``' device, in ``values``' dtype when it is floating point
        (else the default float dtype); element ``i`` is the tie-averaged quantile of its rank
        within its segment.

    Raises:
        ValueError: on a shape mismatch or a non-finite value (its index is named).
    """
    out = gaussianize_float64(values, group_ids)
    dtype = values.dtype if values.is_floating_point() else torch.get_default_dtype()
    return out.to(dtype)


def gaussianize_float64(values: torch.Tensor, group_ids: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`gaussianize`, returning float64.

    Guarantee used by the two-stage estimators: outputs that are mathematically equal are
    bitwise equal — runs of ties at the same positions of same-size segments, lone values at
    the same fraction ``(k + 0.5) / n`` of any segment size, and centred runs (exactly 0) —
    so a later ranking sees them as ties on every device (no atomics or position-dependent
    sums are involved).
    """
    if values.ndim != 1:
        raise ValueError(f"gaussianize: values must be 1-D (N,), got shape {tuple(values.shape)}")
    n_total = values.numel()
    device = values.device
    if group_ids is None:
        group_ids = torch.zeros(n_total, dtype=torch.long, device=device)
    if group_ids.shape != values.shape:
        raise ValueError(f"gaussianize: group_ids shape {tuple(group_ids.shape)} != values shape {tuple(values.shape)}")
    if n_total == 0:
        return torch.zeros(0, dtype=torch.float64, device=device)
    v = values.to(torch.float64)
    bad = ~torch.isfinite(v)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"gaussianize: non-finite value {values[i].item()} at index {i} (of {n_total})")

    # Labels already in [0, N) (uids factorised, task indices) index bincount directly: the
    # unused labels make empty segments that no element refers to. Others are made dense.
    seg = group_ids.long()
    lo, hi = torch.stack(torch.aminmax(seg)).tolist() if not group_ids.is_floating_point() else (-1, -1)
    if lo < 0 or hi >= n_total:
        seg = torch.unique(group_ids, return_inverse=True)[1]
    # Lexicographic order by (segment, value): stable sort by value, then stable by segment.
    order = torch.argsort(v, stable=True)
    order = order[torch.argsort(seg[order], stable=True)]
    seg_s, v_s = seg[order], v[order]

    counts = torch.bincount(seg)  # (G,) segment sizes
    seg_start = torch.cumsum(counts, 0) - counts

    # Runs of equal values inside a segment; each run gets one output value.
    new_run = torch.ones(n_total, dtype=torch.bool, device=device)
    new_run[1:] = (seg_s[1:] != seg_s[:-1]) | (v_s[1:] != v_s[:-1])
    run_id = torch.cumsum(new_run, 0) - 1
    run_first = new_run.nonzero().squeeze(1)  # (R,)
    run_len = torch.diff(run_first, append=torch.tensor([n_total], device=device))
    run_seg = seg_s[run_first]
    k0 = run_first - seg_start[run_seg]  # 0-based rank of the run's first element
    n = counts[run_seg]

    # Mean of q over a run = difference of prefix sums of q, read from a table with one block
    # per distinct segment size. Indexing by (size, k0, len) alone is what makes equal runs
    # bitwise equal across segments (see docstring).
    sizes, size_idx = torch.unique(counts, return_inverse=True)
    block_len = sizes + 1
    block_off = torch.cumsum(block_len, 0) - block_len
    j = torch.arange(int(block_len.sum()), device=device) - torch.repeat_interleave(block_off, block_len)
    n_of = torch.repeat_interleave(sizes, block_len).to(torch.float64)
    q = torch.special.ndtri(((j - 0.5) / n_of).clamp(min=0.0))
    prefix = torch.cumsum(torch.where(j > 0, q, torch.zeros_like(q)), 0)
    base = block_off[size_idx[run_seg]] + k0
    run_mean = (prefix[base + run_len] - prefix[base]) / run_len
    # A lone value gets its quantile straight from the fraction (k + 0.5) / n: equal fractions
    # in segments of different size (0.5/3 == 2.5/15) then give bitwise-equal outputs.
    single = torch.special.ndtri((k0 + 0.5) / n.to(torch.float64))
    run_mean = torch.where(run_len == 1, single, run_mean)
    # A run centred in its segment (a lone middle element, an all-tied segment) has mean
    # exactly 0 by symmetry; pin it so that such runs tie across segments of different size.
    run_mean = torch.where(2 * k0 + run_len == n, torch.zeros_like(run_mean), run_mean)

    out = torch.empty(n_total, dtype=torch.float64, device=device)
    out[order] = run_mean[run_id]
    return out
