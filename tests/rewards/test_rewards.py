"""Specification of the multi-task reward (g2rpo_verl.rewards, docs/method.md "Rewards").

Hand-checked cases per problem type, the format and structure rules, the kwargs, the
fixed key set verl needs, and property tests over adversarial strings: no exception, every
component in range, the math time limit effective from non-main threads.
"""

import asyncio
import math
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from g2rpo_verl.rewards import COMPONENT_KEYS, REWARD_KEYS, compute_score, resolve_problem_type
from g2rpo_verl.rewards.accuracy import box_iou, match_boxes, mean_relative_accuracy, ocr_accuracy
from g2rpo_verl.rewards.answers import format_score, parse_choice_letter, parse_number
from g2rpo_verl.rewards.guard import MATH_WORKER_SCRIPT, GuardTimeout, WorkerPool
from g2rpo_verl.rewards.settings import RewardSettings

# one pathological expression: 2^(2^65536); sympy spins on it for minutes in pure Python
TOWER = "2^{2^{2^{2^{2^{2}}}}}"
# 9^(9^9), 370 million digits: the pre-checks reject it (more than max_math_digits); with the
# limit raised it reaches math-verify and exercises the time limit
SLOW = "9^{9^{9}}"
REACH_MATH_VERIFY = {"max_math_digits": 10**9}


def wrap(answer, think="I reason."):
    return f"<think>{think}</think><answer>{answer}</answer>"


def score(problem_type, answer, truth, **kw):
    extra = {"problem_type": problem_type}
    extra.update(kw.pop("extra", {}))
    return compute_score("test_source", wrap(answer), truth, extra, **kw)


# ------------------------------------------------------------------ per problem type
CASES = [
    # (problem_type, answer, ground truth, extra_info, accuracy, structure)
    ("multiple choice", "B", "B", {}, 1.0, 0.5),
    ("multiple choice", "(B)", "<answer>B</answer>", {}, 1.0, 0.5),
    ("multiple choice", "B. a dog", "B", {}, 1.0, 0.5),
    ("multiple choice", "b)", "B", {}, 1.0, 0.5),
    ("multiple choice", "b", "(B)", {}, 1.0, 0.5),
    ("multiple choice", "$\\boxed{B}$", "B", {}, 1.0, 0.5),
    ("multiple choice", "C", "B", {}, 0.0, 0.5),
    ("multiple choice", "a dog", "B", {"options": ["A. a cat", "B. a dog"]}, 1.0, 0.0),
    ("multiple choice", "A Dog.", "B", {"options": ["(A) a cat", "(B) a dog"]}, 1.0, 0.0),
    ("multiple choice", "a dog", "B", {"options": np.array(["a cat", "a dog"])}, 1.0, 0.0),
    ("multiple choice", "B", "a dog", {"options": {"A": "a cat", "B": "a dog"}}, 1.0, 0.5),
    ("multiple choice", "a cat", "B", {"options": ["A. a cat", "B. a dog"]}, 0.0, 0.0),
    ("multiple choice", "The answer is B", "B", {}, 0.0, 0.0),
    ("numerical", "3.14159", "3.14", {}, 1.0, 0.5),
    ("numerical", "3.15", "3.14", {}, 0.0, 0.5),
    ("numerical", "1,234.5", "1234.5", {}, 1.0, 0.5),
    ("numerical", "45%", "0.45", {}, 1.0, 0.5),
    ("numerical", "45", "45%", {}, 1.0, 0.5),
    ("numerical", "0.45", "45\\%", {}, 1.0, 0.5),
    ("numerical", "-7.", "-7", {}, 1.0, 0.5),
    ("numerical", "$\\boxed{7}$", 7, {}, 1.0, 0.5),
    ("numerical", "1/2", "0.5", {}, 1.0, 0.5),
    ("numerical", "12 cm", "12", {}, 1.0, 0.0),  # lenient value, no structure bonus
    ("numerical", "12 or 13", "12", {}, 0.0, 0.0),  # two numbers: ambiguous
    ("numerical", "3,5", "3.5", {}, 0.0, 0.0),  # decimal comma is not read
    ("numerical", "1e999", "1", {}, 0.0, 0.0),  # not finite
    ("numerical", "9" * 5000, "1", {}, 0.0, 0.0),
    ("regression", "10", "10", {}, 1.0, 0.5),
    ("regression", "11", "10", {}, 0.8, 0.5),  # rel 0.10 < 1-t for t = .50..  .85
    ("regression", "9.4", "10", {}, 0.9, 0.5),  # rel 0.06 < 1-t for t <= .90
    ("regression", "10.4", "10", {}, 1.0, 0.5),
    ("regression", "15", "10", {}, 0.0, 0.5),  # rel 0.5 is not < 0.5
    ("regression", "about 11 m", "10", {}, 0.8, 0.0),
    ("regression", "0", "0", {}, 1.0, 0.5),
    ("regression", "0.1", "0", {}, 0.0, 0.5),
    ("OCR", "Hello  World", "hello world", {}, 1.0, 0.5),
    ("OCR", "hello there world", "hello world", {}, 0.5, 0.5),  # 1 insertion / 2 words
    ("OCR", "a x c d", "a b c d", {}, 0.75, 0.5),
    ("OCR", "one two three four five", "zero", {}, 0.0, 0.5),  # WER 5 -> clipped to 0
    ("math", "0.5", "\\frac{1}{2}", {}, 1.0, 0.5),
    ("math", "\\frac{1}{2}", "0.5", {}, 1.0, 0.5),
    ("math", "$\\frac12$", "<answer>\\frac{1}{2}</answer>", {}, 1.0, 0.5),
    ("math", "1/3", "\\frac{1}{2}", {}, 0.0, 0.5),
    ("math", "1+x^2", "x^2+1", {}, 1.0, 0.5),
    ("math", "\\boxed{\\sqrt{2}}", "\\sqrt{2}", {}, 1.0, 0.5),
    ("math", "x = 2", "2", {}, 1.0, 0.5),
    ("spatial grounding", '{"boxes": [0, 0, 100, 100]}', '{"boxes": [50, 50, 150, 150]}', {}, 2500 / 17500, 0.5),
    ("spatial grounding", "[10, 20, 110, 220]", '<answer>{"boxes": [10, 20, 110, 220]}</answer>', {}, 1.0, 0.5),
    (
        "spatial grounding",
        '```json\n[{"bbox_2d": [10, 20, 110, 220], "label": "cat"}]\n```',
        [10, 20, 110, 220],
        {},
        1.0,
        0.5,
    ),
    ("spatial grounding", "The cat is at [10, 20, 110, 220].", "[10, 20, 110, 220]", {}, 1.0, 0.0),
    ("spatial grounding", '{"boxes": [110, 220, 10, 20]}', "[10, 20, 110, 220]", {}, 1.0, 0.5),  # swapped corners
    ("spatial grounding", '{"boxes": [0, 0, "a", 100]}', "[0, 0, 100, 100]", {}, 0.0, 0.0),
    # several boxes: best one-to-one matching, sum of IoUs / max(#pred, #true)
    ("spatial grounding", "[[0, 0, 10, 10], [20, 20, 30, 30]]", "[[20, 20, 30, 30]]", {}, 0.5, 0.5),
    ("spatial grounding", "[[20, 20, 30, 30], [0, 0, 10, 10]]", "[[0, 0, 10, 10], [20, 20, 30, 30]]", {}, 1.0, 0.5),
    ("spatial grounding", "[0, 0, 10, 10]", '{"boxes": [[0, 0, 10, 10], [50, 50, 60, 60]]}', {}, 0.5, 0.5),
    ("free-form", "Paris.", "paris", {}, 1.0, 0.5),
    ("free-form", "Lyon", "Paris", {}, 0.0, 0.5),
    ("some new task", '"Paris"', "paris", {}, 1.0, 0.5),  # unknown type -> free-form
]


@pytest.mark.parametrize("problem_type,answer,truth,extra,accuracy,structure", CASES)
def test_accuracy_and_structure_table(problem_type, answer, truth, extra, accuracy, structure):
    out = score(problem_type, answer, truth, extra=extra)
    assert out["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert out["structure"] == structure
    assert out["format"] == 1.0
    assert out["reward_failure"] == 0.0
    assert out["acc"] == out["accuracy"]
    assert out["score"] == pytest.approx(0.9 * accuracy + 0.1 + structure)


def test_helpers_on_known_values():
    assert box_iou((0, 0, 100, 100), (50, 50, 150, 150)) == pytest.approx(2500 / 17500)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0  # no area
    # extra predictions cannot raise the score: 1 true box, 3 predictions (one exact)
    assert match_boxes([(0, 0, 10, 10)] * 3, [(0, 0, 10, 10)]) == pytest.approx(1 / 3)
    assert mean_relative_accuracy(11, 10) == pytest.approx(0.8)
    assert mean_relative_accuracy(math.inf, 10) == 0.0
    assert ocr_accuracy("", "") == 1.0 and ocr_accuracy("x", "") == 0.0 and ocr_accuracy("", "x") == 0.0
    assert parse_choice_letter("a cat") is None
    assert parse_number("1,234,567") == (1234567.0, False)
    assert parse_number("12,34") is None


# ------------------------------------------------------------------ format and extraction
FORMAT_CASES = [
    # (response, require_think, expected)
    ("<think>r</think><answer>B</answer>", True, 1.0),
    ("  <think>\nr\n</think>\n\n<answer> B </answer>\n", True, 1.0),
    ("<think></think><answer>B</answer>", True, 1.0),  # empty reasoning is allowed
    ("<answer>B</answer>", True, 0.0),
    ("<answer>B</answer>", False, 1.0),
    ("<think>r</think><answer>B</answer>", False, 1.0),
    ("<think>r<answer>B</answer>", False, 0.0),  # a think block, when present, is closed
    ("<think>r</think><answer></answer>", True, 0.0),  # empty answer
    ("<think>r</think><answer>B</answer> trailing", True, 0.0),
    ("lead <think>r</think><answer>B</answer>", True, 0.0),
    ("<think>r</think> between <answer>B</answer>", True, 0.0),
    ("<think>r</think><answer>A</answer><answer>B</answer>", True, 0.0),
    ("<think>a</think><think>b</think><answer>B</answer>", True, 0.0),
    ("<think>r</think><answer><think>x</think>B</answer>", True, 0.0),
    ("<answer>B</answer><think>r</think>", True, 0.0),
    ("<think>r</think><answer>B", True, 0.0),
    ("<THINK>r</THINK><ANSWER>B</ANSWER>", True, 0.0),  # tags are case-sensitive
    ("", True, 0.0),
]


@pytest.mark.parametrize("response,require_think,expected", FORMAT_CASES)
def test_format_rule(response, require_think, expected):
    assert format_score(response, require_think=require_think) == expected


def test_custom_tags_and_optional_think():
    response = "<thinking>r</thinking><final>B</final>"
    out = compute_score(
        "s", response, "B", {"problem_type": "multiple choice"}, think_tag="thinking", answer_tag="final"
    )
    assert (out["format"], out["accuracy"], out["structure"]) == (1.0, 1.0, 0.5)
    out = compute_score("s", "<answer>B</answer>", "B", {"problem_type": "mc"}, format_requires_think="false")
    assert out["format"] == 1.0 and out["problem_type"] == "multiple choice"


def test_last_answer_block_is_scored_and_missing_answer_scores_zero():
    response = "<think>maybe <answer>A</answer>? no.</think><answer>B</answer>"
    out = compute_score("s", response, "B", {"problem_type": "multiple choice"})
    assert out["accuracy"] == 1.0 and out["format"] == 0.0
    out = compute_score("s", "<think>B</think> B", "B", {"problem_type": "multiple choice"})
    assert out["accuracy"] == 0.0 and out["structure"] == 0.0 and out["reward_failure"] == 0.0
    out = compute_score(
        "s", "<think>r</think> B", "B", {"problem_type": "multiple choice"}, answer_fallback="after_think"
    )
    assert out["accuracy"] == 1.0 and out["structure"] == 0.5 and out["format"] == 0.0


def test_over_long_response_keeps_its_tail_and_loses_format():
    response = "<think>" + "x" * 200_000 + "</think><answer>42</answer>"
    out = compute_score("s", response, "42", {"problem_type": "numerical"})
    assert (out["accuracy"], out["structure"], out["format"]) == (1.0, 0.5, 0.0)


# ------------------------------------------------------------------ kwargs and task resolution
def test_weights_from_kwargs():
    out = score("numerical", "7", "7", accuracy_weight=1.0, format_weight=0.0, structure_weight=0.0)
    assert out["score"] == 1.0
    out = score("numerical", "8", "7", accuracy_weight=0.5, format_weight=0.5, structure_weight=2.0)
    assert out["score"] == pytest.approx(0.5 * 0 + 0.5 * 1 + 2.0 * 0.5)
    # verl also passes reward-model kwargs: those are ignored
    out = score("numerical", "7", "7", reward_router_address=None, reward_model_tokenizer=None)
    assert out["score"] == pytest.approx(1.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"accuracy_weight": "heavy"},
        {"format_weight": math.nan},
        {"think_tag": "<think>"},
        {"think_tag": "answer"},
        {"format_requires_think": "maybe"},
        {"math_timeout_s": 0},
        {"problem_type_map": ["math"]},
    ],
)
def test_invalid_config_is_a_loud_error(kwargs):
    with pytest.raises(ValueError, match="reward_kwargs"):
        score("numerical", "7", "7", **kwargs)


def test_problem_type_resolution_order():
    s = RewardSettings(problem_type_map={"chartqa": "numerical"}, default_problem_type="OCR")
    assert resolve_problem_type("chartqa", {"problem_type": "Multiple_Choice"}, s) == "multiple choice"
    assert resolve_problem_type("chartqa", {}, s) == "numerical"
    assert resolve_problem_type("chartqa", None, s) == "numerical"
    assert resolve_problem_type("math", {"problem_type": ""}, s) == "math"
    assert resolve_problem_type("docvqa", {}, s) == "OCR"
    assert resolve_problem_type("docvqa", {}, RewardSettings()) == "free-form"
    assert resolve_problem_type("x", {"problem_type": "temporal grounding"}, s) == "temporal grounding"
    out = compute_score("geo_math", wrap("0.5"), "1/2", None, problem_type_map={"geo_math": "math"})
    assert out["problem_type"] == "math" and out["accuracy"] == 1.0


def test_loaded_through_verls_custom_reward_hook_with_reward_kwargs():
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {
                    "path": "pkg://g2rpo_verl.rewards",
                    "name": "compute_score",
                    "reward_kwargs": {
                        "accuracy_weight": 0.8,
                        "format_weight": 0.2,
                        "format_requires_think": False,
                        "problem_type_map": {"geo": "math"},  # arrives as a DictConfig
                    },
                }
            }
        }
    )
    fn = get_custom_reward_fn(config)
    out = fn(data_source="geo", solution_str="<answer>0.5</answer>", ground_truth="\\frac12", extra_info={})
    assert out["problem_type"] == "math" and out["format"] == 1.0
    assert out["score"] == pytest.approx(0.8 + 0.2 + 0.5)


# ------------------------------------------------------------------ what verl stacks
def test_every_sample_has_the_same_keys_and_verl_can_stack_them():
    samples = [
        score("math", "0.5", "\\frac{1}{2}"),
        score("numerical", "x", "not a number"),  # unreadable ground truth: a failure
        score("spatial grounding", "junk", "[0, 0, 1, 1]"),
        score("brand new type", "a", "a"),
        compute_score("s", None, None, None),
        compute_score("s", b"\xff\xfe<answer>", 3.5, {"problem_type": "numerical"}),
        score("math", SLOW, "2", math_timeout_s=0.5, **REACH_MATH_VERIFY),
    ]
    for out in samples:
        assert tuple(out) == REWARD_KEYS
        assert all(isinstance(out[k], float) for k in REWARD_KEYS if k != "problem_type")
        assert isinstance(out["problem_type"], str)
    # exactly what verl's RewardLoopManager / agent loop do with reward_extra_info
    keys = list(samples[0].keys())
    stacked = {k: np.array([s[k] for s in samples]) for k in keys}
    assert stacked["reward_failure"].tolist() == [0, 1, 0, 0, 0, 0, 1]
    assert stacked["score"].dtype == np.float64


def test_unreadable_ground_truth_is_counted_as_failure():
    out = score("spatial grounding", "[0, 0, 1, 1]", "no box here")
    assert out["reward_failure"] == 1.0 and out["accuracy"] == 0.0 and out["format"] == 1.0


# ------------------------------------------------------------------ time limits
def test_math_timeout_from_a_non_main_thread():
    result = {}

    def run():
        t0 = time.monotonic()
        result["out"] = score("math", SLOW, "2", math_timeout_s=1.0, **REACH_MATH_VERIFY)
        result["seconds"] = time.monotonic() - t0

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert result["seconds"] < 10
    out = result["out"]
    assert out["reward_failure"] == 1.0 and out["accuracy"] == 0.0
    # the pool recovers: a correct answer right after is scored, from a thread too
    follow_up = {}
    thread = threading.Thread(target=lambda: follow_up.update(score("math", "0.5", "\\frac{1}{2}")))
    thread.start()
    thread.join(timeout=30)
    assert follow_up["accuracy"] == 1.0 and follow_up["reward_failure"] == 0.0


def test_concurrent_calls_through_an_event_loop_executor():
    # verl: `await loop.run_in_executor(None, lambda: compute_score(...))`, many at once
    jobs = [("math", "0.5", "\\frac{1}{2}", 1.0), ("math", "1/3", "\\frac{1}{2}", 0.0)] * 4
    jobs += [("math", SLOW, "2", 0.0), ("numerical", "7", "7", 1.0), ("OCR", "a b", "a b", 1.0)]

    async def main():
        loop = asyncio.get_running_loop()
        calls = [
            loop.run_in_executor(None, lambda j=j: score(j[0], j[1], j[2], math_timeout_s=1.0, **REACH_MATH_VERIFY))
            for j in jobs
        ]
        return await asyncio.gather(*calls)

    outs = asyncio.run(main())
    assert [o["accuracy"] for o in outs] == [j[3] for j in jobs]
    assert [o["reward_failure"] for o in outs].count(1.0) == 1  # only the huge power


def test_hard_kill_when_the_worker_ignores_its_soft_limit():
    pool = WorkerPool(MATH_WORKER_SCRIPT, max_workers=1)
    try:
        t0 = time.monotonic()
        with pytest.raises(GuardTimeout):
            # soft limit 60 s inside the worker, hard limit 1 s outside: the parent kills it
            pool.call({"gold": "2", "pred": TOWER, "soft_timeout_s": 60}, timeout_s=1.0)
        assert time.monotonic() - t0 < 10
        assert pool.stats["killed"] == 1 and not pool._all
        reply = pool.call({"gold": "\\frac{1}{2}", "pred": "0.5", "soft_timeout_s": 5}, timeout_s=30)
        assert reply == {"ok": True, "correct": True, "parsed": True}
    finally:
        pool.close()


# ------------------------------------------------------------------ properties
PROBLEM_TYPES = ["multiple choice", "numerical", "regression", "OCR", "math", "spatial grounding", "free-form", "???"]
ADVERSARIAL = [
    "<think>",
    "<answer>",
    "<think><answer></answer>",
    "</answer><answer>",
    "<answer>" * 50,
    "1e999",
    "-1e999",
    "nan",
    "inf",
    "9" * 5000,
    "\\frac{" * 500,
    "\\frac{1}{" * 200 + "2" + "}" * 200,
    "[" * 5000,
    '{"boxes": ' * 1000,
    "[1e999, 0, 1, 1]",
    "\x00\x01\xff\ufffd\ud7ff",
    "$" * 1000,
    "\\boxed{" * 300,
    "%" * 100,
    ",".join(["1"] * 2000),
    # within max_math_chars, so these reach math-verify
    "\\frac{" * 300,
    "\\sqrt{" * 300,
    "(" * 1500,
    "x^" * 900 + "2",
    "10^{10^{10}}",
    "1000000!",
    TOWER,
]
text = st.one_of(
    st.text(max_size=300), st.sampled_from(ADVERSARIAL), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
)
responses = st.one_of(
    text,
    st.builds(wrap, text),
    st.builds(lambda a, b: f"<think>{a}</think><answer>{b}", text, text),  # unclosed answer
    st.builds(
        lambda a, n: a * n,
        st.sampled_from(["<answer>1</answer>", "\\frac{", "[0,0,1,1]", "x "]),
        st.integers(1, 25_000),
    ),
)
truths = st.one_of(
    text, st.sampled_from(["B", "0.5", "\\frac{1}{2}", "[0, 0, 10, 10]", "hello world", "<answer>7</answer>"])
)


def check_bounded(out):
    assert tuple(out) == REWARD_KEYS
    for key in COMPONENT_KEYS:
        assert 0.0 <= out[key] <= 1.0
    assert out["structure"] in (0.0, 0.5) and out["format"] in (0.0, 1.0)
    assert out["reward_failure"] in (0.0, 1.0)
    assert 0.0 <= out["score"] <= 1.5 and math.isfinite(out["score"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem_type=st.sampled_from(PROBLEM_TYPES), response=responses, truth=truths)
def test_any_input_gives_a_bounded_score(problem_type, response, truth):
    out = compute_score(
        "prop", response, truth, {"problem_type": problem_type, "options": ["A. x", "B. y"]}, math_timeout_s=1.0
    )
    check_bounded(out)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem_type=st.sampled_from(PROBLEM_TYPES), answer=st.sampled_from(ADVERSARIAL), truth=truths)
def test_adversarial_answers_in_a_well_formed_response(problem_type, answer, truth):
    out = compute_score("prop", wrap(answer), truth, {"problem_type": problem_type}, math_timeout_s=1.0)
    check_bounded(out)
    if "<" not in answer:  # answers holding tags make the response itself malformed
        assert out["format"] == 1.0


@pytest.mark.parametrize("answer", [a for a in ADVERSARIAL if len(a) <= 2000])
def test_pathological_math_answers_are_bounded(answer):
    out = score("math", answer, "\\frac{1}{2}", math_timeout_s=1.0)
    check_bounded(out)
    assert out["accuracy"] == 0.0


@settings(max_examples=60, deadline=None)
@given(
    junk=st.one_of(
        st.none(),
        st.integers(),
        st.floats(),
        st.lists(st.integers(), max_size=5),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    )
)
def test_non_string_inputs(junk):
    out = compute_score(junk, junk, junk, junk if isinstance(junk, dict) else None)
    check_bounded(out)
