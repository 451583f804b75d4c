"""``g2rpo-data``: the data command line (console script, see pyproject.toml).

::

    g2rpo-data convert --input train.json [more.json ...] --out ~/data/g2rpo \\
        [--val val.json | --val-fraction 0.02] [--image-root DIR] [--embed-images]
        [--preset reference | strict] [--think-tag TAG] [--format-prompt TEXT]

writes ``OUT/train.parquet``, ``OUT/val.parquet`` (every task), ``OUT/val_<task>.parquet``
(one per task, task = ``--task-key``, default ``problem_type``) and ``OUT/manifest.json``
(files, row counts per task, options). Inputs are JSON arrays or JSON lines. Every bad record
is reported (index, ``problem_id``, field; the first 20 printed) and then nothing is written;
exit status 2.

Each question gets the instruction of its problem type (:func:`~g2rpo_verl.data.onethinker.format_prompt`):
reason inside the preset's think tag (``reference``: ``<thinking>``), answer inside ``<answer>``
in the shape the reward scores (grounding: ``{"boxes": [x1, y1, x2, y2]}``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from g2rpo_verl.config import DEFAULT_TASK_KEY
from g2rpo_verl.data.onethinker import DEFAULT_PRESET, ConvertOptions, RecordError, convert_record
from g2rpo_verl.data.writer import split_per_task, task_file_name, write_outputs
from g2rpo_verl.rewards.settings import CHOICES
from g2rpo_verl.task_lookup import task_values

__all__ = ["main", "load_records", "convert"]

MAX_ERRORS_SHOWN = 20


def load_records(path: Path) -> list[Any]:
    """Records of a JSON array file or a JSON-lines file (blank lines skipped)."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SystemExit(f"g2rpo-data: {path}: not valid JSON: {err}") from None
        return data
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise SystemExit(f"g2rpo-data: {path}:{n}: not valid JSON lines: {err}") from None
    return records


def _convert_all(paths: Sequence[Path], split: str, args, errors: list[str]) -> list[dict[str, Any]]:
    rows = []
    index = 0
    for path in paths:
        image_root = Path(args.image_root) if args.image_root else path.parent
        options = ConvertOptions(
            image_root=image_root,
            embed_images=args.embed_images,
            min_pixels=args.min_pixels,
            max_pixels=args.max_pixels,
            preset=args.preset,
            think_tag=args.think_tag,
            format_prompt=args.format_prompt,
            append_options=not args.no_append_options,
        )
        for record in load_records(path):
            try:
                rows.append(convert_record(record, index, split, options))
            except RecordError as err:
                errors.append(f"{path}: {err}")
            index += 1
    return rows


def _task_of(task_key: str):
    """A converted row's task under ``--task-key`` (the lookup the trainer makes, one row at a time)."""

    def task(row: dict[str, Any]) -> str | None:
        (value,) = task_values(task_key, {task_key: [row.get(task_key)]}, [row.get("extra_info")])
        return None if value is None else str(value)

    return task


def convert(args: argparse.Namespace) -> int:
    errors: list[str] = []
    train = _convert_all([Path(p) for p in args.input], "train", args, errors)
    val = _convert_all([Path(p) for p in args.val], "val", args, errors) if args.val else []
    if errors:
        for line in errors[:MAX_ERRORS_SHOWN]:
            print(f"g2rpo-data: {line}", file=sys.stderr)
        more = len(errors) - MAX_ERRORS_SHOWN
        print(
            f"g2rpo-data: {len(errors)} bad record(s){f' ({more} not shown)' if more > 0 else ''}; nothing written",
            file=sys.stderr,
        )
        return 2
    task_of = _task_of(args.task_key)
    untasked = [r for r in [*train, *val] if task_of(r) is None]
    if untasked:
        first = (untasked[0].get("extra_info") or {}).get("problem_id")
        print(
            f"g2rpo-data: --task-key {args.task_key!r}: {len(untasked)} converted record(s) have no such column or "
            f"extra_info field (first: problem_id={first!r}); pick a field every record has (default "
            f"{DEFAULT_TASK_KEY!r}); nothing written",
            file=sys.stderr,
        )
        return 2
    if not args.val:
        train, val = split_per_task(train, task_of, args.val_fraction, args.seed)
        for row in val:
            row["extra_info"]["split"] = "val"
    if not train:
        print("g2rpo-data: no training records", file=sys.stderr)
        return 2
    files = {"train.parquet": train}
    if val:
        files["val.parquet"] = val
        for task in sorted({task_of(r) for r in val}):
            files[task_file_name(task)] = [r for r in val if task_of(r) == task]
    out = Path(args.out).expanduser()
    manifest = {
        "files": sorted(files),
        "rows": {name: len(rows) for name, rows in files.items()},
        "tasks": {
            split: dict(sorted(Counter(task_of(r) for r in rows).items()))
            for split, rows in (("train", train), ("val", val))
        },
        "task_key": args.task_key,
        "images": "embedded" if args.embed_images else "paths",
        "min_pixels": args.min_pixels,
        "max_pixels": args.max_pixels,
        "max_images_per_sample": max((len(r["images"]) for r in [*train, *val]), default=0),
        "prompts": "custom"
        if args.format_prompt is not None
        else {"preset": args.preset, "think_tag": args.think_tag or None},
    }
    old = _old_val_files(out)
    written = write_outputs(out, files, manifest)
    for stale in old - set(files):
        (out / stale).unlink(missing_ok=True)  # a task of an earlier conversion into OUT
    for path in written:
        print(f"g2rpo-data: wrote {path}" + (f" ({manifest['rows'][path.name]} rows)" if path.name in files else ""))
    return 0


def _old_val_files(out: Path) -> set[str]:
    try:
        listed = json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError):
        return set()
    return {name for name in listed if name.startswith("val_") and name.endswith(".parquet")}


def _parser() -> argparse.ArgumentParser:
    from g2rpo_verl.cli import HelpFormatter, add_version

    parser = argparse.ArgumentParser(
        prog="g2rpo-data",
        description="Data tools of g2rpo-verl.\nExit status: 0 written, 2 a usage or input error (nothing written).",
        formatter_class=HelpFormatter,
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser(
        "convert",
        help="OneThinker / OpenVLThinker JSON -> verl parquet (train + per-task val)",
        formatter_class=HelpFormatter,
    )
    c.add_argument("--input", nargs="+", required=True, help="JSON array or JSON-lines files of training records")
    c.add_argument("--out", required=True, help="output directory")
    group = c.add_mutually_exclusive_group()
    group.add_argument("--val", nargs="+", help="validation records (instead of --val-fraction)")
    group.add_argument(
        "--val-fraction", type=float, default=0.02, help="share of each task held out for validation (default 0.02)"
    )
    c.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    c.add_argument(
        "--task-key", default=DEFAULT_TASK_KEY, help="task of the per-task validation files (extra_info key or column)"
    )
    c.add_argument("--image-root", help="base of relative image paths (default: each input file's directory)")
    c.add_argument("--embed-images", action="store_true", help="store image bytes in the parquet instead of paths")
    c.add_argument("--min-pixels", type=int, default=3136, help="lower pixel bound written with each image")
    c.add_argument("--max-pixels", type=int, default=1048576, help="upper pixel bound written with each image")
    c.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        choices=CHOICES["preset"],
        help=f"reward preset whose think tag the prompts ask for (default {DEFAULT_PRESET}: <thinking>; strict: <think>)",
    )
    c.add_argument("--think-tag", help="think tag the prompts ask for instead of the preset's (no <>)")
    c.add_argument(
        "--format-prompt",
        default=None,
        help="one instruction appended to every question instead of the per-problem-type ones ('' for none)",
    )
    c.add_argument("--no-append-options", action="store_true", help="never append the options list to the question")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "convert":
        try:
            return convert(args)
        except ValueError as err:  # option errors (pixel bounds, val fraction)
            print(f"g2rpo-data: {err}", file=sys.stderr)
            return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
