"""Response-length shaping inside verl's V1 trainer, where the whole batch is visible.

verl's reward workers see one sample at a time, in several processes, so running per-task
length statistics cannot live there. The trainer mixin calls :meth:`LengthShapingMixin.
_shape_lengths` at the start of each advantage step: it reads the responses from
TransferQueue, finds truncation from EOS (not from the tensor width), scores each length
with the task's envelope, adds ``weight · score`` to the reward at the last response token
(or hands it to GS-GDPO as the ``length`` component), updates the running statistics, and
logs them per task. The statistics are saved next to verl's checkpoint of each step
(``global_step_N/g2rpo_state.json``) and restored on resume.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import torch

from g2rpo_verl.length_shaping import LengthShaper

logger = logging.getLogger(__name__)

__all__ = ["LengthShapingMixin", "ResponseBatch", "STATE_FILE", "response_stats"]

STATE_FILE = "g2rpo_state.json"


def response_stats(responses: torch.Tensor, response_mask: torch.Tensor, eos_ids: set[int]):
    """Lengths ``(N,)`` and truncation flags ``(N,)`` of padded ``responses`` ``(N, T)``.

    A response is truncated when its last valid token is not an EOS token — whatever the
    padded width is. An empty response is not truncated.
    """
    lengths = response_mask.sum(-1).long()
    last = responses.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    ended = torch.isin(last, torch.tensor(sorted(eos_ids), dtype=last.dtype))
    return lengths, (lengths > 0) & ~ended


@dataclass
class ResponseBatch:
    """One step's responses from TransferQueue, padded to ``(N, T)``, rows in ``batch.keys`` order."""

    nested_mask: torch.Tensor  # TransferQueue's own (nested) response_mask, to write fields back
    response_mask: torch.Tensor  # (N, T)
    responses: torch.Tensor  # (N, T) token ids
    rm_scores: torch.Tensor  # (N, T) token-level rewards from the reward function
    lengths: torch.Tensor  # (N,) tokens
    truncated: torch.Tensor  # (N,) bool: ended without EOS

    @classmethod
    def fetch(cls, batch, eos_ids: set[int]) -> ResponseBatch:
        import transfer_queue as tq

        data = tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=["rm_scores", "response_mask", "responses"]
        )
        nested_mask = data["response_mask"]
        padded = data.to_padded_tensor()
        lengths, truncated = response_stats(padded["responses"], padded["response_mask"], eos_ids)
        return cls(nested_mask, padded["response_mask"], padded["responses"], padded["rm_scores"], lengths, truncated)

    def get(self, batch, field: str) -> torch.Tensor:
        """A per-token field of these rows, padded ``(N, T)``."""
        import transfer_queue as tq

        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=[field])
        return data.to_padded_tensor()[field]

    def token_mean(self, batch, field: str) -> torch.Tensor:
        """``(N,)`` mean of a per-token field over each response's tokens (0 for an empty one)."""
        mask = self.response_mask.to(torch.float64)
        return (self.get(batch, field).to(torch.float64) * mask).sum(-1) / mask.sum(-1).clamp(min=1)

    def put(self, batch, field: str, padded: torch.Tensor) -> None:
        """Write a padded ``(N, T)`` per-token field back to TransferQueue."""
        import transfer_queue as tq
        from tensordict import TensorDict
        from verl.workers.utils.padding import response_to_nested

        fields = TensorDict({field: response_to_nested(padded, self.nested_mask)}, batch_size=len(batch))
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)


class LengthShapingMixin:
    """Length shaping for the V1 trainer (mixed into G2RPOTrainerMixin)."""

    @property
    def eos_token_ids(self) -> set[int]:
        """Token ids that end a response: the tokenizer's EOS and the generation config's."""
        if getattr(self, "_eos_token_ids", None) is None:
            from verl.utils.config import omega_conf_to_dataclass
            from verl.workers.config import HFModelConfig

            ids = {self.tokenizer.eos_token_id} - {None}
            model_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.model, dataclass_type=HFModelConfig)
            eos = getattr(model_config.generation_config, "eos_token_id", None)
            ids.update([eos] if isinstance(eos, int) else list(eos or []))
            if not ids:
                raise ValueError("the tokenizer and generation config name no EOS token: truncation is undefined")
            self._eos_token_ids = {int(i) for i in ids}
        return self._eos_token_ids

    @property
    def length_shaper(self) -> LengthShaper:
        if getattr(self, "_length_shaper", None) is None:
            cfg = self.g2rpo_config.length
            estimator = self.config.algorithm.adv_estimator
            if cfg.mode == "component" and (
                estimator != "gs_gdpo" or "length" not in (self.config.algorithm.get("gdpo_reward_keys") or [])
            ):
                raise ValueError(
                    "g2rpo.length.mode=component needs algorithm.adv_estimator=gs_gdpo with 'length' "
                    "in algorithm.gdpo_reward_keys"
                )
            if cfg.mode == "reward" and estimator in ("gs_gdpo", "gdpo"):
                # GDPO-style estimators rank the components, never the summed reward: the term would be lost.
                raise ValueError(
                    f"algorithm.adv_estimator={estimator} ignores the summed reward, so g2rpo.length.mode=reward "
                    "would have no effect: use g2rpo.length.mode=component and add 'length' to gdpo_reward_keys"
                )
            self._length_shaper = LengthShaper({}, cfg.rule, momentum=cfg.momentum)
        return self._length_shaper

    def _shape_lengths(self, batch, info, responses: ResponseBatch, metrics: dict) -> torch.Tensor:
        """Apply length shaping (see module docstring); return the ``(N,)`` reward added per sample."""
        from g2rpo_verl.verl_hooks.trainer import _metric_name

        cfg, shaper = self.g2rpo_config.length, self.length_shaper
        lengths, truncated = responses.lengths, responses.truncated
        scores = shaper.score(lengths, info.tasks)
        if cfg.truncation == "penalize":
            scores = torch.where(truncated, torch.zeros_like(scores), scores)

        for task in dict.fromkeys(info.tasks):
            sel = torch.tensor([t == task for t in info.tasks])
            prefix = _metric_name(task)
            for name, value in zip(("a", "b", "c", "d"), shaper.bounds(task)):
                metrics[f"{prefix}/length/bound_{name}"] = value
            metrics[f"{prefix}/length/score"] = scores[sel].mean().item()

        successful = torch.tensor(
            [float((r or {}).get(cfg.success_key) or 0.0) >= cfg.success_threshold for r in info.reward_infos]
        )
        shaper.update(lengths, info.tasks, successful & ~truncated)

        if cfg.mode == "component":
            for i, reward_info in enumerate(info.reward_infos):
                info.reward_infos[i] = {**(reward_info or {}), "length": scores[i].item()}
            return torch.zeros_like(scores)
        bonus = cfg.weight * scores
        rm_scores = responses.rm_scores.clone()
        rows = torch.nonzero(lengths > 0).squeeze(1)
        rm_scores[rows, lengths[rows] - 1] += bonus[rows].to(rm_scores.dtype)
        responses.put(batch, "rm_scores", rm_scores)
        return bonus

    def _mask_truncated(self, batch, responses: ResponseBatch) -> None:
        """Zero the advantages of truncated responses (``g2rpo.length.truncation=mask``)."""
        if not responses.truncated.any():
            return
        adv = responses.get(batch, "advantages")
        adv[responses.truncated.to(adv.device)] = 0.0
        responses.put(batch, "advantages", adv)

    # -------------------------------------------------------------- checkpoints

    def _g2rpo_checkpoint_folder(self, loading: bool) -> str:
        # The folders verl itself uses for this step's save / for the resumed checkpoint.
        trainer_cfg = self.config.trainer
        if loading and trainer_cfg.resume_mode == "resume_path":
            return trainer_cfg.resume_from_path
        return os.path.join(trainer_cfg.default_local_dir, f"global_step_{self.global_steps}")

    def _save_checkpoint(self):
        super()._save_checkpoint()
        if not self.g2rpo_config.length.enable:
            return
        path = os.path.join(self._g2rpo_checkpoint_folder(loading=False), STATE_FILE)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"length": self.length_shaper.state_dict()}, f)
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written state file

    def _load_checkpoint(self):
        super()._load_checkpoint()
        if not self.g2rpo_config.length.enable or self.global_steps == 0:
            return
        path = os.path.join(self._g2rpo_checkpoint_folder(loading=True), STATE_FILE)
        if not os.path.exists(path):
            logger.warning("g2rpo: no %s in the checkpoint; length statistics start afresh", path)
            return
        with open(path) as f:
            self.length_shaper.load_state_dict(json.load(f)["length"])
        logger.warning("g2rpo: length statistics restored from %s", path)
