"""Rows that would train on the wrong task grouping, or be scored by the wrong rule, stop the run first.

:func:`g2rpo_verl.verl_hooks.checks.task_problems` reads a data file's ``data_source``,
``extra_info`` and task-key columns; :func:`data_problems` adds the files' existence. Each case
below is one bad input and the message it must give (the key, the file, the first offending row,
the fix), plus the inputs that must pass: the documented opt-in ``g2rpo.allow_task_fallback``, a
``data_source`` that names a problem type, an explicit ``default_problem_type``, a custom reward.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from g2rpo_verl.config import load_g2rpo_config
from g2rpo_verl.demo.overrides import compose_config
from g2rpo_verl.verl_hooks.checks import data_problems, task_problems

REWARD = "reward.custom_reward_function.path=pkg://g2rpo_verl.rewards"


def rows(*problem_types, data_source="geo", task_type="chart"):
    """One verl row per problem type (``None``: the row has no ``extra_info.problem_type``)."""
    out = []
    for i, pt in enumerate(problem_types):
        extra = {"problem_id": f"p{i}", "task_type": task_type, "index": i}
        if pt is not None:
            extra["problem_type"] = pt
        out.append({"data_source": data_source, "prompt": "<image>q", "extra_info": extra})
    return out


def write(tmp_path, records, name="train.parquet"):
    path = tmp_path / name
    pq.write_table(pa.Table.from_pylist(records), path)
    return str(path)


def problems_of(tmp_path, records, *overrides):
    config = compose_config(["algorithm.adv_estimator=gs_grpo", *overrides])
    return task_problems(config, load_g2rpo_config(config), write(tmp_path, records))


# (case, rows, overrides, the message must match every pattern; [] = must pass)
CASES = [
    (
        "no task key, project reward: would fall into free-form",
        rows("math", None, None),
        [REWARD],
        [
            r"g2rpo\.task_key='problem_type'",
            r"train\.parquet row 1 \(problem_id=p1\)",
            r"nor do 1 more of its 3 rows",
            r"default problem type 'free-form'",
            r"g2rpo\.allow_task_fallback=true",
        ],
    ),
    (
        "no task key, verl's default reward: the first step would stop",
        rows(None, "math"),
        [],
        [r"train\.parquet row 0", r"no reward dict carries it", r"set g2rpo\.task_key to a field every row has"],
    ),
    (
        "a task key that is a typo of a field every row has",
        rows("math", "math"),
        [REWARD, "+g2rpo.task_key=task_typ"],
        [r"g2rpo\.task_key='task_typ'", r"did you mean g2rpo\.task_key=task_type\?"],
    ),
    (
        "a problem type the reward cannot score",
        rows("math", "geometry-ish"),
        [REWARD],
        [
            r"row 1 \(problem_id=p1\): problem type 'geometry-ish'",
            r"would score them as free-form",
            r"problem_type_map",
        ],
    ),
    (
        "a near-miss problem type gets a did-you-mean",
        rows("numerica"),
        [REWARD],
        [r"did you mean 'numerical'\?"],
    ),
    (
        "opt-in: the reward's default for rows without the key",
        rows(None, "odd"),
        [REWARD, "+g2rpo.allow_task_fallback=true"],
        [],
    ),
    (
        "explicit default_problem_type is a deliberate fallback",
        rows(None, "math"),
        [REWARD, "+reward.custom_reward_function.reward_kwargs.default_problem_type=math"],
        [],
    ),
    ("a data_source that names a problem type gives the task", rows(None, data_source="math"), [REWARD], []),
    (
        "a custom reward may return the key itself: not checked",
        rows(None),
        ["reward.custom_reward_function.path=/somewhere/my_reward.py"],
        [],
    ),
    ("good rows pass", rows("math", "multiple choice", "OCR"), [REWARD], []),
]


@pytest.mark.parametrize("case, records, overrides, patterns", CASES, ids=[c[0] for c in CASES])
def test_each_bad_input_gives_its_message(tmp_path, case, records, overrides, patterns):
    found = problems_of(tmp_path, records, *overrides)
    if not patterns:
        assert found == []
        return
    assert len(found) == 1, found
    for pattern in patterns:
        assert re.search(pattern, found[0]), f"{case}: {pattern!r} not in {found[0]!r}"


def test_rows_without_the_task_key_pass_when_nothing_groups_by_task(tmp_path):
    config = compose_config(["algorithm.adv_estimator=grpo"])
    assert task_problems(config, load_g2rpo_config(config), write(tmp_path, rows(None))) == []


def test_a_missing_data_file_names_its_key(tmp_path):
    good = write(tmp_path, rows("math"))
    config = compose_config(
        ["algorithm.adv_estimator=gs_grpo", f"data.train_files={tmp_path / 'nope.parquet'}", f"data.val_files={good}"]
    )
    (message,) = data_problems(config, load_g2rpo_config(config))
    assert message.startswith(f"data.train_files: {tmp_path / 'nope.parquet'} does not exist")


def test_every_file_is_checked(tmp_path):
    good, bad = write(tmp_path, rows("math")), write(tmp_path, rows(None), "val.parquet")
    config = compose_config(
        ["algorithm.adv_estimator=gs_grpo", REWARD, f"data.train_files={good}", f"data.val_files=[{bad}]"]
    )
    (message,) = data_problems(config, load_g2rpo_config(config))
    assert "val.parquet row 0" in message
