"""The V1-trainer mixin: per-sample task keys for the plugin's estimators, task-level shaping, per-task metrics.

verl's V1 trainer stores every dataset column (``data_source``, ``extra_info``, ...) and the
reward function's dict (``extra_fields["reward_extra_info"]``) per sample in TransferQueue,
but its advantage step reads only uids, masks and rewards. The mixin reads the rest for the
same rows once per step (:class:`~g2rpo_verl.verl_hooks.samples.SampleInfo`); for the plugin's estimators it
hands the estimator a :class:`~g2rpo_verl.estimators.TaskBatch` and lets verl's
own ``_compute_advantage`` run unchanged (KL-in-reward, rollout correction and the write-back
stay verl's). Around it come length shaping (before) and the per-task metrics of the step
(after), for every estimator. Entropy shaping and group filtering live in their own mixins
(``entropy.py``, ``filtering.py``); all of them share :class:`~g2rpo_verl.verl_hooks.base.G2RPOBase`,
which validates the config before verl builds anything.

Layers (each imports only those below it): ``samples`` -> ``checks`` -> ``base`` ->
``length`` / ``entropy`` / ``filtering`` / ``advantages`` / ``task_metrics`` /
``grad_diagnostics`` -> this module.

It is mixed into every trainer in verl's ``TRAINER_REGISTRY`` when that module is imported,
so ``algorithm.adv_estimator=gs_grpo`` works with the stock ``trainer.v1.trainer_mode``
values and no extra config.
"""

from __future__ import annotations

import logging

import torch

from g2rpo_verl.config import gdpo_components
from g2rpo_verl.estimators import EstimatorSpec, estimator_spec
from g2rpo_verl.verl_compat.api import TQ
from g2rpo_verl.verl_hooks.advantages import build_task_batch, task_batch
from g2rpo_verl.verl_hooks.entropy import EntropyShapingMixin
from g2rpo_verl.verl_hooks.filtering import GroupFilterMixin
from g2rpo_verl.verl_hooks.grad_diagnostics import GradDiagnosticsMixin
from g2rpo_verl.verl_hooks.length import LengthShapingMixin
from g2rpo_verl.verl_hooks.samples import ResponseBatch
from g2rpo_verl.verl_hooks.task_metrics import estimator_metrics, task_entropy_metrics, task_step_metrics

logger = logging.getLogger(__name__)

__all__ = ["G2RPOTrainerMixin", "install"]


class G2RPOTrainerMixin(GradDiagnosticsMixin, EntropyShapingMixin, LengthShapingMixin, GroupFilterMixin):
    """Mixed in front of verl's V1 trainers; see the module docstring.

    An estimator with a state (:attr:`~g2rpo_verl.estimators.EstimatorSpec.state`, e.g.
    ``ema_grpo``'s per-task moments) keeps it here, a trainer-side state part named
    ``spec.state_name`` in the step's ``g2rpo_state.json``, restored on resume.
    """

    @property
    def g2rpo_estimator(self) -> EstimatorSpec | None:
        """The declaration of ``algorithm.adv_estimator`` if it is one of the plugin's, else ``None``."""
        return estimator_spec(str(self.config.algorithm.adv_estimator))

    def g2rpo_estimator_state(self):
        """The estimator's state (created on first use), or ``None`` for a stateless estimator."""
        spec = self.g2rpo_estimator
        if spec is None or spec.state is None:
            return None
        if getattr(self, "_g2rpo_estimator_state", None) is None:
            self._g2rpo_estimator_state = spec.state()
        return self._g2rpo_estimator_state

    def g2rpo_state_parts(self) -> dict:
        parts = super().g2rpo_state_parts()
        if (state := self.g2rpo_estimator_state()) is not None:
            parts[self.g2rpo_estimator.state_name] = state
        return parts

    def _compute_advantage(self, batch, metrics: dict):
        spec = self.g2rpo_estimator
        length_cfg = self.g2rpo_config.length
        needs_tasks = spec is not None or length_cfg.enable
        info = self.sample_info(batch, fallback_to_data_source=not needs_tasks)
        responses = ResponseBatch.fetch(batch, self.eos_token_ids)
        bonus = torch.zeros(len(info), dtype=torch.float64)
        if length_cfg.enable:
            shaped = self.shape_lengths(batch, info, responses, metrics)
            bonus = shaped.bonus
            if length_cfg.mode == "component":
                info = info.with_component("length", shaped.scores)
        if spec is not None:
            components = gdpo_components(self.config.algorithm) if spec.ranks_components else None
            state = self.g2rpo_estimator_state()
            with task_batch(build_task_batch(info, components, state, self.g2rpo_config)):
                batch = super()._compute_advantage(batch, metrics)
            if spec.step_metrics is not None:
                metrics.update(estimator_metrics(spec.step_metrics(state, self.g2rpo_config)))
        else:
            batch = super()._compute_advantage(batch, metrics)
        if length_cfg.enable and length_cfg.truncation == "mask":
            self.mask_truncated(batch, responses)
        advantages = responses.rows.mean(responses.get(batch, TQ.ADVANTAGES))
        rewards = responses.reward_sums + bonus
        metrics.update(
            task_step_metrics(
                info.tasks, info.reward_infos, rewards, advantages, responses.lengths, responses.truncated
            )
        )
        if batch.fields is None or TQ.ENTROPY in batch.fields:  # verl stores it unless bypass_mode
            entropy = responses.rows.sum(responses.get(batch, TQ.ENTROPY))
            metrics.update(task_entropy_metrics(info.task_names, info.task_ids, entropy, responses.rows.counts))
        return batch


def install(registry: dict[str, type]) -> None:
    """Put :class:`G2RPOTrainerMixin` in front of every trainer class in ``registry`` (idempotent)."""
    for name, cls in list(registry.items()):
        if not issubclass(cls, G2RPOTrainerMixin):
            registry[name] = type(cls.__name__, (G2RPOTrainerMixin, cls), {"__module__": __name__})
