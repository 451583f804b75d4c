#!/usr/bin/env python
"""How closely each reward preset follows the authors' released reward rules.

Scores the hand-written case table ``tests/reference_reward_cases.py`` (the expected
accuracy, format and structure of each case, worked out from a written statement of their
rules) with ``compute_score(..., preset=P)`` and prints, per problem type, the share of cases
whose three components and overall score all agree. Cases marked with a documented exception
(docs/rewards.md) are counted separately: there ``reference`` differs on purpose.

Usage: python scripts/reference_agreement.py [--show-disagreements]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reference_reward_cases import CASES, EXCEPTIONS  # noqa: E402

from g2rpo_verl.rewards import compute_score  # noqa: E402


def agrees(case, out) -> bool:
    return (
        math.isclose(out["accuracy"], case.accuracy, abs_tol=1e-6)
        and out["format"] == case.format
        and out["structure"] == case.structure
        and math.isclose(out["score"], case.overall, abs_tol=1e-6)
    )


def score(case, **kwargs):
    return compute_score(
        "agreement", case.response, case.truth, {"problem_type": case.problem_type, **case.extra}, **kwargs
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show-disagreements", action="store_true")
    args = parser.parse_args()

    presets = {
        "reference": {"preset": "reference"},
        "strict": {"preset": "strict"},
        "strict+thinking": {"preset": "strict", "think_tag": "thinking"},
    }
    counts: dict[str, dict[str, list[int]]] = {p: defaultdict(lambda: [0, 0]) for p in presets}
    exception_rows = []
    misses = []
    for case in CASES:
        for name, kwargs in presets.items():
            out = score(case, **kwargs)
            ok = agrees(case, out)
            if case.exception:
                if name == "reference":
                    exception_rows.append((case, out, ok))
                continue
            tally = counts[name][case.problem_type]
            tally[0] += ok
            tally[1] += 1
            if not ok and name == "reference":
                misses.append((case, out))

    types = list(dict.fromkeys(c.problem_type for c in CASES if not c.exception))
    print(f"{len(CASES)} hand-written cases; agreement with the stated reference rules (all of accuracy, format,")
    print("structure and overall equal), cases outside the documented exceptions:\n")
    print(f"{'problem type':18s}" + "".join(f"{name:>18s}" for name in presets))
    for t in types:
        cells = []
        for name in presets:
            k, n = counts[name][t]
            cells.append(f"{k:>3d}/{n:<3d} {100 * k / n:5.1f}%")
        print(f"{t:18s}" + "".join(f"{c:>18s}" for c in cells))
    for name in presets:
        k = sum(v[0] for v in counts[name].values())
        n = sum(v[1] for v in counts[name].values())
        print(f"  {name}: {k}/{n} = {100 * k / n:.1f}% overall")

    print("\nDocumented exceptions (reference deliberately differs from their rule):")
    for key, why in EXCEPTIONS.items():
        print(f"  {key}: {why}")
    for case, out, ok in exception_rows:
        print(
            f"  {case.exception} {case.problem_type:17s} {case.note!r}: theirs acc={case.accuracy:g} "
            f"-> reference acc={out['accuracy']:g} ({'same' if ok else 'differs'})"
        )
    if misses:
        print(f"\n{len(misses)} disagreement(s) of reference outside the exceptions:")
    if args.show_disagreements or misses:
        for case, out in misses:
            print(
                f"  {case.problem_type:17s} {case.note!r}: expected acc/fmt/struct "
                f"{case.accuracy:g}/{case.format:g}/{case.structure:g}, got "
                f"{out['accuracy']:g}/{out['format']:g}/{out['structure']:g}"
            )


if __name__ == "__main__":
    main()
