#!/usr/bin/env python
"""Throughput of ``g2rpo_verl.rewards.compute_score`` per problem type on this machine.

Each problem type gets ``--samples`` responses shaped like a model's (``<think>`` with
``--think-chars`` of reasoning, then ``<answer>``), half right and half wrong, in the
answer forms the scorers accept. Two ways of calling:

* ``sequential``: one call after another on the main thread;
* ``threads``: a ``ThreadPoolExecutor`` of ``--threads`` threads, the way verl's reward
  loop runs a synchronous reward (``loop.run_in_executor(None, ...)``).

It also times the costly paths of the math guard: the first call of a process (starting a
worker) and a pathological expression that hits the time limit (the worker is killed and
replaced). Prints samples/s and the mean accuracy (half the samples are right; the wrong
half earns partial credit where the type has it), which must not change between revisions.

The collapse case (``--junk``): a collapsing policy writes junk for whole batches ("!!!!…",
runs of brackets, power towers). Each problem type scores a batch of well-tagged junk answers
(:data:`JUNK`, ``--junk-repeat`` times) one after another; printed: samples/s and the median,
90th percentile and largest time per sample (targets: ≤ 20 ms, ≤ 50 ms, ≤ 1 s).

``--before REF`` runs the same measurements on the reward code of git revision ``REF`` (its
``g2rpo_verl`` package extracted to a temporary directory, in a subprocess of this Python)
and prints before and after side by side.

Usage: python scripts/bench_rewards.py [--samples 400] [--threads 8] [--think-chars 2000]
                                       [--junk] [--junk-repeat 3] [--before main]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from g2rpo_verl.rewards import compute_score
from g2rpo_verl.rewards.guard import math_pool


def make_samples(problem_type: str, n: int, think_chars: int, seed: int = 0) -> list[tuple]:
    """``[(solution_str, ground_truth, extra_info), ...]`` for one problem type."""
    rng = random.Random(seed)
    words = ["the", "image", "shows", "a", "chart", "with", "bars", "so", "value", "is", "left", "of"]
    out = []
    for i in range(n):
        right = i % 2 == 0
        think = " ".join(rng.choice(words) for _ in range(think_chars // 5))[:think_chars]
        extra = {"problem_type": problem_type}
        if problem_type == "multiple choice":
            truth = rng.choice("ABCD")
            answer = truth if right else rng.choice([c for c in "ABCD" if c != truth])
            answer = rng.choice([answer, f"({answer})", f"{answer}. option text"])
            extra["options"] = ["A. cat", "B. dog", "C. bird", "D. fish"]
        elif problem_type in ("numerical", "regression"):
            value = round(rng.uniform(1, 5000), 2)
            truth = str(value)
            answer = f"{value:,}" if right else str(round(value * rng.uniform(0.5, 1.5), 2))
        elif problem_type == "OCR":
            text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 60)))
            truth = text
            answer = text if right else " ".join(w for w in text.split() if rng.random() > 0.3)
        elif problem_type == "math":
            a, b = rng.randint(1, 50), rng.randint(2, 50)
            truth = rng.choice([f"\\frac{{{a}}}{{{b}}}", f"{a}\\sqrt{{{b}}}", f"x^2 + {a}x + {b}", f"{a}"])
            forms = {
                f"\\frac{{{a}}}{{{b}}}": f"{a}/{b}",
                f"{a}\\sqrt{{{b}}}": f"\\sqrt{{{b}}} \\cdot {a}",
                f"x^2 + {a}x + {b}": f"{b} + {a}x + x^2",
                f"{a}": f"\\boxed{{{a}}}",
            }
            answer = forms[truth] if right else f"{a + 1}/{b}"
        elif problem_type == "spatial grounding":
            x, y = rng.randint(0, 800), rng.randint(0, 800)
            box = [x, y, x + rng.randint(20, 200), y + rng.randint(20, 200)]
            truth = json.dumps({"boxes": box})
            jitter = 0 if right else rng.randint(10, 100)
            answer = json.dumps({"boxes": [v + jitter for v in box]})
        else:  # free-form
            truth = rng.choice(["Paris", "a red car", "two"])
            answer = truth if right else "unknown"
        out.append((f"<think>{think}</think><answer>{answer}</answer>", truth, extra))
    return out


TYPES = ["multiple choice", "numerical", "regression", "OCR", "math", "spatial grounding", "free-form"]
TRUTHS = {
    "multiple choice": "B",
    "numerical": "15",
    "regression": "3.5",
    "OCR": "hello world",
    "math": "\\frac{1}{2}",
    "spatial grounding": '{"boxes": [120, 40, 560, 910]}',
    "free-form": "Paris",
}
#: what a collapsing policy writes inside its answer tags: runs of one character or bracket,
#: bracket soup, power towers and huge factorials, long digit strings
JUNK = [
    "!" * 40,
    "!" * 400,
    "?" * 200,
    "." * 400,
    "[[" * 50,
    "(" * 300,
    ")" * 300,
    "[" * 1000,
    "([{" * 100,
    "{}" * 200,
    "((((((((((1))))))))))",
    "\\sqrt{" * 200,
    "\\frac{" * 100,
    "x^" * 300,
    "(1)^" * 200 + "1",
    "9^{9^{9^9}}",
    "(10^{10})!",
    "10^{10^{10}}",
    "2^{2^{2^{2^{2^{2}}}}}",
    "1000000!",
    "1" * 500,
    "9" * 1500,
    "1234567890" * 30,
    "x" * 3000,
    "x" * 1900,
    "xy" * 900,
    "a b " * 500,
    "B" * 2000,
    "x ** " * 300,
    "9**9**9**9",
    "**" * 500,
    '{"boxes": ' * 300,
    "[" * 5000,
    "1," * 1000,
    "<answer>" * 300,
    "</thinking><answer>" * 300,
    # long repetitive text (a policy that loops): numbers separated by spaces are quadratic for
    # math-verify's extraction when it reads a text as written
    "1 " * 4000,
    "12 " * 3000,
    "1+" * 20000 + "1",
    "the answer is 1. " * 3000,
    "$x$ " * 5000,
    "x" * 3000,
]
#: how the junk is put into a response (``{t}``: the preset's think tag): a well-tagged answer,
#: an answer block left open (the collapsed policy stops mid-answer), and no tags at all
JUNK_TEMPLATES = {
    "tagged": "<{t}>r</{t}><answer>{j}</answer>",
    "unclosed": "<{t}>ok</{t}><answer>{j}",
    "untagged": "{j}",
}


def run(samples: list[tuple], threads: int) -> tuple[float, float]:
    """``(seconds, mean accuracy)`` of scoring all samples (threads=0: sequential here)."""
    t0 = time.perf_counter()
    if threads <= 0:
        outs = [compute_score("bench", sol, truth, extra) for sol, truth, extra in samples]
    else:
        with ThreadPoolExecutor(threads) as pool:
            outs = list(pool.map(lambda s: compute_score("bench", s[0], s[1], s[2]), samples))
    return time.perf_counter() - t0, sum(o["accuracy"] for o in outs) / len(outs)


def junk_batch(problem_type: str, repeat: int, template: str = "<think>r</think><answer>{}</answer>", **kwargs) -> dict:
    """Score ``repeat`` x :data:`JUNK` (each put into ``template``) one by one."""
    times = []
    worst = (0.0, "")
    for _ in range(repeat):
        for junk in JUNK:
            text = template.replace("{}", junk)
            t0 = time.perf_counter()
            compute_score("bench", text, TRUTHS[problem_type], {"problem_type": problem_type}, **kwargs)
            dt = time.perf_counter() - t0
            times.append(dt)
            worst = max(worst, (dt, text))
    times.sort()
    w = worst[1]
    return {
        "worst": (w if len(w) <= 60 else f"{w[:40]!r}… ({len(w)} chars)"),
        "per_s": len(times) / sum(times),
        "median_ms": 1e3 * statistics.median(times),
        "p90_ms": 1e3 * times[min(len(times) - 1, int(0.9 * len(times)))],
        "max_ms": 1e3 * times[-1],
    }


def measure(args) -> dict:
    """Every measurement of this run as one dict (printed as JSON with --json)."""
    import g2rpo_verl

    pool = math_pool()
    out: dict = {"package": str(Path(g2rpo_verl.__file__).parent), "workers": pool.max_workers}
    first = ("bench", "<answer>0.5</answer>", "\\frac{1}{2}", {"problem_type": "math"})  # reaches math-verify
    t0 = time.perf_counter()
    compute_score(*first)
    out["cold_ms"] = 1e3 * (time.perf_counter() - t0)
    # 9^(9^9) reaches math-verify (the pre-checks, where present, are told to let it through)
    # and runs into the 1 s limit: the worker is killed and replaced
    t0 = time.perf_counter()
    slow = compute_score(
        "bench", "<answer>9^{9^{9}}</answer>", "2", {"problem_type": "math"}, math_timeout_s=1.0, max_math_digits=10**9
    )
    out["timeout_s"] = time.perf_counter() - t0
    out["timeout_failure"] = slow["reward_failure"]
    t0 = time.perf_counter()
    compute_score(*first)
    out["respawn_ms"] = 1e3 * (time.perf_counter() - t0)
    out["valid"] = {}
    for problem_type in TYPES if args.samples > 0 else []:
        samples = make_samples(problem_type, args.samples, args.think_chars)
        run(samples[:10], 0)  # warm caches (imports, jiwer, scipy)
        seq, acc = run(samples, 0)
        thr, _ = run(samples, args.threads)
        out["valid"][problem_type] = {"seq_per_s": len(samples) / seq, "thr_per_s": len(samples) / thr, "accuracy": acc}
    out["junk"] = {t: junk_batch(t, args.junk_repeat) for t in TYPES} if args.junk else {}
    import g2rpo_verl.rewards as rewards

    if args.junk and hasattr(rewards, "PRESETS"):  # revisions with presets: every preset and junk shape
        out["junk_presets"] = {
            f"{preset}/{kind}": {
                t: junk_batch(t, args.junk_repeat, template.replace("{t}", tag).replace("{j}", "{}"), preset=preset)
                for t in TYPES
            }
            for preset, tag in (("strict", "think"), ("reference", "thinking"))
            for kind, template in JUNK_TEMPLATES.items()
        }
    out["pool"] = dict(pool.stats)
    return out


def measure_revision(ref: str, args) -> dict:
    """:func:`measure` on the ``g2rpo_verl`` package of git revision ``ref`` (a subprocess)."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bench_rewards_") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", ref, "g2rpo_verl"], check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--json",
            "--samples",
            str(args.samples),
            "--threads",
            str(args.threads),
            "--think-chars",
            str(args.think_chars),
            "--junk-repeat",
            str(args.junk_repeat),
        ]
        if args.junk:
            argv.append("--junk")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([tmp, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0:
            raise SystemExit(f"bench of {ref} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if not result["package"].startswith(tmp):
            raise SystemExit(f"bench of {ref} imported {result['package']} instead of the extracted revision")
        result["package"] = f"{ref} ({result['package']})"
        return result


def report(results: dict[str, dict]) -> None:
    """Print one or more :func:`measure` results side by side (columns: their names)."""
    names = list(results)
    first = results[names[0]]
    print(f"cpu_count={os.cpu_count()}  math workers={first['workers']}")
    for name, r in results.items():
        print(
            f"[{name}] {r['package']}: math first call (starts a worker) {r['cold_ms']:.0f} ms; 9^(9^9) with "
            f"math_timeout_s=1 -> {r['timeout_s']:.2f} s, reward_failure={r['timeout_failure']:.0f}; next call "
            f"(replacement worker) {r['respawn_ms']:.0f} ms; pool {r['pool']}"
        )
    if first["valid"]:
        print("\nvalid answers (half right, half wrong): samples/s sequential | threads, mean accuracy")
        print(f"{'problem type':18s}" + "".join(f"{n:>34s}" for n in names))
        for t in first["valid"]:
            cells = []
            for n in names:
                v = results[n]["valid"][t]
                cells.append(f"{v['seq_per_s']:8.0f} |{v['thr_per_s']:7.0f}   acc {v['accuracy']:.2f}")
            print(f"{t:18s}" + "".join(f"{c:>34s}" for c in cells))
    if first["junk"]:
        print(f"\ncollapse case: {len(JUNK)} junk answers per batch, scored one by one")
        print(f"{'problem type':18s}" + "".join(f"{n + ': /s  median  p90   max ms':>40s}" for n in names))
        for t in first["junk"]:
            cells = []
            for n in names:
                j = results[n]["junk"][t]
                cells.append(f"{j['per_s']:9.1f} {j['median_ms']:7.1f} {j['p90_ms']:6.1f} {j['max_ms']:7.0f}")
            print(f"{t:18s}" + "".join(f"{c:>40s}" for c in cells))
        last = results[names[-1]]
        if "junk_presets" in last:
            print(
                f"\n[{names[-1]}] every preset and junk shape ({', '.join(f'{k}: {v!r}' for k, v in JUNK_TEMPLATES.items())}):"
            )
            print(
                f"{'preset/shape':20s}{'problem type':18s}{'/s':>9s}{'median':>8s}{'p90':>7s}{'max ms':>8s}  worst input"
            )
            all_times = []
            for kind, per_type in last["junk_presets"].items():
                for t, j in per_type.items():
                    all_times.append((j["max_ms"], kind, t, j["worst"]))
                    print(
                        f"{kind:20s}{t:18s}{j['per_s']:9.1f}{j['median_ms']:8.2f}{j['p90_ms']:7.2f}{j['max_ms']:8.0f}  {j['worst']}"
                    )
            top = max(all_times)
            print(
                f"worst single call: {top[0]:.0f} ms ({top[1]}, {top[2]}): {top[3]}; "
                f"largest p90: {max(j['p90_ms'] for v in last['junk_presets'].values() for j in v.values()):.2f} ms"
            )
        if len(names) == 2:
            a, b = (results[n]["junk"] for n in names)
            print(
                "\nspeed-up on junk (samples/s after / before): "
                + ", ".join(f"{t} {b[t]['per_s'] / a[t]['per_s']:.0f}x" for t in a)
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=400, help="valid samples per problem type (0: skip)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--think-chars", type=int, default=2000)
    parser.add_argument("--junk", action="store_true", help="also score batches of junk answers (the collapse case)")
    parser.add_argument("--junk-repeat", type=int, default=3, help="each junk answer this many times per problem type")
    parser.add_argument("--before", metavar="REF", help="also measure git revision REF's reward code, side by side")
    parser.add_argument("--json", action="store_true", help="print the measurements as one JSON line")
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args)))
        return
    results = {}
    if args.before:
        results["before"] = measure_revision(args.before, args)
    results["after" if args.before else "this tree"] = measure(args)
    report(results)


if __name__ == "__main__":
    main()
