"""Six visual tasks drawn in code (PIL), one per reward topology of the reference mix.

==============  ===================  ==================  =====================================
data_source     problem_type         answer              reward topology
==============  ===================  ==================  =====================================
demo_grounding  spatial grounding    {"boxes": [..4..]}  IoU in [0, 1] (0-1000 box scale)
demo_counting   numerical            a count, 1..5       exact number, 0/1
demo_attribute  multiple choice      option letter       letter match, 0/1 (options in extra)
demo_ocr        OCR                  two rendered words  1 - WER: 0, 0.5 or 1
demo_math       math                 a + b or a - b      symbolic equivalence (math-verify)
demo_area       regression           cells covered, 1-64 mean relative accuracy, 10 levels
==============  ===================  ==================  =====================================

``demo_area`` is the heavy-tailed regression: a rectangle of w x h cells of an 8 x 8 grid
(w, h uniform in 1..8), so the target w·h is right-skewed (median 16, tail to 64), and the
reward is the mean relative accuracy over thresholds 0.50..0.95 — graded, with most mass at 0
and a long tail of partial credit, unlike the other tasks' few reward levels.

Every image is ``IMAGE_SIZE`` x ``IMAGE_SIZE`` pixels (64: with Qwen3-VL's 16-pixel patches
merged 2x2 that is 4 image tokens per prompt). Objects sit on a 4 x 4 grid of 16-pixel cells,
so boxes are multiples of 250 on the 0-1000 scale and every answer vocabulary is small: a tiny
model can learn each task within a few hundred CPU-seconds.

Each sample also carries the responses a supervised warm start imitates:
:attr:`VisualSample.response` is ``<think>…</think><answer>…</answer>`` with the answer in the
structure the reward asks for (JSON box, number, option letter, the words, the value) and a
think block holding the task's reasoning (the dots counted, the sum worked out) or a short
description; :attr:`VisualSample.free_response` has the same think block but answers free-form
the way a generic chat model does ("three dots", "blue", "the red square", "it is seven"),
which the reward scores without the structure bonus and, except for multiple choice, as wrong.

Everything is a pure function of the ``random.Random`` passed in.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "IMAGE_SIZE",
    "GRID",
    "TASKS",
    "TaskSpec",
    "VisualSample",
    "make_sample",
    "png_bytes",
    "task_of_prompt",
]

IMAGE_SIZE = 64
GRID = 4  # cells per side
CELL = IMAGE_SIZE // GRID
BOX_SCALE = 1000

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 190, 20),
}
SHAPES = ("square", "circle", "triangle", "cross")
OCR_WORDS = ("cat", "sun", "dog", "map", "pen", "cup", "box", "hat")
LETTERS = "ABCD"
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen"
).split()
FORMAT_HINT = "Think in <think></think>, answer in <answer></answer>."
BACKGROUND = (255, 255, 255)


@dataclass
class VisualSample:
    """One prompt: image, question (with verl's ``<image>`` placeholder), answer and its metadata."""

    data_source: str
    problem_type: str
    task_type: str
    question: str
    image: Image.Image
    answer: str
    think: str
    free_answer: str
    options: list[str] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def response(self) -> str:
        """The structured response: format, reasoning and the answer in the shape the reward asks for."""
        return f"<think>{self.think}</think><answer>{self.answer}</answer>"

    @property
    def free_response(self) -> str:
        """The same content answered free-form, as a generic chat model would (no structure bonus)."""
        return f"<think>{self.think}</think><answer>{self.free_answer}</answer>"


@dataclass(frozen=True)
class TaskSpec:
    """A task: its names and the function drawing one sample from a ``random.Random``."""

    data_source: str
    problem_type: str
    task_type: str
    instruction: str  # first sentence of every prompt of the task (unique per task)
    draw: Callable[[random.Random], tuple[Image.Image, str, str, str, list[str] | None, dict]]


# --------------------------------------------------------------------------------------------
# drawing helpers
# --------------------------------------------------------------------------------------------
def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    return image, ImageDraw.Draw(image)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color) -> None:
    """Fill ``shape`` inside the pixel box ``(x1, y1, x2, y2)`` (x2, y2 exclusive), 1-pixel margin."""
    x1, y1, x2, y2 = box[0] + 1, box[1] + 1, box[2] - 2, box[3] - 2
    if shape == "square":
        draw.rectangle((x1, y1, x2, y2), fill=color)
    elif shape == "circle":
        draw.ellipse((x1, y1, x2, y2), fill=color)
    elif shape == "triangle":
        draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=color)
    elif shape == "cross":
        w, h = x2 - x1, y2 - y1
        draw.rectangle((x1 + w // 3, y1, x2 - w // 3, y2), fill=color)
        draw.rectangle((x1, y1 + h // 3, x2, y2 - h // 3), fill=color)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled default font: identical glyphs on every machine, nothing downloaded.
    return ImageFont.load_default(size=size)


def _centered_text(draw: ImageDraw.ImageDraw, text: str, y_center: float, size: int) -> None:
    font = _font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (IMAGE_SIZE - (right - left)) / 2 - left
    y = y_center - (bottom - top) / 2 - top
    draw.text((x, y), text, fill=(0, 0, 0), font=font)


def _cell_box(col: int, row: int, w: int = 1, h: int = 1) -> tuple[int, int, int, int]:
    return col * CELL, row * CELL, (col + w) * CELL, (row + h) * CELL


# --------------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------------
def _one_shape(rng: random.Random):
    """One shape of random colour and kind over 1-2 x 1-2 grid cells: ``(image, (col, row, w, h), color, shape)``."""
    w, h = rng.choice((1, 2)), rng.choice((1, 2))
    col, row = rng.randrange(GRID - w + 1), rng.randrange(GRID - h + 1)
    color, shape = rng.choice(sorted(COLORS)), rng.choice(SHAPES)
    image, draw = _canvas()
    _draw_shape(draw, shape, _cell_box(col, row, w, h), COLORS[color])
    return image, (col, row, w, h), color, shape


def _grounding(rng: random.Random):
    image, (col, row, w, h), color, shape = _one_shape(rng)
    unit = BOX_SCALE // GRID
    box = [col * unit, row * unit, (col + w) * unit, (row + h) * unit]
    answer = json.dumps({"boxes": box})
    # names the object and its cell instead of giving its box: about as long as the box, so that
    # learning the box does not by itself make grounding's answers longer (docs/shaping.md)
    free = f"the {color} {shape} at row {row + 1}, column {col + 1}"
    return image, answer, f"a {color} {shape}", free, None, {"box": box, "color": color, "shape": shape}


def _counting(rng: random.Random):
    count = rng.randint(1, 5)
    cells = rng.sample(range(GRID * GRID), count)
    color = rng.choice(sorted(COLORS))
    image, draw = _canvas()
    for cell in cells:
        _draw_shape(draw, "circle", _cell_box(cell % GRID, cell // GRID), COLORS[color])
    think = " ".join(["dot"] * count)
    return image, str(count), think, f"{_NUMBER_WORDS[count]} dots", None, {"count": count}


def _attribute(rng: random.Random):
    image, _, color, shape = _one_shape(rng)
    if rng.random() < 0.5:
        names, truth, asked = sorted(COLORS), color, "color"
    else:
        names, truth, asked = list(SHAPES), shape, "shape"
    options = [f"{letter}. {name}" for letter, name in zip(LETTERS, names, strict=True)]
    letter = LETTERS[names.index(truth)]
    # free-form: a sentence, not the letter (nor the bare option text, which the lenient rule reads)
    return image, letter, f"it is {truth}", f"the {asked} is {truth}", options, {"asked": asked}


def _ocr(rng: random.Random):
    words = rng.sample(OCR_WORDS, 2)
    image, draw = _canvas()
    _centered_text(draw, words[0], IMAGE_SIZE * 0.3, 18)
    _centered_text(draw, words[1], IMAGE_SIZE * 0.72, 18)
    return image, " ".join(words), "two words", f"the words are {words[0]} and {words[1]}", None, {}


AREA_GRID = 8  # the area task's finer grid: 8-pixel cells


def _area(rng: random.Random):
    w, h = rng.randint(1, AREA_GRID), rng.randint(1, AREA_GRID)
    col, row = rng.randrange(AREA_GRID - w + 1), rng.randrange(AREA_GRID - h + 1)
    color = rng.choice(sorted(COLORS))
    cell = IMAGE_SIZE // AREA_GRID
    image, draw = _canvas()
    draw.rectangle((col * cell, row * cell, (col + w) * cell - 1, (row + h) * cell - 1), fill=COLORS[color])
    return image, str(w * h), f"{w} by {h}", f"about {w} by {h} cells", None, {"w": w, "h": h}


def _math(rng: random.Random):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    op = rng.choice("+-")
    if op == "-" and b > a:
        a, b = b, a
    value = a + b if op == "+" else a - b
    expression = f"{a}{op}{b}"
    image, draw = _canvas()
    _centered_text(draw, expression, IMAGE_SIZE / 2, 22)
    return image, str(value), f"{expression}={value}", f"it is {_NUMBER_WORDS[value]}", None, {"expression": expression}


TASKS: dict[str, TaskSpec] = {
    spec.data_source: spec
    for spec in (
        TaskSpec(
            "demo_grounding",
            "spatial grounding",
            "spatial_grounding",
            'Locate the shape. Give its box as {"boxes": [x1, y1, x2, y2]} on a 0-1000 scale.',
            _grounding,
        ),
        TaskSpec("demo_counting", "numerical", "counting", "How many dots are in the image?", _counting),
        TaskSpec("demo_attribute", "multiple choice", "attribute_recognition", "Answer about the shape.", _attribute),
        TaskSpec("demo_ocr", "OCR", "ocr", "Read the two words in the image.", _ocr),
        TaskSpec("demo_math", "math", "math_reasoning", "Compute the expression in the image.", _math),
        TaskSpec(
            "demo_area",
            "regression",
            "area_estimation",
            "How many cells of an 8x8 grid does the rectangle cover?",
            _area,
        ),
    )
}


def make_sample(data_source: str, rng: random.Random) -> VisualSample:
    """Draw one sample of task ``data_source`` (a key of :data:`TASKS`)."""
    spec = TASKS[data_source]
    image, answer, think, free_answer, options, meta = spec.draw(rng)
    question = spec.instruction
    if options is not None:
        asked = meta["asked"]
        question = f"{spec.instruction} What {asked} is it?\n" + "\n".join(options)
    return VisualSample(
        data_source=spec.data_source,
        problem_type=spec.problem_type,
        task_type=spec.task_type,
        question=f"<image>{question}\n{FORMAT_HINT}",
        image=image,
        answer=answer,
        think=think,
        free_answer=free_answer,
        options=options,
        meta=meta,
    )


def png_bytes(image: Image.Image) -> bytes:
    """Lossless PNG encoding (how images are stored in verl's parquet: ``{"bytes": ...}``)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def task_of_prompt(text: str) -> str | None:
    """The data_source whose instruction appears in ``text`` (a decoded prompt), else None."""
    for source, spec in TASKS.items():
        if spec.instruction in text:
            return source
    return None
