"""Regenerate ``data/onethinker_sample/``: a few OneThinker-style records and tiny PNGs.

    python scripts/make_sample_data.py [--out data/onethinker_sample]

The images are drawn with PIL (deterministic, a few hundred bytes each), so the sample is
checked in and the converter, preflight and docs have real files to point at.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw


def _canvas(w=96, h=64):
    return Image.new("RGB", (w, h), "white")


def draw_bars(path: Path) -> None:
    img = _canvas()
    d = ImageDraw.Draw(img)
    for i, height in enumerate((20, 45, 30)):
        d.rectangle([10 + 28 * i, 60 - height, 28 + 28 * i, 60], fill=("red", "green", "blue")[i])
    img.save(path, optimize=True)


def draw_box(path: Path) -> None:
    img = _canvas()
    ImageDraw.Draw(img).rectangle([24, 16, 56, 48], outline="black", width=3)
    img.save(path, optimize=True)


def draw_text(path: Path, text: str) -> None:
    img = _canvas(128, 32)
    ImageDraw.Draw(img).text((6, 10), text, fill="black")
    img.save(path, optimize=True)


def draw_triangle(path: Path) -> None:
    img = _canvas()
    ImageDraw.Draw(img).polygon([(10, 56), (86, 56), (10, 8)], outline="black")
    img.save(path, optimize=True)


def draw_dots(path: Path, n: int) -> None:
    img = _canvas()
    d = ImageDraw.Draw(img)
    for i in range(n):
        x = 8 + (i % 6) * 14
        y = 10 + (i // 6) * 16
        d.ellipse([x, y, x + 8, y + 8], fill="black")
    img.save(path, optimize=True)


def records() -> tuple[list[dict], list[dict]]:
    train = [
        {
            "problem_id": "chart-0001",
            "problem": "<image> Which bar is the tallest?",
            "data_type": "image",
            "problem_type": "multiple choice",
            "task_type": "chart_figure_qa",
            "options": ["A. red", "B. green", "C. blue"],
            "data_source": "sample_chart",
            "answer": "<answer>B</answer>",
            "images": ["images/bars.png"],
        },
        {
            "problem_id": "ground-0001",
            "problem": '<image> Locate the square. Answer with JSON {"boxes": [x1, y1, x2, y2]} on a 0-1000 scale.',
            "data_type": "image",
            "problem_type": "spatial grounding",
            "task_type": "spatial_grounding",
            "options": [],
            "data_source": "sample_grounding",
            "answer": '<answer>{"boxes": [250, 250, 583, 750]}</answer>',
            "images": ["images/box.png"],
        },
        {
            "problem_id": "ocr-0001",
            "problem": "<image> Read the text in the image.",
            "data_type": "image",
            "problem_type": "OCR",
            "task_type": "ocr",
            "options": [],
            "data_source": "sample_ocr",
            "answer": "<answer>hello world</answer>",
            "images": ["images/text_hello.png"],
        },
        {
            "problem_id": "math-0001",
            "problem": "<image> The legs of the right triangle are 3 and 4. What is the hypotenuse?",
            "data_type": "image",
            "problem_type": "math",
            "task_type": "math_reasoning",
            "options": [],
            "data_source": "sample_math",
            "answer": "<answer>5</answer>",
            "images": ["images/triangle.png"],
        },
        {
            "problem_id": "count-0001",
            "problem": "<image> How many dots are there?",
            "data_type": "image",
            "problem_type": "numerical",
            "task_type": "general_vqa_science_stem",
            "options": [],
            "data_source": "sample_count",
            "answer": "<answer>7</answer>",
            "images": ["images/dots7.png"],
        },
        {
            "problem_id": "compare-0001",
            "problem": "<image> <image> How many more dots are in the second image than in the first?",
            "data_type": "image",
            "problem_type": "numerical",
            "task_type": "spatial_reasoning",
            "options": [],
            "data_source": "sample_count",
            "answer": "<answer>4</answer>",
            "images": ["images/dots3.png", "images/dots7.png"],
        },
    ]
    val = [
        {
            "problem_id": "ocr-val-0001",
            "problem": "<image> Read the text in the image.",
            "data_type": "image",
            "problem_type": "OCR",
            "task_type": "ocr",
            "options": [],
            "data_source": "sample_ocr",
            "answer": "<answer>g2rpo</answer>",
            "images": ["images/text_g2rpo.png"],
        },
        {
            "problem_id": "count-val-0001",
            "problem": "<image> How many dots are there?",
            "data_type": "image",
            "problem_type": "numerical",
            "task_type": "general_vqa_science_stem",
            "options": [],
            "data_source": "sample_count",
            "answer": "<answer>3</answer>",
            "images": ["images/dots3.png"],
        },
    ]
    return train, val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="data/onethinker_sample")
    out = Path(parser.parse_args().out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    draw_bars(out / "images/bars.png")
    draw_box(out / "images/box.png")
    draw_text(out / "images/text_hello.png", "hello world")
    draw_text(out / "images/text_g2rpo.png", "g2rpo")
    draw_triangle(out / "images/triangle.png")
    draw_dots(out / "images/dots3.png", 3)
    draw_dots(out / "images/dots7.png", 7)
    train, val = records()
    (out / "train.json").write_text(json.dumps(train, indent=1) + "\n", encoding="utf-8")
    (out / "val.json").write_text(json.dumps(val, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
