"""Response-length shaping inside verl's V1 trainer, where the whole batch is visible.

verl's reward workers see one sample at a time, in several processes, so running per-task
length statistics cannot live there. The trainer mixin calls :meth:`LengthShapingMixin.
shape_lengths` at the start of each advantage step: it scores each response's length with
its task's envelope (truncation found from EOS, not from the tensor width), adds
``weight · score`` to the reward at the last response token (``mode=reward``) or returns the
scores for GS-GDPO's ``length`` component (``mode=component``), updates the running
statistics and logs them per task. The statistics are trainer-side state
(:meth:`~g2rpo_verl.verl_hooks.base.G2RPOBase.g2rpo_state_parts`, name ``length``): saved
next to verl's checkpoint of each step and restored on resume.

The config check (:mod:`g2rpo_verl.verl_hooks.checks`) has already refused a mode whose term
the estimator would never see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from g2rpo_verl.algorithms.length import LengthShaper, ties_within_groups
from g2rpo_verl.verl_compat.api import TQ
from g2rpo_verl.verl_hooks.base import G2RPOBase, Stateful
from g2rpo_verl.verl_hooks.samples import ResponseBatch, SampleInfo, metric_prefix

__all__ = ["LengthShapingMixin", "LengthScores"]


@dataclass(frozen=True)
class LengthScores:
    """Outcome of one step's length shaping.

    Attributes:
        scores: ``(N,)`` float64 envelope score of each response (0 for a penalised truncation).
        bonus: ``(N,)`` reward added to each sample's summed reward (``weight·score`` in
            ``reward`` mode, zeros in ``component`` mode).
    """

    scores: torch.Tensor
    bonus: torch.Tensor


class LengthShapingMixin(G2RPOBase):
    """Length shaping for the V1 trainer (a base of G2RPOTrainerMixin)."""

    @property
    def length_shaper(self) -> LengthShaper:
        if getattr(self, "_length_shaper", None) is None:
            cfg = self.g2rpo_config.length
            self._length_shaper = LengthShaper({}, cfg.rule, momentum=cfg.momentum)
        return self._length_shaper

    def g2rpo_state_parts(self) -> dict[str, Stateful]:
        parts = super().g2rpo_state_parts()
        if self.g2rpo_config.length.enable:
            parts["length"] = self.length_shaper
        return parts

    def shape_lengths(self, batch, info: SampleInfo, responses: ResponseBatch, metrics: dict) -> LengthScores:
        """Score, update the statistics, log; in ``reward`` mode write the bonus into ``rm_scores``."""
        cfg, shaper = self.g2rpo_config.length, self.length_shaper
        lengths, truncated = responses.lengths, responses.truncated
        scores = shaper.score(lengths, list(info.tasks))
        if cfg.truncation == "penalize":
            scores = torch.where(truncated, torch.zeros_like(scores), scores)

        _, group_ids = np.unique(np.asarray(info.uids, dtype=object), return_inverse=True)
        tied = ties_within_groups(responses.reward_sums, torch.as_tensor(group_ids.reshape(-1)))
        for task in info.task_names:
            prefix = metric_prefix(task)
            # the share of responses whose in-group rank the length score decides
            metrics[f"{prefix}/length/tied_share"] = tied[info.task_mask(task)].double().mean().item()
            profile = shaper.rule(task).profile
            metrics[f"{prefix}/length/direction"] = {"reasoning": 1.0, "perception": -1.0}.get(profile, 0.0)
            for name, value in zip(("a", "b", "c", "d"), shaper.bounds(task)):
                metrics[f"{prefix}/length/bound_{name}"] = value
            metrics[f"{prefix}/length/score"] = scores[info.task_mask(task)].mean().item()

        successful = torch.tensor(
            [float((r or {}).get(cfg.success_key) or 0.0) >= cfg.success_threshold for r in info.reward_infos]
        )
        shaper.update(lengths, list(info.tasks), successful & ~truncated)

        if cfg.mode == "component":
            return LengthScores(scores, torch.zeros_like(scores))
        bonus = cfg.weight * scores
        rows = responses.rows
        rm_scores = rows.values(responses.rm_scores).clone()
        nonempty = torch.nonzero(lengths > 0).squeeze(1)
        rm_scores[rows.last_positions[nonempty]] += bonus[nonempty].to(rm_scores.dtype)
        responses.put(batch, TQ.RM_SCORES, rm_scores)
        return LengthScores(scores, bonus)

    def mask_truncated(self, batch, responses: ResponseBatch) -> None:
        """Zero the advantages of truncated responses (``g2rpo.length.truncation=mask``)."""
        if not responses.truncated.any():
            return
        rows = responses.rows
        adv = rows.values(responses.get(batch, TQ.ADVANTAGES)).clone()
        adv[responses.truncated[rows.row_ids]] = 0.0
        responses.put(batch, TQ.ADVANTAGES, adv)
