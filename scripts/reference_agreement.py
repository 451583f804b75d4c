#!/usr/bin/env python
"""How closely each reward preset follows the authors' released reward rules.

Two case tables (``tests/rewards/reference_reward_cases.py``): the 80 hand-written cases (expected
values worked out by hand) and the wide table (1,284 model-like responses over all six problem
types and two types the authors do not score, expected values from ``tests/rewards/reference_rules.py``,
a plain reading of the written statement in docs/rewards.md). Each case is scored with
``compute_score(..., preset=P)``; a case agrees when accuracy, format, structure and the
overall score are all equal (to 1e-9). Printed per problem type.

``--authors``: also score the wide table with the authors' own ``compute_score``
(``EasyR1/verl/reward_function/multitask_reward.py`` of meshybb/OpenVLThinker-my-version),
imported at run time from a local git mirror (``--mirror``; nothing of it is committed here):
a cross-check that the written statement is their rule. Their ``RewardModelClient`` import
(EasyR1's verl, not installed here, unused by their default settings) is given a stand-in.

``--random N`` adds N cases drawn by ``random_cases(--seed, N)``.

Usage: python scripts/reference_agreement.py [--authors] [--mirror GIT_DIR] [--random N --seed S]
                                            [--show-disagreements]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import math
import subprocess
import sys
import tempfile
import types
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "rewards"))

import reference_rules  # noqa: E402
from reference_reward_cases import CASES, WIDE_CASES, random_cases  # noqa: E402

from g2rpo_verl.rewards import compute_score  # noqa: E402

MIRROR = "/work/.mirror/meshybb+OpenVLThinker-my-version/repo"
AUTHORS_FILE = "EasyR1/verl/reward_function/multitask_reward.py"
PRESETS = {"reference": {"preset": "reference"}, "strict": {"preset": "strict"}}


def same(a: dict, b: dict) -> bool:
    return all(
        math.isclose(float(a[k]), float(b[k]), rel_tol=0, abs_tol=1e-9)
        for k in ("accuracy", "format", "structure", "overall")
    )


def ours(problem_type: str, response: str, truth: str, extra=None, **kwargs) -> dict:
    out = compute_score("agreement", response, truth, {"problem_type": problem_type, **(extra or {})}, **kwargs)
    return {**out, "overall": out["score"]}


def load_authors(mirror: str):
    """The authors' ``compute_score`` from the git mirror (read with ``git show``)."""
    source = subprocess.run(
        ["git", "--git-dir", mirror, "show", f"HEAD:{AUTHORS_FILE}"], check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="authors_reward_")) / "authors_multitask_reward.py"
    path.write_text(source)
    stub = types.ModuleType("verl.workers.reward.model_reward")
    stub.RewardModelClient = None  # only used when their USE_MODEL_FOR_OPEN_ENDED is True (it is False)
    saved = sys.modules.get(stub.__name__)
    sys.modules[stub.__name__] = stub
    try:
        spec = importlib.util.spec_from_file_location("authors_multitask_reward", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            sys.modules.pop(stub.__name__, None)
        else:
            sys.modules[stub.__name__] = saved

    def score(problem_type: str, response: str, truth: str) -> dict:
        item = {
            "response": response,
            "ground_truth": truth,
            "problem_type": problem_type,
            "data_type": "image",
            "task_type": "ocr",
        }
        with contextlib.redirect_stdout(io.StringIO()):  # their 1 % debug print
            out = module.compute_score([item])[0]
        return {
            "accuracy": out["accuracy"],
            "format": out["format"],
            "structure": out["structure_reward"],
            "overall": out["overall"],
        }

    return score


def table(title: str, rows: dict[str, dict[str, list[int]]]) -> None:
    names = list(rows)
    types_ = list(dict.fromkeys(t for r in rows.values() for t in r))
    print(title)
    print(f"{'problem type':18s}" + "".join(f"{n:>22s}" for n in names))
    for t in types_:
        cells = []
        for n in names:
            k, total = rows[n].get(t, [0, 0])
            cells.append(f"{k:>4d}/{total:<4d} {100 * k / max(total, 1):5.1f}%" if total else "-")
        print(f"{t:18s}" + "".join(f"{c:>22s}" for c in cells))
    for n in names:
        k = sum(v[0] for v in rows[n].values())
        total = sum(v[1] for v in rows[n].values())
        print(f"  {n}: {k}/{total} = {100 * k / max(total, 1):.1f}%")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors", action="store_true", help="cross-check with the authors' own code from --mirror")
    parser.add_argument("--mirror", default=MIRROR, help="git dir of meshybb/OpenVLThinker-my-version")
    parser.add_argument("--random", type=int, default=0, metavar="N", help="add N random cases (random_cases)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random cases")
    parser.add_argument("--show-disagreements", action="store_true")
    args = parser.parse_args()

    hand: dict[str, dict[str, list[int]]] = {n: defaultdict(lambda: [0, 0]) for n in PRESETS}
    for case in CASES:
        expected = {
            "accuracy": case.accuracy,
            "format": case.format,
            "structure": case.structure,
            "overall": case.overall,
        }
        for name, kwargs in PRESETS.items():
            tally = hand[name][case.problem_type]
            tally[0] += same(ours(case.problem_type, case.response, case.truth, case.extra, **kwargs), expected)
            tally[1] += 1
    table(f"Hand-written table ({len(CASES)} cases), agreement with the values worked out by hand:", hand)

    authors = load_authors(args.mirror) if args.authors else None
    names = [*PRESETS, *(["authors' code"] if authors else [])]
    wide: dict[str, dict[str, list[int]]] = {n: defaultdict(lambda: [0, 0]) for n in names}
    misses = []
    cases = WIDE_CASES + random_cases(args.seed, args.random)
    for case in cases:
        expected = reference_rules.score(case.problem_type, case.response, case.truth)
        outs = {name: ours(case.problem_type, case.response, case.truth, **kwargs) for name, kwargs in PRESETS.items()}
        if authors:
            outs["authors' code"] = authors(case.problem_type, case.response, case.truth)
        for name, out in outs.items():
            ok = same(out, expected)
            tally = wide[name][case.problem_type]
            tally[0] += ok
            tally[1] += 1
            if not ok and name != "strict":
                misses.append((name, case, expected, out))
    extra = f" + {args.random} random (seed {args.seed})" if args.random else ""
    table(
        f"Wide table ({len(WIDE_CASES)} cases{extra}), agreement with the written statement of the authors' rules:",
        wide,
    )

    if misses:
        print(f"{len(misses)} disagreement(s) outside strict:")
    if misses or args.show_disagreements:
        for name, case, expected, out in misses:
            print(
                f"  [{name}] {case.problem_type}: {case.note}: expected acc/fmt/struct {expected['accuracy']:g}/"
                f"{expected['format']:g}/{expected['structure']:g}, got {out['accuracy']:g}/{out['format']:g}/{out['structure']:g}"
            )


if __name__ == "__main__":
    main()
