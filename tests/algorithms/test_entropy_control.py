"""The adaptive per-task entropy controller (g2rpo_verl.algorithms.entropy_control): its rule, and on a tiny
policy that a competing policy gradient pushes out of the band, that it brings tasks into the band
and holds them there, leaves tasks inside alone, and resumes with the same coefficients.

Pure torch: the per-task policy is a categorical distribution whose entropy is exact, the
competing push is REINFORCE with standardised advantages (the scale G²RPO gives), and the shaping
term is the one the trainer adds, ``Σ_τ λ_τ·Ĥ_τ``. The wiring into verl's loss is checked in
tests/verl_hooks/test_entropy_shaping.py.
"""

import copy
import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from g2rpo_verl.algorithms.entropy_control import AdaptiveEntropyControl, EntropyController, in_band
from g2rpo_verl.config import EntropyShapingConfig, load_g2rpo_config

LOW, HIGH = 0.2, 0.6


# ------------------------------------------------------------------ the rule


def test_worked_example_above_the_band_then_back_inside():
    # band [0.2, 0.6], width 0.4, margin 0.15: the target band is [0.26, 0.54]
    ctl = EntropyController(AdaptiveEntropyControl(rate=1.0, gain=0.5, coef_max=2.0, margin=0.15))
    # Ĥ = 0.64: 0.25 band widths above the target edge -> y_hi = 0.25, kick 0.125
    assert ctl.update("math", 0.64, LOW, HIGH) == pytest.approx(0.375)
    # Ĥ = 0.50, inside: the multiplier relaxes by the slack (0.1 band widths), no kick
    assert ctl.update("math", 0.50, LOW, HIGH) == pytest.approx(0.15)
    # deeper inside: it relaxes to exactly 0
    assert ctl.update("math", 0.40, LOW, HIGH) == 0.0
    assert ctl.state["math"].y_high == 0.0 and ctl.state["math"].y_low == 0.0


def test_worked_example_below_the_band_gives_a_negative_coefficient_that_raises_entropy():
    ctl = EntropyController(AdaptiveEntropyControl(rate=1.0, gain=0.5, coef_max=2.0, margin=0.15))
    # Ĥ = 0.06: 0.5 band widths below 0.26 -> y_lo = 0.5, kick -0.25
    assert ctl.update("counting", 0.06, LOW, HIGH) == pytest.approx(-0.75)
    assert ctl.update("counting", 0.06, LOW, HIGH) == pytest.approx(-1.25)  # keeps rising while outside


def test_a_task_inside_the_target_band_keeps_coefficient_zero():
    ctl = EntropyController(AdaptiveEntropyControl())
    for h in torch.linspace(0.27, 0.53, 40).tolist():
        assert ctl.update("ocr", h, LOW, HIGH) == 0.0


def test_a_zero_floor_never_pushes_a_task_up_however_low_its_entropy():
    # band [0, 0.6]: the margin would put a floor at 0.09; a floor at 0 constrains nothing
    ctl = EntropyController(AdaptiveEntropyControl())
    for h in (0.0, 0.01, 0.05, 0.3):
        assert ctl.update("counting", h, 0.0, HIGH) == 0.0
    assert ctl.state["counting"].y_low == 0.0
    # the ceiling still holds: above 0.6 − 0.15·0.6 = 0.51 the coefficient turns positive
    assert ctl.update("counting", 0.7, 0.0, HIGH) > 0


def test_coefficients_are_bounded_whatever_the_excursion():
    ctl = EntropyController(AdaptiveEntropyControl(rate=5.0, gain=5.0, coef_max=0.7))
    coefs = [ctl.update("t", h, LOW, HIGH) for h in [9.0] * 20 + [0.0] * 40]
    assert max(coefs) == pytest.approx(0.7) and min(coefs) == pytest.approx(-0.7)
    assert all(abs(c) <= 0.7 for c in coefs)
    assert 0 <= ctl.state["t"].y_high <= 0.7 and 0 <= ctl.state["t"].y_low <= 0.7


def test_non_finite_entropy_and_bad_gains_are_errors_naming_the_key():
    with pytest.raises(ValueError, match="task 'x'"):
        EntropyController(AdaptiveEntropyControl()).update("x", math.nan, LOW, HIGH)
    for bad in (dict(rate=-1.0), dict(gain=math.inf), dict(coef_max=-0.1), dict(margin=0.5)):
        with pytest.raises(ValueError, match="g2rpo.entropy.adaptive"):
            AdaptiveEntropyControl(**bad)
    with pytest.raises(ValueError, match="g2rpo.entropy.controller"):
        EntropyShapingConfig(controller="pid")
    with pytest.raises(ValueError, match="controller=adaptive needs g2rpo.entropy.estimator=exact"):
        EntropyShapingConfig(controller="adaptive", estimator="sampled")
    cfg = load_g2rpo_config(
        OmegaConf.create({"g2rpo": {"entropy": {"controller": "adaptive", "adaptive": {"coef_max": 3}}}})
    )
    assert cfg.entropy.adaptive.coef_max == 3.0 and cfg.entropy.controller == "adaptive"


# ------------------------------------------------------------------ a tiny policy against a competing push


class Policy:
    """Three tasks, each a context-free categorical over 8 tokens (entropy exact), trained with Adam.

    Task 0 starts below the band (peaked) and REINFORCE pushes it further down (reward = log π of
    the sampled token: likely tokens win); task 1 starts above (near uniform) and REINFORCE pushes
    it up (reward = −log π: surprising tokens win); task 2 starts inside with no push. ``push``
    scales the standardised advantages (0.5: half the pull of advantages aligned with −log π
    at unit scale, which the default bound coef_max = 0.5 can beat).
    """

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        init = torch.zeros(3, 8, dtype=torch.float64)
        init[0, 0] = 6.0
        init[1] = 0.3 * torch.randn(8, generator=g, dtype=torch.float64)
        init[2, 0] = 4.5
        self.theta = torch.nn.Parameter(init)
        self.opt = torch.optim.Adam([self.theta], lr=0.05)
        self.gen = torch.Generator().manual_seed(seed + 1)

    def entropies(self):
        lp = torch.log_softmax(self.theta, -1)
        return -(lp.exp() * lp).sum(-1)

    def step(self, coef, push=0.5, samples=24):
        """One update of ``policy-gradient loss + Σ_τ coef_τ·H_τ``; returns the entropies before it."""
        lp = torch.log_softmax(self.theta, -1)
        h = -(lp.exp() * lp).sum(-1)
        ys = torch.multinomial(lp.exp().detach(), samples, replacement=True, generator=self.gen)
        lpy = lp.gather(1, ys)
        reward = torch.stack([lpy[0].detach(), -lpy[1].detach(), torch.zeros_like(lpy[2])])
        adv = push * (reward - reward.mean(1, keepdim=True)) / (reward.std(1, keepdim=True) + 1e-6)
        adv[2] = 0.0
        pg = -(adv * lpy).sum() / adv.numel()  # token-mean over the batch, as verl's loss
        self.opt.zero_grad()
        (pg + (torch.as_tensor(coef, dtype=torch.float64) * h).sum()).backward()
        self.opt.step()
        return h.detach()


def run_controlled(policy, ctl, steps):
    history = []
    for _ in range(steps):
        h = policy.entropies().detach()
        coef = [ctl.update(str(t), h[t].item(), LOW, HIGH) for t in range(3)]
        policy.step(coef)
        history.append((h.tolist(), coef))
    return history


def test_tasks_outside_are_brought_into_the_band_and_held_there_against_the_policy_gradient():
    policy = Policy()
    start = policy.entropies().tolist()
    assert start[0] < LOW and start[1] > HIGH and LOW < start[2] < HIGH
    ctl = EntropyController(AdaptiveEntropyControl())
    history = run_controlled(policy, ctl, 80)
    last = [h for h, _ in history[-30:]]
    for t in range(3):
        assert all(in_band(h[t], LOW, HIGH) for h in last), (t, [round(h[t], 3) for h in last])
    # the push never stopped: the held tasks needed a coefficient at times, the inside task never
    assert any(c[0] < 0 for _, c in history[-40:]) and any(c[1] > 0 for _, c in history)
    assert all(c[2] == 0.0 for _, c in history)
    assert policy.entropies()[2].item() == pytest.approx(start[2])  # untouched: no gradient, Adam stays put

    # the paper's fixed β = 0.02 against the same push: both tasks stay out of the band
    fixed = Policy()
    for _ in range(80):
        h = fixed.entropies().detach()
        fixed.step([0.02 * ((h[t] > HIGH).item() - (h[t] < LOW).item()) for t in range(3)])
    end = fixed.entropies().tolist()
    assert end[0] < LOW and end[1] > HIGH


def test_resume_restores_the_coefficients_and_the_run_continues_identically():
    policy, ctl = Policy(), EntropyController(AdaptiveEntropyControl())
    run_controlled(policy, ctl, 12)
    saved_state = json.loads(json.dumps(ctl.state_dict()))  # as g2rpo_state.json holds it
    saved_policy = (policy.theta.detach().clone(), copy.deepcopy(policy.opt.state_dict()), policy.gen.get_state())
    assert any(ctl.coef(str(t)) != 0 for t in range(2)), "nothing to restore"

    continued = run_controlled(policy, ctl, 10)

    def resumed(state):
        p = Policy()
        with torch.no_grad():
            p.theta.copy_(saved_policy[0])
        p.opt.load_state_dict(saved_policy[1])
        p.gen.set_state(saved_policy[2])
        c = EntropyController(AdaptiveEntropyControl())
        if state is not None:
            c.load_state_dict(state)
        return run_controlled(p, c, 10)

    assert resumed(saved_state) == continued
    assert resumed(None) != continued  # a controller that forgot its multipliers acts differently


# ------------------------------------------------------------------ where the band comes from (TaskBands)


def test_the_papers_fixed_band_is_the_default_rule():
    bands = EntropyShapingConfig(per_task={"numerical": {"low": 0.05}}).task_bands()
    assert bands.update("math", 0.9) == (0.2, 0.6) and bands.update("numerical", 0.01) == (0.05, 0.6)
    assert bands.update("math", 0.1) == (0.2, 0.6)  # the floor acts from below: the paper's rule


def test_start_rule_derives_each_tasks_band_from_its_first_measured_entropy():
    cfg = EntropyShapingConfig(band_rule="start", start_low=0.5, start_high=2.0, per_task={"ocr": {"low": 0.3}})
    bands = cfg.task_bands()
    assert bands.update("mc", 0.15) == pytest.approx((0.075, 0.30))  # H0 = 0.15: [H0/2, 2·H0]
    assert bands.update("math", 0.5) == pytest.approx((0.25, 1.0))
    # later steps do not move the band: it stays where the starting model was
    assert bands.update("mc", 0.02) == pytest.approx((0.075, 0.30)) and bands.start == {"mc": 0.15, "math": 0.5}
    assert bands.update("ocr", 0.9) == (0.3, 0.6)  # an explicit per_task band wins over the rule


def test_start_rule_averages_h0_over_the_first_steps_and_shapes_nothing_before():
    bands = EntropyShapingConfig(band_rule="start", start_steps=3, start_low=0.5, start_high=2).task_bands()
    assert bands.update("mc", 0.1) is None and bands.update("mc", 0.3) is None and bands.nominal("mc") is None
    assert bands.update("mc", 0.2) == pytest.approx((0.1, 0.4))  # H0 = mean(0.1, 0.3, 0.2) = 0.2
    assert bands.update("mc", 5.0) == pytest.approx((0.1, 0.4))
    with pytest.raises(ValueError, match="g2rpo.entropy.start_steps"):
        EntropyShapingConfig(band_rule="start", start_steps=0)


def test_a_task_starting_below_the_band_is_not_pushed_up_under_the_fall_floor():
    # the paper's band [0.2, 0.6]; counting starts confident at 0.1, math inside at 0.4
    bands = EntropyShapingConfig(floor="fall").task_bands()
    ctl = EntropyController(AdaptiveEntropyControl())
    for h in (0.1, 0.08, 0.12, 0.1):
        low, high = bands.update("counting", h)
        assert (low, high) == (0.0, 0.6)  # no floor yet: it has never been up to 0.2
        assert ctl.update("counting", h, low, high) == 0.0  # and nothing pushes it up
    # once it has reached the band, a fall out of it is resisted
    assert bands.update("counting", 0.25) == (0.2, 0.6)
    low, high = bands.update("counting", 0.1)
    assert (low, high) == (0.2, 0.6) and ctl.update("counting", 0.1, low, high) < 0
    # a task starting inside is held from the first step, as with the paper's rule
    assert bands.update("math", 0.4) == (0.2, 0.6) and bands.update("math", 0.1) == (0.2, 0.6)
    # the ceiling always acts, armed or not
    fresh = EntropyShapingConfig(floor="fall").task_bands()
    assert ctl.update("x", 0.9, *fresh.update("x", 0.9)) > 0


def test_band_rule_state_resumes_with_the_starting_entropies_and_armed_floors():
    cfg = EntropyShapingConfig(band_rule="start", floor="fall")
    bands = cfg.task_bands()
    bands.update("a", 0.4)
    bands.update("b", 0.2)
    bands.update("b", 0.05)
    restored = cfg.task_bands()
    restored.load_state_dict(json.loads(json.dumps(bands.state_dict())))
    assert restored.update("a", 0.1) == bands.update("a", 0.1) == pytest.approx((0.2, 0.8))
    forgot = cfg.task_bands()
    assert forgot.update("a", 0.1) != restored.update("a", 0.1)  # H0 re-measured at 0.1: a different band


def test_band_rule_keys_are_checked_naming_the_key():
    with pytest.raises(ValueError, match="g2rpo.entropy.band_rule"):
        EntropyShapingConfig(band_rule="auto")
    with pytest.raises(ValueError, match="g2rpo.entropy.floor"):
        EntropyShapingConfig(floor="never")
    for bad in (dict(start_low=1.5), dict(start_high=0.9), dict(start_low=-0.1), dict(start_high=math.inf)):
        with pytest.raises(ValueError, match="start_low / start_high"):
            EntropyShapingConfig(band_rule="start", **bad)
    cfg = load_g2rpo_config(OmegaConf.create({"g2rpo": {"entropy": {"band_rule": "start", "start_high": 3}}}))
    assert cfg.entropy.band_rule == "start" and cfg.entropy.start_high == 3.0
    with pytest.raises(ValueError, match="did you mean 'g2rpo.entropy.band_rule'"):
        load_g2rpo_config(OmegaConf.create({"g2rpo": {"entropy": {"band_rules": "start"}}}))
