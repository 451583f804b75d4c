"""verl's driver runs the plugin's checks before Ray starts (``python -m verl.trainer.main_ppo`` included).

``main_ppo`` runs as ``__main__``, so the plugin wraps the function its ``main`` calls on the
composed config before ``run_ppo``: ``verl.utils.config.validate_config``
(:mod:`g2rpo_verl.verl_hooks.driver_checks`). The real ``main_ppo`` process is exercised in
tests/e2e/test_main_ppo_checks.py (it imports verl's trainer, ~15 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from g2rpo_verl.demo.overrides import compose_config
from g2rpo_verl.verl_hooks.checks import G2RPOConfigError
from g2rpo_verl.verl_hooks.driver_checks import unwrapped

ROOT = Path(__file__).resolve().parents[2]


def test_verl_main_ppo_imports_the_wrapped_validate_config():
    import verl.trainer.main_ppo as main_ppo
    import verl.utils
    import verl.utils.config

    assert getattr(main_ppo.validate_config, "g2rpo_driver_checks", False)
    assert verl.utils.validate_config is verl.utils.config.validate_config is main_ppo.validate_config
    assert not getattr(unwrapped(main_ppo.validate_config), "g2rpo_driver_checks", False)


def test_a_library_caller_gets_the_error_naming_the_key():
    from verl.utils.config import validate_config

    config = compose_config(["algorithm.adv_estimator=gs_grp"])
    with pytest.raises(G2RPOConfigError, match=r"algorithm\.adv_estimator='gs_grp'.*did you mean 'gs_grpo'"):
        validate_config(config, use_reference_policy=False, use_critic=False)


def test_the_driver_script_exits_2_with_the_message_and_no_traceback(capsys):
    from verl.utils.config import validate_config

    config = compose_config(["algorithm.adv_estimator=gs_grp", "data.train_files=/nope/train.parquet"])
    namespace = {"__name__": "__main__", "validate_config": validate_config, "config": config}
    with pytest.raises(SystemExit) as stop:
        exec("validate_config(config, use_reference_policy=False, use_critic=False)", namespace)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "did you mean 'gs_grpo'" in err
    assert "data.train_files: /nope/train.parquet does not exist" in err
    assert "Nothing was started" in err and "Traceback" not in err
