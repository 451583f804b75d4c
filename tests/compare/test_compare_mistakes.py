"""``g2rpo-compare`` composes and checks every arm before it builds or runs anything."""

from __future__ import annotations

from g2rpo_verl.compare.compare_cli import arm_problems, main, parse_arms


def test_every_arm_is_checked_and_each_bad_one_named(tmp_path):
    arms = parse_arms(["gs_grp"], ["plain=g2rpo.length.enable=false", "typo=g2rpo.lenght.enable=false"])
    problems = arm_problems(tmp_path, arms, ["trainer.total_training_steps=2"])
    assert len(problems) == 2, problems
    assert problems[0].startswith("arm gs_grp (") and "did you mean 'gs_grpo'" in problems[0]
    assert problems[1].startswith("arm typo (") and "g2rpo.lenght" in problems[1]


def test_readmes_example_arm_composes(tmp_path):
    arms = parse_arms([], ["shaped=g2rpo.length.enable=true", "plain=g2rpo.length.enable=false"])
    assert arm_problems(tmp_path, arms, []) == []


def test_report_only_with_a_bad_estimator_is_an_error_and_writes_nothing(tmp_path, capsys):
    workdir = tmp_path / "cmp"
    assert main(["--estimators", "gs_grp", "--seeds", "0", "--workdir", str(workdir), "--report-only"]) == 2
    err = capsys.readouterr().err
    assert "arm gs_grp" in err and "did you mean 'gs_grpo'" in err and "nothing was built" in err
    assert not workdir.exists()
