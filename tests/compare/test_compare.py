"""Specification of ``g2rpo-compare``: intervals, the summary of runs' metrics, the report, the command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from g2rpo_verl.compare.compare_cli import parse_arms, run_command, total_steps
from g2rpo_verl.compare.comparison_report import Arm, curve_area, summarize, write_report
from g2rpo_verl.compare.stats import minimum_detectable_difference, paired_difference, t_interval


def test_t_interval_worked_example():
    iv = t_interval([2.0, 3.0, 4.0])  # mean 3, sd 1, t(0.975, 2) = 4.3027: half-width 2.484
    assert iv.mean == 3.0 and iv.n == 3
    assert iv.high - iv.mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert iv.excludes_zero and iv.format() == "3.000 [0.516, 5.484]"
    assert not t_interval([1.0, 2.0, 3.0]).excludes_zero
    one = t_interval([0.4])
    assert one.mean == 0.4 and math.isnan(one.low) and not one.excludes_zero and one.format() == "0.400"
    assert t_interval([]).n == 0


def test_paired_difference_uses_only_shared_seeds():
    d = paired_difference({0: 1.0, 1: 2.0, 2: 9.0}, {0: 0.5, 1: 1.0, 5: 3.0})
    assert d.values == (0.5, 1.0) and d.mean == 0.75


def test_minimum_detectable_difference_worked_example():
    # paired: sd 0.02 over 3 seeds, (t(0.975, 2) + t(0.8, 2)) = 4.3027 + 1.0607
    assert minimum_detectable_difference([0.01, 0.03, -0.01]) == pytest.approx(5.3634 * 0.02 / math.sqrt(3), rel=1e-4)
    # unpaired: two arms of 3 seeds, sd 0.1, df 4: (2.7764 + 0.9410) · 0.1 · sqrt(2/3)
    assert minimum_detectable_difference([0.3, 0.4, 0.5], paired=False) == pytest.approx(
        3.7174 * 0.1 * math.sqrt(2 / 3), rel=1e-4
    )
    # more seeds, same spread: smaller; one seed: undefined
    assert minimum_detectable_difference([0.01, 0.03, -0.01] * 3) < minimum_detectable_difference([0.01, 0.03, -0.01])
    assert math.isnan(minimum_detectable_difference([0.1]))


def test_curve_area_is_the_trapezoid_mean_over_the_validated_span():
    assert curve_area({"0": 0.0, "10": 1.0, "20": 1.0}) == pytest.approx((5 + 10) / 20)
    assert curve_area({"20": 0.4, "0": 0.2}) == pytest.approx(0.3)  # order of the keys does not matter
    assert curve_area({"5": 0.7}) == 0.7 and curve_area({}) is None


def _write_run(path: Path, val: dict[int, dict[str, tuple[float, float]]], train: dict[int, dict[str, tuple]]):
    """metrics.jsonl with validation (acc, reward) per source and training advantage stats per task."""
    path.mkdir(parents=True, exist_ok=True)
    steps = sorted(set(val) | set(train))
    with open(path / "metrics.jsonl", "w") as f:
        for step in steps:
            data = {}
            for source, (acc, reward) in val.get(step, {}).items():
                data[f"val-core/{source}/acc/mean@2"] = acc
                data[f"val-aux/{source}/reward/mean@2"] = reward
            for task, (std, lo, hi, skew, reward) in train.get(step, {}).items():
                data.update(
                    {
                        f"task_{task}/advantage/std": std,
                        f"task_{task}/advantage/min": lo,
                        f"task_{task}/advantage/max": hi,
                        f"task_{task}/advantage/skew": skew,
                        f"task_{task}/reward/total": reward,
                    }
                )
            f.write(json.dumps({"step": step, "data": data}) + "\n")


def test_summary_numbers_are_the_runs_own_metrics(tmp_path):
    arms = [Arm("grpo", ("algorithm.adv_estimator=grpo",)), Arm("gs_grpo", ("algorithm.adv_estimator=gs_grpo",))]
    finals = {("grpo", 0): (0.5, 0.2), ("grpo", 1): (0.6, 0.1), ("gs_grpo", 0): (0.7, 0.2), ("gs_grpo", 1): (0.9, 0.3)}
    for (arm, seed), (count_acc, ocr_acc) in finals.items():
        _write_run(
            tmp_path / f"{arm}_seed{seed}",
            val={
                0: {"demo_counting": (0.1, 0.5), "demo_ocr": (0.0, 0.4)},
                2: {"demo_counting": (count_acc, 1.0 + seed), "demo_ocr": (ocr_acc, 0.9)},
            },
            train={1: {"numerical": (1.0, -2.0, 1.5, -0.5, 0.3)}, 2: {"numerical": (0.8, -1.0, 3.0, 0.1, 0.5)}},
        )
    s = summarize(tmp_path, arms, [0, 1, 7])
    assert s["missing_runs"] == ["grpo_seed7", "gs_grpo_seed7"]
    assert s["sources"] == ["demo_counting", "demo_ocr"] and s["tasks"] == ["numerical"]
    assert s["runs"]["gs_grpo_seed1"]["final"] == {
        "demo_counting": {"accuracy": 0.9, "reward": 2.0},
        "demo_ocr": {"accuracy": 0.3, "reward": 0.9},
    }
    fin = s["final"]["gs_grpo"]
    assert fin["demo_counting"]["accuracy"]["values"] == [0.7, 0.9]
    assert fin["demo_counting"]["accuracy"]["mean"] == pytest.approx(0.8)
    assert fin["mean over tasks"]["accuracy"]["values"] == pytest.approx([0.45, 0.6])
    assert fin["worst task"]["accuracy"]["values"] == [0.2, 0.3]
    diff = s["paired_vs_baseline"]["gs_grpo"]["demo_counting"]["accuracy"]
    assert diff["values"] == pytest.approx([0.2, 0.3]) and diff["mean"] == pytest.approx(0.25)
    assert s["worst_task"] == {"grpo": "demo_ocr", "gs_grpo": "demo_ocr"}
    adv = s["advantage"]["grpo"]["numerical"]
    assert adv["std"]["mean"] == pytest.approx(0.9) and adv["max_abs"]["mean"] == 3.0
    assert adv["skew"]["mean"] == pytest.approx(-0.2) and "grad_share" not in adv
    assert s["curves"]["grpo"]["demo_counting"]["accuracy"]["0"]["values"] == [0.1, 0.1]
    # area under the validation curve (steps 0 and 2): (0.1 + final) / 2 per run
    auc = s["auc"]["gs_grpo"]["demo_counting"]["accuracy"]
    assert auc["values"] == pytest.approx([0.4, 0.5])
    assert s["paired_auc_vs_baseline"]["gs_grpo"]["demo_counting"]["accuracy"]["values"] == pytest.approx([0.1, 0.15])
    # minimum detectable differences: paired for gs_grpo, two-arm spread for the baseline
    assert s["mde"]["final"]["gs_grpo"]["demo_counting"]["accuracy"] == pytest.approx(
        minimum_detectable_difference([0.2, 0.3])
    )
    assert s["mde"]["final"]["grpo"]["demo_counting"]["accuracy"] == pytest.approx(
        minimum_detectable_difference([0.5, 0.6], paired=False)
    )
    assert s["mde"]["auc"]["gs_grpo"]["mean over tasks"]["accuracy"] > 0

    written = write_report(tmp_path, s, command="g2rpo-compare ...")
    report = (tmp_path / "report.md").read_text()
    for name in ("grpo", "gs_grpo", "demo_counting", "demo_ocr", "numerical", "worst task"):
        assert name in report
    # counting accuracy: both seeds up (0.2, 0.3), yet with 2 seeds t(0.975, 1) = 12.7 keeps 0 inside
    assert "| 0.250 [-0.385, 0.885] |" in report and "**0.250" not in report
    assert "## Area under the validation curve" in report and "## Minimum detectable difference (80 % power" in report
    assert json.loads((tmp_path / "summary.json").read_text())["baseline"] == "grpo"
    assert {p.name for p in written} >= {"validation.png", "final.png"}


def test_the_per_task_gradient_share_is_reported_when_the_runs_logged_it(tmp_path):
    arms = [Arm("grpo", ()), Arm("gs_grpo", ())]
    for arm in ("grpo", "gs_grpo"):
        for seed, shares in ((0, (0.2, 0.4)), (1, (0.6, 0.8))):
            path = tmp_path / f"{arm}_seed{seed}"
            _write_run(path, val={2: {"demo_ocr": (0.5, 0.5)}}, train={1: {"OCR": (1.0, -1, 1, 0, 0.5)}})
            with open(path / "metrics.jsonl", "a") as f:  # diagnostics on steps 1 and 2 (grad_every=1)
                for step, share in zip((1, 2), shares):
                    data = {"task_OCR/grad/share": share, "task_OCR/grad/norm": 10 * share}
                    f.write(json.dumps({"step": step, "data": data}) + "\n")
    s = summarize(tmp_path, arms, [0, 1])
    row = s["advantage"]["gs_grpo"]["OCR"]
    assert row["grad_share"]["values"] == pytest.approx([0.3, 0.7]) and row["grad_share"]["mean"] == pytest.approx(0.5)
    assert row["grad_norm"]["values"] == pytest.approx([3.0, 7.0])
    write_report(tmp_path, s, plots=False)
    report = (tmp_path / "report.md").read_text()
    assert "| grad_share | grad_norm |" in report and "| OCR | gs_grpo |" in report and "g_τ·g/‖g‖²" in report


def test_token_shares_and_the_share_spread_are_the_runs_own_numbers(tmp_path):
    """Two tasks: OCR 4 rows x 10 tokens, math 4 rows x 30 tokens -> token shares 0.25 / 0.75;
    gradient shares (0.5, 0.5) at step 2 (spread 0) and (0.2, 0.8) at step 4 (spread 0.3)."""
    arms = [Arm("grpo", ()), Arm("grpo_task_mean", ())]
    for arm, late in (("grpo", (0.2, 0.8)), ("grpo_task_mean", (0.4, 0.6))):
        for seed in (0, 1):
            path = tmp_path / f"{arm}_seed{seed}"
            _write_run(path, val={4: {"demo_ocr": (0.5, 0.5)}}, train={})
            with open(path / "metrics.jsonl", "a") as f:
                for step, shares in ((2, (0.5, 0.5)), (4, late)):
                    data = {}
                    for task, length, share in (("OCR", 10.0, shares[0]), ("math", 30.0, shares[1])):
                        data |= {f"task_{task}/count": 4.0, f"task_{task}/length/mean": length}
                        data |= {f"task_{task}/reward/total": 0.5, f"task_{task}/grad/share": share}
                    f.write(json.dumps({"step": step, "data": data}) + "\n")
    s = summarize(tmp_path, arms, [0, 1])
    run = s["runs"]["grpo_seed0"]
    assert run["train"]["OCR"]["token_share"] == pytest.approx(0.25)
    assert run["train"]["math"]["token_share"] == pytest.approx(0.75)
    assert run["share_spread"] == pytest.approx((0.0 + 0.3) / 2)
    assert s["runs"]["grpo_task_mean_seed1"]["share_spread"] == pytest.approx((0.0 + 0.1) / 2)
    paired = s["share_spread"]["grpo_task_mean"]["paired"]
    assert paired["values"] == pytest.approx([-0.1, -0.1])
    write_report(tmp_path, s, plots=False)
    report = (tmp_path / "report.md").read_text()
    assert "| grpo | 0.150 [0.150, 0.150] | — | — |" in report
    assert "| grpo_task_mean | 0.050 [0.050, 0.050] | **-0.100 [-0.100, -0.100]** |" in report
    assert "| token_share |" in report


def _v1_advantages(estimator: str, rewards: list[list[float]], **algorithm) -> torch.Tensor:
    """verl's V1 advantage step (``compute_advantage_for_multi_trajectories``, as its trainer calls it)
    on groups of sequence rewards; returns the per-row advantage (token 0)."""
    import numpy as np
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

    flat = [r for group in rewards for r in group]
    uids = [f"p{g}" for g, group in enumerate(rewards) for _ in group]
    keys = [f"{u}_{i}_0" for i, u in enumerate(uids)]  # {uid}_{session}_{index}: one session per rollout
    mask = torch.ones(len(flat), 3)
    token_rewards = torch.zeros(len(flat), 3)
    token_rewards[:, -1] = torch.tensor(flat)
    data = DataProto.from_dict(
        tensors={"token_level_rewards": token_rewards, "response_mask": mask},
        non_tensors={"uid": np.array(uids, dtype=object)},
    )
    config = OmegaConf.create({"adv_estimator": estimator, "gamma": 1.0, "lam": 1.0, **algorithm})
    out = compute_advantage_for_multi_trajectories(
        data,
        batch_keys=keys,
        adv_estimator=estimator,
        num_repeat=len(rewards[0]),
        norm_adv_by_std_in_grpo=algorithm.get("norm_adv_by_std_in_grpo", True),
        config=config,
    )
    assert torch.equal(out.batch["advantages"], out.batch["advantages"][:, :1].expand(-1, 3))
    return out.batch["advantages"][:, 0]


@pytest.mark.parametrize(
    "arm, estimator, algorithm, expected",
    [
        # verl's rloo: each reward minus the mean of the group's other rewards
        ("rloo", "rloo", {}, [1.0, -1 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0, 0.0]),
        # grpo without std normalisation: centred rewards, a near-tied group stays small
        ("grpo_nostd", "grpo", {"norm_adv_by_std_in_grpo": False}, [0.75, -0.25, -0.25, -0.25, 0.0, 0.0, 0.0, 0.0]),
        # grpo with it, for contrast
        ("grpo", "grpo", {}, [1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0]),
    ],
)
def test_verls_rloo_and_grpo_without_std_run_in_the_harness(arm, estimator, algorithm, expected):
    """The comparison arms of the issue's baselines: accepted by the plugin's config check, composed
    by g2rpo-compare, and computed by verl's own V1 advantage step (worked example)."""
    from omegaconf import OmegaConf

    from g2rpo_verl.verl_compat.api import adv_estimator_registry
    from g2rpo_verl.verl_hooks.checks import validate_run_config

    overrides = [
        f"algorithm.adv_estimator={estimator}",
        *(f"algorithm.{k}={str(v).lower()}" for k, v in algorithm.items()),
    ]
    (spec,) = parse_arms([], [f"{arm}={' '.join(overrides)}"])
    cmd = run_command(Path("/w") / f"{arm}_seed0", 0, ["trainer.total_training_steps=2"], spec)
    assert cmd[-2 - len(overrides) : -2] == overrides  # then data.seed / rollout.seed
    validate_run_config(OmegaConf.from_dotlist(overrides), trainer="v1", known_estimators=adv_estimator_registry())
    adv = _v1_advantages(estimator, [[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]], **algorithm)
    assert adv.tolist() == pytest.approx(expected, abs=1e-5)


def test_arms_from_estimators_and_overrides():
    arms = parse_arms(["grpo", "gs_grpo"], ["nolen=algorithm.adv_estimator=gs_grpo g2rpo.length.enable=false"])
    assert [a.name for a in arms] == ["grpo", "gs_grpo", "nolen"]
    assert arms[2].overrides == ("algorithm.adv_estimator=gs_grpo", "g2rpo.length.enable=false")
    with pytest.raises(ValueError, match="unique"):
        parse_arms(["grpo", "grpo"], [])
    with pytest.raises(ValueError, match="NAME=OVERRIDES"):
        parse_arms([], ["justaname"])
    with pytest.raises(ValueError, match="directory"):
        parse_arms([], ["a/b=x=1"])
    cmd = run_command(Path("/w/grpo_seed3"), 3, ["trainer.total_training_steps=2"], arms[0])
    assert cmd[-4:] == [
        "trainer.total_training_steps=2",
        "algorithm.adv_estimator=grpo",
        "data.seed=3",
        "actor_rollout_ref.rollout.seed=3",
    ]
    assert cmd[cmd.index("--seed") + 1] == "3"
    assert total_steps(["trainer.total_training_steps=2"]) == 2
    demo_yaml = Path(__file__).resolve().parents[2] / "configs" / "demo_cpu.yaml"
    assert total_steps([]) == OmegaConf.load(demo_yaml).trainer.total_training_steps  # the demo's own


def test_the_cheap_profile_sets_its_seeds_and_overrides_and_the_command_line_wins(tmp_path):
    from g2rpo_verl.compare.compare_cli import main
    from g2rpo_verl.compare.profiles import PROFILES

    cheap = PROFILES["cheap"]
    assert total_steps(list(cheap.overrides)) == 16 and len(cheap.seeds) >= 6
    # the profile keeps the demo's rows per step (prompts x rollouts), so its cost per step
    values = dict(o.split("=", 1) for o in cheap.overrides)
    assert int(values["data.train_batch_size"]) * int(values["actor_rollout_ref.rollout.n"]) == 12 * 8
    assert (
        main(["--profile", "cheap", "--estimators", "grpo", "--workdir", str(tmp_path), "--report-only", "--no-plots"])
        == 0
    )
    assert json.loads((tmp_path / "summary.json").read_text())["seeds"] == list(cheap.seeds)
    assert (
        main(
            [
                "--profile",
                "cheap",
                "--seeds",
                "3",
                "--estimators",
                "grpo",
                "--workdir",
                str(tmp_path),
                "--report-only",
                "--no-plots",
                "trainer.total_training_steps=2",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "summary.json").read_text())["seeds"] == [3]
