"""Per-task gradient diagnostics: the pure-torch math (verl wiring: ``verl_hooks/grad_diagnostics.py``).

The policy gradient of one optimizer step splits over tasks, ``g = Σ_τ g_τ``, where ``g_τ`` is the
gradient of the actor loss with every row outside task τ masked out and the loss's normalisation
(verl's global token / sequence counts) left as it is. The loss is a sum of per-row terms, so the
parts add up to the real gradient exactly. Everything reported is a function of the Gram matrix
``G[i, j] = g_i · g_j`` (:class:`TaskGradientGram`):

* ``norm_τ = ‖g_τ‖ = sqrt(G[τ, τ])``: how hard task τ pulls;
* ``share_τ = g_τ · g / ‖g‖² = Σ_j G[τ, j] / Σ_ij G[i, j]``: the projection share. The shares sum
  to 1 because ``‖g‖² = Σ_τ g_τ · g``: each task's share is its part of the update actually taken,
  counting interference. A task whose gradient is cancelled by the others gets a small share even
  with a large norm, and one pulling against the update gets a negative share. (The alternative
  ``‖g_τ‖² / Σ_j ‖g_j‖²`` also sums to 1 but ignores the angles, which the norms and cosines
  already show; the projection share is the one that says whose direction the step follows.)
* ``cos(τ1, τ2) = G[τ1, τ2] / (‖g_τ1‖ ‖g_τ2‖)``: NaN when either part is zero (a task with no
  response tokens, or all-zero advantages and no other loss term).

Sharded gradients (FSDP) are reduced exactly: each rank takes the dot products of its local
shards (:func:`local_gram`), and :func:`reduce_gram` sums them over the ranks holding different
shards, and only those (a DTensor's placements say which mesh dimensions shard it; replicated
dimensions are not summed). ``task_gradient_gram`` runs the passes: one backward per task,
keeping a copy of each task's local gradient shard (memory: ``T × parameters / shards`` in the
gradient dtype, e.g. fp32), so the cost is ``T`` extra forward+backward passes over the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "TaskGradientGram",
    "LocalGrads",
    "local_grads",
    "local_gram",
    "reduce_gram",
    "task_gradient_gram",
    "mask_rows",
    "GRAM_CHUNK",
]

#: Elements per chunk when the Gram matrix is taken (float64 copies of at most T x this).
GRAM_CHUNK = 1 << 22


@dataclass(frozen=True)
class TaskGradientGram:
    """The Gram matrix of the per-task gradient parts of one optimizer step.

    Attributes:
        tasks: the ``T`` task names, in the order of ``gram``'s rows.
        gram: ``(T, T)`` float64, ``gram[i, j] = g_i · g_j`` over every parameter (all shards).
    """

    tasks: tuple[str, ...]
    gram: torch.Tensor

    def __post_init__(self) -> None:
        if self.gram.shape != (len(self.tasks), len(self.tasks)):
            raise ValueError(f"gram has shape {tuple(self.gram.shape)} for {len(self.tasks)} tasks")

    @property
    def norms(self) -> torch.Tensor:
        """``(T,)`` ``‖g_τ‖``."""
        return self.gram.diagonal().clamp_min(0.0).sqrt()

    @property
    def total_norm(self) -> float:
        """``‖g‖ = ‖Σ_τ g_τ‖`` (what verl logs as ``actor/grad_norm``, before clipping)."""
        return float(self.gram.sum().clamp_min(0.0).sqrt())

    @property
    def shares(self) -> torch.Tensor:
        """``(T,)`` projection shares ``g_τ · g / ‖g‖²`` (sum to 1; NaN when ``g = 0``)."""
        total = self.gram.sum()
        if total <= 0:
            return torch.full((len(self.tasks),), float("nan"), dtype=torch.float64)
        return self.gram.sum(1) / total

    @property
    def cosines(self) -> torch.Tensor:
        """``(T, T)`` cosine between task parts (NaN where a part is zero)."""
        n = self.norms
        denom = n[:, None] * n[None, :]
        return torch.where(denom > 0, self.gram / denom.where(denom > 0, torch.ones_like(denom)), float("nan"))


#: A rank's local gradient shards, grouped by how they are sharded: key -> flat vector.
#: The key is ``None`` for plain tensors and ``(device_mesh, placements)`` for DTensors.
LocalGrads = dict


def local_grads(params: Iterable[torch.nn.Parameter]) -> LocalGrads:
    """A flat copy of this rank's part of every parameter's ``.grad``, grouped by sharding.

    Parameters without a gradient count as zero (they are left out: they add nothing to a dot
    product). Each group's copy is in the gradients' dtype.
    """
    from torch.distributed.tensor import DTensor

    parts: dict = {}
    for p in params:
        g = p.grad
        if g is None:
            continue
        if isinstance(g, DTensor):
            if any(pl.is_partial() for pl in g.placements):
                raise RuntimeError("a gradient is still a partial sum (not reduced over data-parallel ranks)")
            key, local = (g.device_mesh, tuple(g.placements)), g.to_local()
        else:
            key, local = None, g
        parts.setdefault(key, []).append(local.detach().reshape(-1))
    return {key: torch.cat(v) for key, v in parts.items()}


def local_gram(per_task: Sequence[LocalGrads], chunk: int = GRAM_CHUNK) -> dict:
    """``key -> (T, T)`` float64: dot products of the local shards of each sharding group.

    ``per_task[τ]`` is :func:`local_grads` after task τ's pass; a group missing from a task
    (no gradient there) is zero for it.
    """
    num_tasks = len(per_task)
    keys = list(dict.fromkeys(k for grads in per_task for k in grads))
    out = {}
    for key in keys:
        size = next(grads[key].numel() for grads in per_task if key in grads)
        present = [t for t in range(num_tasks) if key in per_task[t]]
        gram = torch.zeros(num_tasks, num_tasks, dtype=torch.float64)
        for start in range(0, size, chunk):
            block = torch.stack([per_task[t][key][start : start + chunk].to(torch.float64) for t in present])
            sub = (block @ block.T).cpu()
            gram[torch.tensor(present)[:, None], torch.tensor(present)[None, :]] += sub
        out[key] = gram
    return out


def reduce_gram(gram_parts: dict, plain_group=None) -> torch.Tensor:
    """``(T, T)`` float64: the global Gram matrix from every rank's :func:`local_gram`.

    DTensor groups are summed over the mesh dimensions that shard them (``Shard`` placements)
    and not over replicated ones. Plain-tensor gradients are summed over ``plain_group`` (the
    process group their shards are spread over, e.g. FSDP1's); ``None`` = they are whole on every
    rank (one process, or replicated), so nothing is summed. Every rank must call this (it
    communicates) with the same groups.
    """
    from torch.distributed.tensor import DTensor, Partial, Replicate

    total = None
    for key, gram in gram_parts.items():
        if key is None:
            if plain_group is not None:
                reduced = gram.clone()
                torch.distributed.all_reduce(reduced, op=torch.distributed.ReduceOp.SUM, group=plain_group)
            else:
                reduced = gram
        else:
            mesh, placements = key
            device = torch.device(mesh.device_type)  # "cuda" = the current device
            spec = [Partial() if pl.is_shard() else Replicate() for pl in placements]
            reduced = DTensor.from_local(gram.to(device), mesh, spec, run_check=False).full_tensor().cpu()
        total = reduced if total is None else total + reduced
    return total


def task_gradient_gram(
    tasks: Sequence[str],
    params: Callable[[], Iterable[torch.nn.Parameter]],
    run_task_pass: Callable[[int], None],
    zero_grad: Callable[[], None],
    plain_group=None,
) -> TaskGradientGram:
    """Run ``run_task_pass(τ)`` (forward + backward of task τ's part of the loss) for every task
    and return the reduced Gram matrix of the parts.

    ``zero_grad`` is called before each pass and once at the end, so the gradients are left
    zeroed (the caller's real pass starts from zero as it would have). The passes run inside
    ``torch.random.fork_rng`` on the CPU and the current accelerator, so a model that draws
    random numbers in training mode (dropout) draws the same ones in the real pass after them.
    """
    per_task: list[LocalGrads] = []
    devices = []
    device_type = "cuda"
    if torch.accelerator.is_available():
        device_type = torch.accelerator.current_accelerator().type
        devices = [torch.accelerator.current_device_index()]
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        for t in range(len(tasks)):
            zero_grad()
            run_task_pass(t)
            per_task.append({k: v.clone() for k, v in local_grads(params()).items()})
        zero_grad()
    gram = reduce_gram(local_gram(per_task), plain_group)
    if gram is None:  # no parameter had a gradient in any pass
        gram = torch.zeros(len(tasks), len(tasks), dtype=torch.float64)
    return TaskGradientGram(tuple(str(t) for t in tasks), gram)


def mask_rows(mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``mask`` with the rows where ``keep`` is False zeroed.

    Args:
        mask: ``(B, L)`` dense or a jagged nested tensor of ``B`` rows (verl's no-padding layout).
        keep: ``(B,)`` bool.

    Returns:
        the same layout, dtype and device as ``mask``.
    """
    keep = keep.reshape(-1).to(device=mask.device)
    if keep.numel() != mask.size(0):
        raise ValueError(f"keep has {keep.numel()} rows, the mask {mask.size(0)}")
    # a (B, 1) dense factor broadcasts over a jagged tensor keeping its ragged structure
    return mask * keep.reshape(-1, *([1] * (mask.dim() - 1))).to(mask.dtype)
