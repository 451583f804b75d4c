"""Named comparison profiles: overrides and seeds that ``g2rpo-compare --profile NAME`` applies.

``cheap`` is sized to tell estimators apart on 2 CPU cores (docs/results.md):
half the demo's steps, twice its prompts per task per step at half its rollouts per prompt
(the same 96 rows per step, so the same cost per step), a validation every 4 steps so that the
area under the validation curve pools 5 readings per task, and 6 seeds: measured on the five-arm
grid of docs/results.md, its minimum detectable difference of the mean-over-tasks accuracy area
is 0.007-0.028 paired (<= 0.03, the target it was sized for). The demo's own defaults
(configs/demo_cpu.yaml) are untouched; the profile's overrides come before the command line's,
which win.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Profile", "PROFILES"]


@dataclass(frozen=True)
class Profile:
    """Overrides for every run and the default seeds of a profile."""

    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    about: str


PROFILES = {
    "cheap": Profile(
        overrides=(
            "trainer.total_training_steps=16",
            "trainer.test_freq=4",
            "trainer.save_freq=4",
            "data.train_batch_size=24",  # 4 prompts per task per step (the demo: 2)
            "actor_rollout_ref.actor.ppo_mini_batch_size=24",  # still one optimizer step per step
            "actor_rollout_ref.rollout.n=4",  # 24 x 4 = 96 rows per step, as the demo's 12 x 8
        ),
        seeds=(0, 1, 2, 3, 4, 5),
        about="16 steps, 4 prompts/task/step x 4 rollouts, validation every 4 steps, 6 seeds",
    ),
}
