"""The estimator declarations (g2rpo_verl/estimators.py): one spec each, everything derived from it."""

import re
import subprocess
import sys
from pathlib import Path

from g2rpo_verl import estimators
from g2rpo_verl.demo.overrides import estimator_overrides
from g2rpo_verl.estimators import ESTIMATORS, component_estimators, estimator_spec, plugin_estimators

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding_an_estimator.md"


def test_the_names_and_the_component_estimators_come_from_the_declarations():
    assert plugin_estimators() == ("gs_grpo", "gs_gdpo", "ema_grpo")
    assert component_estimators() == ("gs_gdpo", "gdpo")  # verl's gdpo ranks components too
    assert estimator_spec("grpo") is None and estimator_spec("gs_gdpo").ranks_components
    assert len({spec.name for spec in ESTIMATORS}) == len(ESTIMATORS)


def test_state_metrics_and_demo_overrides_are_the_specs_own():
    ema = estimator_spec("ema_grpo")
    assert ema.state is not None and ema.state_name == "ema_std" and ema.step_metrics is not None
    assert estimator_overrides("gs_gdpo") == list(estimator_spec("gs_gdpo").demo_overrides)
    assert estimator_overrides("gs_grpo") == [] and estimator_overrides("gdpo") == ["++g2rpo.length.enable=false"]


def test_a_state_without_a_name_is_refused():
    try:
        estimators.EstimatorSpec(name="x", advantages=lambda s, b: s, state=dict)
    except ValueError as err:
        assert "state and state_name" in str(err)
    else:
        raise AssertionError("a state without its checkpoint name was accepted")


def test_the_worked_example_of_the_docs_runs_as_written():
    """docs/adding_an_estimator.md: a new estimator = its math + one line; verl, checks derive it."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    proc = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "gs_grpo_group: registered, computed, checked" in proc.stdout
