"""The one task lookup (``g2rpo_verl.task_lookup``) the trainer, the checks and ``g2rpo-data`` share."""

import math

from g2rpo_verl.task_lookup import is_blank, task_values


def test_the_column_first_then_extra_info_then_the_reward_dict():
    columns = {"problem_type": ["math", None, "", {"nested": 1}, math.nan]}
    extra = [{"problem_type": "OCR"}, {"problem_type": "OCR"}, {"problem_type": "numerical"}, None, {}]
    reward = [None, None, None, {"problem_type": "regression"}, {"other": 1}]
    assert task_values("problem_type", columns, extra, reward) == ["math", "OCR", "numerical", "regression", None]


def test_without_the_column_each_row_is_read_from_extra_info():
    assert task_values("task", {}, [{"task": "a"}, {"task": ""}, None]) == ["a", None, None]


def test_blank_is_none_nan_or_empty():
    assert [is_blank(v) for v in (None, math.nan, "", "x", 0, 0.0)] == [True, True, True, False, False, False]
