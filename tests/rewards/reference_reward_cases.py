"""Hand-written cases of the authors' released reward rules, with the score each rule gives.

The expected values follow this statement of their rules (docs/rewards.md, "The reference
rules"), worked out by hand — not by running their code:

* the response first loses the whitespace next to ``<``, ``>`` and ``/``;
* format = 1 when the response starts with ``<thinking>``, ends with ``</answer>`` and has
  ``</thinking>`` then ``<answer>`` in between (anything else inside is allowed, an empty
  answer too);
* the answer is the FIRST ``<answer>…</answer>`` block's stripped content; when it is missing
  or empty the whole (rewritten, stripped) response is scored instead;
* structure = 0.5 for every type but grounding; for grounding 0.5 when the answer is the JSON
  object ``{"boxes": [x1, y1, x2, y2]}`` (numbers or numeric strings); 0 whenever format = 0;
* accuracy — multiple choice: mathruler's ``grade_answer`` (the true letter in any case,
  ``(B)``, ``$B$``, ``[B]`` pass; ``B.``, ``**B**`` do not); numerical: ``float`` of the whole answer equals the truth to 2
  decimals; regression: mean over t = 0.50…0.95 of ``|pred − truth| / |truth| < 1 − t``
  (thresholds and division in float32, so a relative error of exactly 0.1 passes t = 0.9);
  OCR: 1 − WER on whitespace-split words, case-sensitive; math: math-verify equivalence;
  grounding: IoU of the answer's one box (corners as given) with the true box;
* overall = 0.9·accuracy + 0.1·format + structure.

``exception`` names the documented place where the ``reference`` preset deliberately differs
from that rule (docs/rewards.md, "Where reference differs from the authors' code"); the value
given is still what THEIR rule gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Case:
    problem_type: str
    response: str
    truth: str
    accuracy: float
    format: float
    structure: float
    note: str
    extra: dict[str, Any] = field(default_factory=dict)
    exception: str = ""  # "" or the documented exception (E1..) that makes reference differ
    ours: float | None = None  # with an exception: the reference preset's accuracy

    @property
    def overall(self) -> float:
        return 0.9 * self.accuracy + 0.1 * self.format + self.structure


# their mean over 10 thresholds is a float32: 9/10 and 6/10 as float32 values
F32_9 = 0.8999999761581421
F32_6 = 0.6000000238418579


def T(answer: str, think: str = "I look at the image.") -> str:
    return f"<thinking>{think}</thinking><answer>{answer}</answer>"


MC = {"options": ["A. a cat", "B. a dog", "C. a bird", "D. a fish"]}
BOX = '{"boxes": [0, 0, 100, 100]}'

CASES = [
    # ------------------------------------------------------------ multiple choice, truth B
    Case("multiple choice", T("B"), "B", 1, 1, 0.5, "correct letter", MC),
    Case("multiple choice", T("C"), "B", 0, 1, 0.5, "wrong letter", MC),
    Case("multiple choice", T("b"), "B", 1, 1, 0.5, "lower case", MC),
    Case("multiple choice", T("(B)"), "B", 1, 1, 0.5, "in parentheses", MC),
    Case("multiple choice", T("$\\boxed{B}$"), "B", 1, 1, 0.5, "boxed", MC),
    Case("multiple choice", T("B."), "B", 0, 1, 0.5, "letter and a period is not the letter", MC),
    Case("multiple choice", T("B. a dog"), "B", 0, 1, 0.5, "letter with the option text", MC),
    Case("multiple choice", T("a dog"), "B", 0, 1, 0.5, "option text only", MC),
    Case(
        "multiple choice",
        "<think>r</think><answer>B</answer>",
        "B",
        1,
        0,
        0,
        "<think> tag: format fails, structure gated",
        MC,
    ),
    Case("multiple choice", "<answer>B</answer>", "B", 1, 0, 0, "no think block", MC),
    Case("multiple choice", T(""), "B", 0, 1, 0.5, "empty answer passes format; whole response scored", MC),
    Case(
        "multiple choice",
        "<thinking>r</thinking> B",
        "B",
        0,
        0,
        0,
        "no answer block: whole response is not a letter",
        MC,
    ),
    Case("multiple choice", "B", "B", 1, 0, 0, "bare letter: whole response scored", MC),
    Case("multiple choice", T("A") + "<answer>B</answer>", "B", 0, 1, 0.5, "two answer blocks: the first counts", MC),
    Case(
        "multiple choice",
        "< thinking >r</ thinking > < answer > B </ answer >",
        "B",
        1,
        1,
        0.5,
        "spaces inside tags",
        MC,
    ),
    Case(
        "multiple choice",
        "<thinking>r</thinking>\n\n<answer>\nB\n</answer>\n",
        "B",
        1,
        1,
        0.5,
        "newlines between blocks",
        MC,
    ),
    Case("multiple choice", T("B") + " done", "B", 1, 0, 0, "text after the answer block", MC),
    Case("multiple choice", "x " + T("B"), "B", 1, 0, 0, "text before the think block", MC),
    Case(
        "multiple choice",
        "<thinking>a</thinking>b<thinking>c</thinking><answer>B</answer>",
        "B",
        1,
        1,
        0.5,
        "two think blocks",
        MC,
    ),
    # ------------------------------------------------------------ numerical, truth 15
    Case("numerical", T("15"), "15", 1, 1, 0.5, "correct"),
    Case("numerical", T("15.001"), "15", 1, 1, 0.5, "equal to 2 decimals"),
    Case("numerical", T("14.996"), "15", 1, 1, 0.5, "rounds to 15.00"),
    Case("numerical", T("15.01"), "15", 0, 1, 0.5, "differs at 2 decimals"),
    Case("numerical", T("16"), "15", 0, 1, 0.5, "wrong"),
    Case("numerical", T("-15"), "15", 0, 1, 0.5, "wrong sign"),
    Case("numerical", T("1,500"), "1500", 1, 1, 0.5, "thousands comma"),
    Case("numerical", T("15"), "15.0", 1, 1, 0.5, "truth written as a float"),
    Case("numerical", T("fifteen"), "15", 0, 1, 0.5, "a word"),
    Case("numerical", T("15 objects"), "15", 0, 1, 0.5, "number with a unit word"),
    Case("numerical", T("$15$"), "15", 0, 1, 0.5, "number in $…$"),
    Case("numerical", "15", "15", 1, 0, 0, "bare number: whole response scored"),
    Case("numerical", "<thinking>r</thinking>15", "15", 0, 0, 0, "no answer block"),
    Case("numerical", T(""), "15", 0, 1, 0.5, "empty answer"),
    Case("numerical", "<think>r</think><answer>15</answer>", "15", 1, 0, 0, "<think> tag"),
    # ------------------------------------------------------------ regression, truth 10
    Case("regression", T("10"), "10", 1, 1, 0.5, "exact"),
    Case("regression", T("10.4"), "10", 1, 1, 0.5, "4 % off: every threshold"),
    Case("regression", T("9.4"), "10", F32_9, 1, 0.5, "6 % off: t = .50 … .90"),
    Case("regression", T("11"), "10", F32_9, 1, 0.5, "10 % off: float32 passes t = .90 too"),
    Case("regression", T("12.4"), "10", F32_6, 1, 0.5, "24 % off: t = .50 … .75 (no case sits on a threshold)"),
    Case("regression", T("15"), "10", 0, 1, 0.5, "50 % off: no threshold (0.5 < 0.5 is false)"),
    Case("regression", T("abc"), "10", 0, 1, 0.5, "not a number"),
    Case("regression", "10", "10", 1, 0, 0, "bare number"),
    Case("regression", "<answer>11</answer>", "10", F32_9, 0, 0, "no think block (10 % off, float32)"),
    # ------------------------------------------------------------ OCR, truth "Hello World"
    Case("OCR", T("Hello World"), "Hello World", 1, 1, 0.5, "exact"),
    Case("OCR", T("hello world"), "Hello World", 0, 1, 0.5, "case differs: two substitutions"),
    Case("OCR", T("Hello world"), "Hello World", 0.5, 1, 0.5, "one word's case differs"),
    Case("OCR", T("Hello  World"), "Hello World", 1, 1, 0.5, "extra space"),
    Case("OCR", T("Hello there World"), "Hello World", 0.5, 1, 0.5, "one insertion"),
    Case("OCR", T("Hello"), "Hello World", 0.5, 1, 0.5, "one deletion"),
    Case("OCR", T("Goodbye"), "Hello World", 0, 1, 0.5, "all wrong"),
    Case("OCR", T("Hello World Hello World Hello"), "Hello World", 0, 1, 0.5, "WER above 1 is clipped"),
    Case(
        "OCR",
        "<thinking>r</thinking>Hello World",
        "Hello World",
        0.5,
        0,
        0,
        "no answer block: the first word is glued to the tags",
    ),
    Case("OCR", "Hello World", "Hello World", 1, 0, 0, "bare text"),
    Case("OCR", T("A / B"), "A / B", 0, 1, 0.5, "slash: their rewrite joins the answer's words only"),
    # ------------------------------------------------------------ math, truth \frac{1}{2}
    Case("math", T("\\frac{1}{2}"), "\\frac{1}{2}", 1, 1, 0.5, "same expression"),
    Case("math", T("0.5"), "\\frac{1}{2}", 1, 1, 0.5, "equivalent decimal"),
    Case("math", T("$\\frac{1}{2}$"), "\\frac{1}{2}", 1, 1, 0.5, "in $…$"),
    Case("math", T("\\boxed{\\frac12}"), "\\frac{1}{2}", 1, 1, 0.5, "boxed"),
    Case("math", T("1/3"), "\\frac{1}{2}", 0, 1, 0.5, "wrong"),
    Case("math", T("x"), "\\frac{1}{2}", 0, 1, 0.5, "a symbol"),
    Case("math", T("!" * 40), "\\frac{1}{2}", 0, 1, 0.5, "junk still earns the flat structure"),
    Case("math", T("[[" * 50), "\\frac{1}{2}", 0, 1, 0.5, "bracket junk"),
    Case("math", "<think>r</think><answer>0.5</answer>", "\\frac{1}{2}", 1, 0, 0, "<think> tag"),
    Case(
        "math",
        "<thinking>so it is \\boxed{\\frac{1}{2}}</thinking>",
        "\\frac{1}{2}",
        1,
        0,
        0,
        "no answer block: found in the whole response",
    ),
    # ------------------------------------------------------------ spatial grounding, truth one box
    Case("spatial grounding", T(BOX), BOX, 1, 1, 0.5, "exact box"),
    Case("spatial grounding", T('{"boxes": [50, 50, 150, 150]}'), BOX, 2500 / 17500, 1, 0.5, "partial overlap"),
    Case("spatial grounding", T('{"boxes": [200, 200, 300, 300]}'), BOX, 0, 1, 0.5, "no overlap, right structure"),
    Case("spatial grounding", T('{"boxes": ["0", "0", "100", "100"]}'), BOX, 1, 1, 0.5, "string coordinates"),
    Case("spatial grounding", T('{"boxes": [0, 0, 100, 100], "label": "dog"}'), BOX, 1, 1, 0.5, "an extra key"),
    Case("spatial grounding", T("[0, 0, 100, 100]"), BOX, 0, 1, 0, "bare list"),
    Case("spatial grounding", T('```json\n{"boxes": [0, 0, 100, 100]}\n```'), BOX, 0, 1, 0, "json fence"),
    Case(
        "spatial grounding", T('[{"bbox_2d": [0, 0, 100, 100], "label": "dog"}]'), BOX, 0, 1, 0, "Qwen bbox_2d objects"
    ),
    Case("spatial grounding", T('{"boxes": [[0, 0, 100, 100]]}'), BOX, 0, 1, 0, "a list of boxes"),
    Case("spatial grounding", T('{"boxes": [100, 100, 0, 0]}'), BOX, 0, 1, 0.5, "swapped corners: no area"),
    Case("spatial grounding", T("The dog is at [0, 0, 100, 100]."), BOX, 0, 1, 0, "prose"),
    Case("spatial grounding", T('{"boxes": [0, 0, 100]}'), BOX, 0, 1, 0, "three coordinates"),
    Case(
        "spatial grounding",
        "<think>r</think><answer>" + BOX + "</answer>",
        BOX,
        1,
        0,
        0,
        "<think> tag: structure gated",
    ),
    Case("spatial grounding", BOX, BOX, 1, 0, 0, "bare JSON: whole response scored"),
    Case("spatial grounding", T(""), BOX, 0, 1, 0, "empty answer: no JSON"),
    # ------------------------------------------------------------ a type their code does not know
    Case("open-ended", T("Paris"), "Paris", 0, 1, 0.5, "their open-ended/unknown types score 0"),
]

#: the departures of ``reference`` from the authors' code that remain (docs/rewards.md): only
#: where theirs raises, hangs or is unbounded; no case of the tables reaches them
EXCEPTIONS = {
    "E1": "an unknown task_type does not kill the batch (theirs: KeyError for every sample)",
    "E6": "math and multiple-choice graders run with a time limit and junk pre-checks (theirs may hang)",
    "E8": "over-long responses keep their last max_solution_chars characters and get format 0",
}


# ---------------------------------------------------------------------------------------
# The wide table: model-like answers of every problem type, each in several response shapes.
# Expected values come from tests/rewards/reference_rules.py (the written statement of the rules).


@dataclass(frozen=True)
class Wide:
    problem_type: str
    response: str
    truth: str
    note: str


def _shapes(answer: str) -> list[tuple[str, str]]:
    """The response shapes each answer is written in: (response, shape name)."""
    return [
        (T(answer), "tagged"),
        (f"< thinking >I look.</ thinking >\n< answer > {answer} </ answer >\n", "spaced tags"),
        (answer, "bare"),
        (f"<think>I look.</think><answer>{answer}</answer>", "<think> tag"),
        (f"<thinking>I look.</thinking> {answer}", "no answer block"),
    ]


# problem type -> (truths, answers): every answer is scored against every truth of its type
_WIDE_ANSWERS: dict[str, tuple[list[str], list[str]]] = {
    "multiple choice": (
        ["B", "<answer>B</answer>", " b "],
        [
            "B",
            "b",
            "(B)",
            "$B$",
            "\\boxed{B}",
            "$\\boxed{B}$",
            "**B**",
            "B.",
            "B)",
            "B: a dog",
            "(B) a dog",
            "Option B",
            "The answer is B",
            "a dog",
            "C",
            "A",
            "[B]",
            "{B}",
            "\\text{B}",
            "B, C",
            "BB",
            "B and C",
        ],
    ),
    "numerical": (
        ["15", "15.0", "$15$", "<answer>15</answer>"],
        [
            "15",
            "15.0",
            "15.001",
            "14.996",
            "15.01",
            "16",
            "-15",
            "+15",
            "1e1",
            "1.5e1",
            "15 objects",
            "$15$",
            "\\boxed{15}",
            "15%",
            "fifteen",
            "15.",
            "15 or 16",
            "about 15",
            "**15**",
            "1_5",
            "1,5",
            "0015",
            "15/1",
        ],
    ),
    "regression": (
        ["10", "0", "1,000", "-4"],
        [
            "10",
            "11",
            "9",
            "10.4",
            "9.4",
            "10.5",
            "11.5",
            "12",
            "12.5",
            "13",
            "14.5",
            "15",
            "5",
            "0",
            "1e-9",
            "abc",
            "10 m",
            "$10$",
            "1e1",
            "1,000",
            "1000",
            "-4.4",
            "-4",
            "4",
            "inf",
            "nan",
            "1e40",
        ],
    ),
    "OCR": (
        ["Hello World", "A / B", "x < y", "Total: $12.50", "line one\nline two"],
        [
            "Hello World",
            "hello world",
            "Hello  World",
            "Hello there World",
            "Hello",
            "Goodbye",
            "Hello World Hello World Hello",
            "A / B",
            "A/B",
            "x < y",
            "x<y",
            "Total: $12.50",
            "**Hello World**",
            '"Hello World"',
            "Hello World.",
            "line one\nline two",
            "line one line two",
            "LINE ONE LINE TWO",
        ],
    ),
    "math": (
        ["\\frac{1}{2}", "$$x^2+1$$", "$3$", "2\\sqrt{2}", "x = 5"],
        [
            "\\frac{1}{2}",
            "0.5",
            "1/2",
            "1 / 2",
            "$\\frac{1}{2}$",
            "\\boxed{\\frac12}",
            "\\boxed{1/2}",
            "1/3",
            "x",
            "x^2+1",
            "$x^2+1$",
            "$$x^2+1$$",
            "1+x^2",
            "3",
            "$3$",
            "2\\sqrt{2}",
            "\\sqrt{8}",
            "5",
            "x=5",
            "$x = 5$",
            "The answer is $\\frac{1}{2}$.",
            "\\boxed{1} and \\boxed{0.5}",
            "!!!!!!!!",
        ],
    ),
    "spatial grounding": (
        [
            '{"boxes": [0, 0, 100, 100]}',
            '{"boxes": ["0", "0", "100", "100"]}',
            '<answer>{"boxes": [0, 0, 100, 100]}</answer>',
            "[0, 0, 100, 100]",
            '{"boxes": [[0, 0, 100, 100]]}',
        ],
        [
            '{"boxes": [0, 0, 100, 100]}',
            '{"boxes":[0,0,100,100]}',
            '{ "boxes" : [ 0 , 0 , 100.0 , 1e2 ] }',
            '{"boxes": [50, 50, 150, 150]}',
            '{"boxes": [0, 0, 50, 50]}',
            '{"boxes": [-10, -10, 50, 50]}',
            '{"boxes": [200, 200, 300, 300]}',
            '{"boxes": ["0", "0", "100", "100"]}',
            '{"boxes": [true, 0, 100, 100]}',
            '{"boxes": [0, 0, 100, 100], "label": "dog"}',
            "[0, 0, 100, 100]",
            '```json\n{"boxes": [0, 0, 100, 100]}\n```',
            '[{"bbox_2d": [0, 0, 100, 100], "label": "dog"}]',
            '{"boxes": [[0, 0, 100, 100]]}',
            '{"boxes": [100, 100, 0, 0]}',
            "The dog is at [0, 0, 100, 100].",
            '{"boxes": [0, 0, 100]}',
            '{"bbox": [0, 0, 100, 100]}',
            '{"boxes": [0, 0, 100, 100]} {"boxes": [0, 0, 10, 10]}',
            "{'boxes': [0, 0, 100, 100]}",
        ],
    ),
    "open-ended": (["Paris"], ["Paris", "paris", "It is Paris."]),
    "free-form": (["Paris"], ["Paris", "London"]),
}

#: odd response shapes, per type: (problem type, response, truth, note)
_WIDE_ODD = [
    (t, resp, truth, note)
    for t, ok, truth in [
        ("multiple choice", "B", "B"),
        ("numerical", "15", "15"),
        ("regression", "10", "10"),
        ("OCR", "Hello World", "Hello World"),
        ("math", "\\frac{1}{2}", "\\frac{1}{2}"),
        ("spatial grounding", '{"boxes": [0, 0, 100, 100]}', '{"boxes": [0, 0, 100, 100]}'),
    ]
    for resp, note in [
        (T(""), "empty answer block"),
        (T(" "), "blank answer block"),
        ("<thinking></thinking><answer></answer>", "empty blocks"),
        ("", "empty response"),
        (T(ok) + "<answer>wrong</answer>", "two answer blocks, the first right"),
        (T("wrong") + f"<answer>{ok}</answer>", "two answer blocks, the second right"),
        (T(ok) + " done", "text after the answer block"),
        ("x " + T(ok), "text before the think block"),
        (f"<thinking>a</thinking>b<thinking>c</thinking><answer>{ok}</answer>", "two think blocks"),
        (f"<thinking>r</thinking><answer>{ok}", "unclosed answer"),
        (f"<thinking>r</thinking><answer><answer>{ok}</answer>", "nested answer tag"),
        (f"<thinking>r<answer>{ok}</answer></thinking><answer>x</answer>", "an answer quoted in the reasoning"),
        (f"<answer>{ok}</answer>", "no think block"),
        (f"<thinking>r</thinking>\n\n<answer>\n{ok}\n</answer>\n\n", "newlines around"),
        (f"<THINKING>r</THINKING><ANSWER>{ok}</ANSWER>", "upper-case tags"),
        (f"<thinking>r</thinking><answer>{ok}</answer>" * 2, "the whole response twice"),
        (f"<thinking>r</thinking><answer>{ok} {ok}</answer>", "the answer twice"),
    ]
]


_REASONING = (
    "I look at the image carefully. The figure shows a triangle with base four and height one quarter, "
    "and the question asks for the value, so I compare each part of the picture with the options before I decide. "
) * 6  # ~1,300 characters, over 1,000 letters: a model's usual length of reasoning

#: long, prose-like responses per type: (problem type, right answer, truth)
_WIDE_PROSE_ANSWERS = [
    ("multiple choice", "B", "B"),
    ("numerical", "15", "15"),
    ("regression", "10", "10"),
    ("OCR", "Hello World", "Hello World"),
    ("math", "\\frac{1}{2}", "\\frac{1}{2}"),
    ("spatial grounding", '{"boxes": [0, 0, 100, 100]}', '{"boxes": [0, 0, 100, 100]}'),
]
_WIDE_PROSE = [
    (t, resp, truth, note)
    for t, ok, truth in _WIDE_PROSE_ANSWERS
    for resp, note in [
        (T(ok, _REASONING), "long reasoning, tagged answer"),
        (f"<thinking>{_REASONING}</thinking> So the answer is {ok}.", "long reasoning, the answer after it untagged"),
        (f"<thinking>{_REASONING} So the answer is ${ok}$.</thinking>", "the answer in $…$ inside the reasoning only"),
        (f"<thinking>{_REASONING}</thinking>\\boxed{{{ok}}}", "long reasoning, a boxed answer untagged"),
        (f"{_REASONING} Final answer: \\boxed{{{ok}}}", "no tags at all, boxed at the end"),
        (T(f"{_REASONING} Therefore the answer is \\boxed{{{ok}}}."), "the reasoning inside the answer block"),
        (T(f"The answer is {ok}."), "a sentence in the answer block"),
        (f"<thinking>{_REASONING * 3}</thinking><answer>{ok}", "over 4,000 characters, unclosed answer"),
        (T(f"{ok}\n\nExplanation: {_REASONING}"), "the answer, then an explanation"),
    ]
]


def _wide_cases() -> list[Wide]:
    out = []
    for problem_type, (truths, answers) in _WIDE_ANSWERS.items():
        for truth in truths:
            for answer in answers:
                shapes = _shapes(answer) if truth == truths[0] else _shapes(answer)[:1]
                for response, shape in shapes:
                    out.append(Wide(problem_type, response, truth, f"{answer!r} {shape} vs {truth!r}"))
    out.extend(Wide(t, r, truth, note) for t, r, truth, note in _WIDE_ODD + _WIDE_PROSE)
    return out


WIDE_CASES = _wide_cases()


# ---------------------------------------------------------------------------------------
# The random table: answer fragments x truths x response shapes drawn with a seed, for
# combinations no one wrote down (tags inside the reasoning, several blocks, spaced tags with
# a chatty answer, ground truths wrapped in <answer>, odd floats, JSON edge cases).
_RANDOM_FRAGMENTS: dict[str, tuple[list[str], list[str]]] = {
    "multiple choice": (
        ["B", "b", "(B)", "C", "B.", "**B**", "$B$", "\\boxed{B}", "B) dog", "Answer: B", "[B]", " B ", "B\n"]
        + ["E", "(E)", "\\text{B}", "{B}", "b."],
        ["B", "E", " c "],
    ),
    "numerical": (
        ["15", "15.0", " 15 ", "1,5", "15e0", "$15$", "15 cm", "-15", "1_5", "inf", "nan", "0x0f", "\u0661\u0665"]
        + ["15.004", "14.995", "15/1", "1.5E1", ".15e2"],
        ["15", "15.00", "1,5"],
    ),
    "regression": (
        ["10", "11", "9", "10.5", "0", "1e-9", "-10", "1e38", "1e39", "10 m", "9.5", "10.49999", "12.5000001"]
        + ["8.999999"],
        ["10", "0", "-3.3"],
    ),
    "OCR": (
        ["Hello World", "hello world", "Hello  World", "A/B", "A / B", "x<y", "Hello\tWorld", "", "Hello World!"]
        + ["<b>Hello</b>"],
        ["Hello World", "A / B", "a<b"],
    ),
    "math": (
        ["\\frac12", "0.5", "1/2", "$\\frac{1}{2}$", "\\boxed{0.5}", "x", "2", "\\sqrt{4}", "$$2$$", "\\dfrac{1}{2}"]
        + ["1/2 and 2", "\\{2\\}", "(1, 2)", "[1,2)"],
        ["\\frac{1}{2}", "2", "$$2$$", "(1,2)"],
    ),
    "spatial grounding": (
        ['{"boxes": [0, 0, 100, 100]}', '{"boxes": [0,0,50,50]}', '{"boxes": ["0", 0, 1e2, 100.0]}']
        + ['{"boxes": [NaN, 0, 100, 100]}', '{"boxes": [0, 0, Infinity, 100]}', '{"boxes": [100,100,0,0]}']
        + ["[0,0,100,100]", '{"boxes": [0, 0, 100, 100], "boxes": [0, 0, 10, 10]}', '{"boxes": [false, 0, 1, 1]}']
        + ['{"boxes": [0, 0, 1e-7, 1e-7]}', '{"boxes": [0,0,100,100]}\n'],
        ['{"boxes": [0, 0, 100, 100]}', '{"boxes": [0, 0, 1e-7, 1e-7]}', '{"boxes": [[0,0,1,1]]}'],
    ),
}
_RANDOM_THINKING = ["r", "", "I think <answer>x</answer> maybe", "a / b", " spaced "]
_RANDOM_SHAPES = [
    "<thinking>{t}</thinking><answer>{a}</answer>",
    "< thinking >{t}</ thinking >< answer >{a}</ answer >",
    "{a}",
    "<think>{t}</think><answer>{a}</answer>",
    "<thinking>{t}</thinking>{a}",
    "<thinking>{t}</thinking><answer>{a}",
    "<thinking>{t}</thinking><answer></answer><answer>{a}</answer>",
    "<thinking>{t}</thinking><answer>{a}</answer>\n tail",
    "\n <thinking>{t}</thinking>\n<answer>{a}</answer>\n",
    "<thinking>{t}</thinking><answer>{a}</answer><thinking>x</thinking><answer>y</answer>",
    "<thinking>{t}<answer>{a}</answer></thinking><answer>z</answer>",
    "<thinking>{t}</thinking> <answer>{a} {n}</answer>",
]


def random_cases(seed: int, n: int) -> list[Wide]:
    """``n`` cases drawn with ``random.Random(seed)`` (the same list for the same arguments)."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        problem_type = rng.choice(sorted(_RANDOM_FRAGMENTS))
        answers, truths = _RANDOM_FRAGMENTS[problem_type]
        answer, truth = rng.choice(answers), rng.choice(truths)
        if rng.random() < 0.2:
            truth = f"<answer>{truth}</answer>"
        shape = rng.choice(_RANDOM_SHAPES)
        response = (
            shape.replace("{t}", rng.choice(_RANDOM_THINKING))
            .replace("{n}", rng.choice(_RANDOM_FRAGMENTS["numerical"][0]))
            .replace("{a}", answer)
        )
        out.append(Wide(problem_type, response, truth, f"random {answer!r} vs {truth!r}"))
    return out
