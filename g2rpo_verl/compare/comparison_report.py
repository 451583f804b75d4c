"""Summarise a comparison's runs: ``summary.json``, ``report.md`` and plots.

Input: the work directory of ``g2rpo-compare`` with one run per (arm, seed) in
``W/<arm>_seed<s>/`` (each a ``g2rpo-train`` work directory with its merged ``metrics.jsonl``).
Every number in the summary is read from those files:

* per run: each validation step's accuracy and reward per data source
  (``val-core/<source>/acc/mean@N``, ``val-aux/<source>/reward/mean@N``), the *final* values
  (the run's last validation), and per task key the training statistics of the advantages
  (``task_<τ>/advantage/std`` and ``/skew`` averaged over steps, ``max |A|`` = the largest
  ``|advantage/min|`` or ``|advantage/max|`` of any step) and, when gradient diagnostics ran
  (``g2rpo.diagnostics.grad_every``), ``task_<τ>/grad/share`` and ``/grad/norm`` averaged over
  the steps that logged them (:data:`GRAD_STATS`), and each task's share of the response tokens
  (``count · length/mean`` over the step's tokens, averaged over steps: its weight under verl's
  ``token-mean``);
* per run with gradient diagnostics, the *share spread* (:func:`share_spread`): how far the
  tasks' gradient shares are from equal (0 when every task pulls the same);
* per arm: the mean over seeds with a t 95 % interval (:mod:`g2rpo_verl.compare.stats`) of
  every final value, of the mean over tasks and of the worst task (per seed, the lowest final
  accuracy of any task), and of each validation curve point;
* per run and data source: the area under the validation curve (:func:`curve_area`, the
  trapezoid mean over the validated steps — every validation counts, so it is less noisy
  than the last one alone), summarised like the final values;
* per arm after the first: paired differences against the first arm, seed by seed;
* per metric (final and area, per task and the two aggregates): the minimum detectable
  difference at 80 % power for the seeds run (:func:`~g2rpo_verl.compare.stats.minimum_detectable_difference`):
  paired against the baseline for every other arm, unpaired (two arms of this spread) for the baseline.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from g2rpo_verl.compare.stats import (
    LEVEL,
    POWER,
    Interval,
    minimum_detectable_difference,
    paired_difference,
    t_interval,
)
from g2rpo_verl.demo.run_metrics import (
    Metrics,
    load_metrics,
    series,
    task_names,
    validation_sources,
    validation_steps,
    validation_value,
)

__all__ = [
    "Arm",
    "run_dir_name",
    "summarize",
    "write_report",
    "curve_area",
    "token_shares",
    "share_spread",
    "KINDS",
    "ADVANTAGE_STATS",
    "GRAD_STATS",
]

#: Validation quantities compared per data source.
KINDS = ("accuracy", "reward")
#: Per-task advantage statistics (from the trainer's ``task_<τ>/advantage/*`` metrics).
ADVANTAGE_STATS = ("std", "max_abs", "skew")
#: Per-task gradient diagnostics (``task_<τ>/grad/<name>``), present when the runs logged them.
GRAD_STATS = ("share", "norm")
#: Row names of the two aggregates over tasks in the final tables.
MEAN_ROW, WORST_ROW = "mean over tasks", "worst task"


@dataclass(frozen=True)
class Arm:
    """One arm of the comparison: a name (the run-dir prefix) and the overrides it adds."""

    name: str
    overrides: tuple[str, ...]


def run_dir_name(arm: str, seed: int) -> str:
    return f"{arm}_seed{seed}"


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs) if xs else math.nan


def curve_area(points: Mapping[str, float]) -> float | None:
    """Normalised area under a validation curve ``{step: value}``: the trapezoid integral over the
    validated steps divided by their span (a mean over training in the curve's units); the value
    itself for one point, ``None`` for none."""
    xy = sorted((int(k), float(v)) for k, v in points.items())
    if not xy:
        return None
    if len(xy) == 1:
        return xy[0][1]
    area = math.fsum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(xy, xy[1:]))
    return area / (xy[-1][0] - xy[0][0])


def run_summary(metrics: Metrics) -> dict:
    """What the report needs from one run's merged metrics (see the module docstring)."""
    steps = validation_steps(metrics)
    sources = validation_sources(metrics)
    validation = {
        source: {
            kind: {str(step): v for step in steps if (v := validation_value(metrics[step], source, kind)) is not None}
            for kind in KINDS
        }
        for source in sources
    }
    final = {}
    for source, by_kind in validation.items():
        final[source] = {kind: by_kind[kind][str(steps[-1])] for kind in KINDS if str(steps[-1]) in by_kind[kind]}
    train = {}
    for task in task_names(metrics):
        prefix = f"task_{task}"  # task_names() returns the names as they appear in the keys
        _, std = series(metrics, f"{prefix}/advantage/std")
        _, skew = series(metrics, f"{prefix}/advantage/skew")
        _, lo = series(metrics, f"{prefix}/advantage/min")
        _, hi = series(metrics, f"{prefix}/advantage/max")
        _, reward = series(metrics, f"{prefix}/reward/total")
        stats = {
            "std": _mean(std),
            "max_abs": max([abs(v) for v in lo + hi], default=math.nan),
            "skew": _mean(skew),
            "train_reward": _mean(reward),
        }
        for name in GRAD_STATS:
            _, values = series(metrics, f"{prefix}/grad/{name}")
            if values:
                stats[f"grad_{name}"] = _mean(values)
        train[task] = stats
    for task, share in token_shares(metrics, list(train)).items():
        train[task]["token_share"] = share
    auc = {
        source: {kind: a for kind in KINDS if (a := curve_area(by_kind[kind])) is not None}
        for source, by_kind in validation.items()
    }
    return {
        "last_step": max(metrics, default=0),
        "validation_steps": steps,
        "validation": validation,
        "final": final,
        "auc": auc,
        "train": train,
        **({"share_spread": spread} if (spread := share_spread(metrics, list(train))) is not None else {}),
    }


def _per_step(metrics: Metrics, tasks: Sequence[str], key: str) -> dict[int, dict[str, float]]:
    """``{step: {task: value of task_<τ>/<key>}}`` over the steps that logged it for some task."""
    out: dict[int, dict[str, float]] = {}
    for task in tasks:
        for step, value in zip(*series(metrics, f"task_{task}/{key}"), strict=True):
            out.setdefault(step, {})[task] = value
    return out


def token_shares(metrics: Metrics, tasks: Sequence[str]) -> dict[str, float]:
    """Each task's share n_τ / Σ n of the step's response tokens (n_τ = ``count · length/mean``),
    averaged over the steps that logged both for every task present."""
    counts, lengths = _per_step(metrics, tasks, "count"), _per_step(metrics, tasks, "length/mean")
    shares: dict[str, list[float]] = {}
    for step, by_task in counts.items():
        tokens = {t: c * lengths[step][t] for t, c in by_task.items() if t in lengths.get(step, {})}
        total = math.fsum(tokens.values())
        if total > 0 and len(tokens) == len(by_task):
            for t, n in tokens.items():
                shares.setdefault(t, []).append(n / total)
    return {t: _mean(v) for t, v in shares.items()}


def share_spread(metrics: Metrics, tasks: Sequence[str]) -> float | None:
    """Root-mean-square distance of the tasks' gradient shares from equal, ``√(mean_τ (s_τ − 1/T)²)``
    at each step that ran the gradient diagnostics (T = the tasks with a share that step), averaged
    over those steps; 0 = every task pulls equally. ``None`` without diagnostics."""
    spreads = []
    for by_task in _per_step(metrics, tasks, "grad/share").values():
        equal = 1.0 / len(by_task)
        spreads.append(math.sqrt(math.fsum((v - equal) ** 2 for v in by_task.values()) / len(by_task)))
    return _mean(spreads) if spreads else None


def summarize(
    workdir: Path, arms: Sequence[Arm], seeds: Sequence[int], wall_times: Mapping[str, float] | None = None
) -> dict:
    """The comparison's summary (JSON-ready); runs without metrics are listed as missing."""
    runs: dict[str, dict] = {}
    missing = []
    for arm in arms:
        for seed in seeds:
            name = run_dir_name(arm.name, seed)
            metrics = load_metrics([workdir / name / "metrics.jsonl"])
            if not validation_steps(metrics):
                missing.append(name)
                continue
            runs[name] = {"arm": arm.name, "seed": seed, **run_summary(metrics)}
            if wall_times and name in wall_times:
                runs[name]["wall_s"] = wall_times[name]
    sources = sorted({s for r in runs.values() for s in r["final"]})
    tasks = sorted({t for r in runs.values() for t in r["train"]})

    def per_seed(arm: str, pick) -> dict[int, float]:
        out = {}
        for r in runs.values():
            if r["arm"] == arm:
                v = pick(r)
                if v is not None and math.isfinite(v):
                    out[r["seed"]] = v
        return out

    def picks_of(table: str) -> dict:
        """(row, kind) -> per-run value of ``r[table]`` (per source, the mean over tasks, the worst task)."""

        def one(source, kind):
            return lambda r: r[table].get(source, {}).get(kind)

        def mean(kind):
            return lambda r: _mean([r[table][s][kind] for s in sources if kind in r[table].get(s, {})])

        def worst(kind):
            return lambda r: min((r[table][s][kind] for s in sources if kind in r[table].get(s, {})), default=None)

        picks = {(source, kind): one(source, kind) for source in sources for kind in KINDS}
        picks.update({(MEAN_ROW, kind): mean(kind) for kind in KINDS})
        picks.update({(WORST_ROW, kind): worst(kind) for kind in KINDS})
        return picks

    baseline = arms[0].name if arms else None
    tables: dict[str, dict] = {}
    for table in ("final", "auc"):
        values: dict[str, dict] = {}
        paired_t: dict[str, dict] = {}
        mde: dict[str, dict] = {}
        for arm in arms:
            values[arm.name], mde[arm.name] = {}, {}
            for (row, kind), pick in picks_of(table).items():
                mine = per_seed(arm.name, pick)
                values[arm.name].setdefault(row, {})[kind] = t_interval(list(mine.values())).to_dict()
                if arm.name == baseline:
                    mde[arm.name].setdefault(row, {})[kind] = minimum_detectable_difference(
                        list(mine.values()), paired=False
                    )
                    continue
                base = per_seed(baseline, pick)
                diff = paired_difference(mine, base)
                paired_t.setdefault(arm.name, {}).setdefault(row, {})[kind] = diff.to_dict()
                mde[arm.name].setdefault(row, {})[kind] = minimum_detectable_difference(list(diff.values))
        tables[table] = {"values": values, "paired": paired_t, "mde": mde}
    final = tables["final"]["values"]
    paired = tables["final"]["paired"]

    worst_task = {}
    for arm in arms:
        means = {s: final[arm.name][s]["accuracy"]["mean"] for s in sources}
        means = {s: m for s, m in means.items() if math.isfinite(m)}
        worst_task[arm.name] = min(means, key=means.get) if means else None

    curves: dict[str, dict] = {}
    for arm in arms:
        arm_runs = [r for r in runs.values() if r["arm"] == arm.name]
        steps = sorted({int(s) for r in arm_runs for s in r["validation_steps"]})
        curves[arm.name] = {}
        for source in sources:
            for kind in KINDS:
                points = {}
                for step in steps:
                    values = [
                        r["validation"][source][kind][str(step)]
                        for r in arm_runs
                        if str(step) in r["validation"].get(source, {}).get(kind, {})
                    ]
                    if values:
                        points[str(step)] = t_interval(values).to_dict()
                curves[arm.name].setdefault(source, {})[kind] = points

    spread: dict[str, dict] = {}
    base_spread = per_seed(baseline, lambda r: r.get("share_spread"))
    for arm in arms:
        mine = per_seed(arm.name, lambda r: r.get("share_spread"))
        if not mine:
            continue
        spread[arm.name] = {"values": t_interval(list(mine.values())).to_dict()}
        if arm.name != baseline:
            diff = paired_difference(mine, base_spread)
            spread[arm.name]["paired"] = diff.to_dict()
            spread[arm.name]["mde"] = minimum_detectable_difference(list(diff.values))

    advantage: dict[str, dict] = {}
    for arm in arms:
        advantage[arm.name] = {}
        for task in tasks:
            row = {}
            for stat in (*ADVANTAGE_STATS, "train_reward", "token_share", *(f"grad_{n}" for n in GRAD_STATS)):
                values = per_seed(arm.name, lambda r, t=task, k=stat: r["train"].get(t, {}).get(k))
                if values:
                    row[stat] = t_interval(list(values.values())).to_dict()
            advantage[arm.name][task] = row

    return {
        "level": LEVEL,
        "interval": "Student t over seeds",
        "arms": [{"name": a.name, "overrides": list(a.overrides)} for a in arms],
        "baseline": baseline,
        "seeds": list(seeds),
        "sources": sources,
        "tasks": tasks,
        "missing_runs": missing,
        "runs": runs,
        "power": POWER,
        "final": final,
        "paired_vs_baseline": paired,
        "auc": tables["auc"]["values"],
        "paired_auc_vs_baseline": tables["auc"]["paired"],
        "mde": {"final": tables["final"]["mde"], "auc": tables["auc"]["mde"]},
        "worst_task": worst_task,
        "curves": curves,
        "advantage": advantage,
        "share_spread": spread,
    }


def _iv(d: Mapping | None) -> Interval | None:
    if not d:
        return None
    return Interval(d["mean"], d["low"], d["high"], d["n"], tuple(d["values"]))


def _arm_table(values: Mapping, arms: Sequence[str], rows: Sequence[str], kind: str) -> list[str]:
    """Markdown lines: one row per task, one column per arm, ``values[arm][row][kind]``, then a blank line."""
    out = ["| task | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for row in rows:
        out.append(f"| {row} | " + " | ".join(_cell(values[a].get(row, {}).get(kind)) for a in arms) + " |")
    return out + [""]


def _paired_table(paired: Mapping, baseline: str, paired_arms: Sequence[str], rows: Sequence[str]) -> list[str]:
    """Markdown lines: one row per task, a column per (arm, kind) of ``paired[arm][row][kind]``, then a blank line."""
    header = " | ".join(f"{a} − {baseline}: {kind}" for a in paired_arms for kind in KINDS)
    out = [f"| task | {header} |", "|---" * (1 + len(paired_arms) * len(KINDS)) + "|"]
    for row in rows:
        cells = [_cell(paired[a].get(row, {}).get(kind), mark_zero=True) for a in paired_arms for kind in KINDS]
        out.append(f"| {row} | " + " | ".join(cells) + " |")
    return out + [""]


def _cell(d: Mapping | None, mark_zero: bool = False) -> str:
    iv = _iv(d)
    if iv is None:
        return "—"
    text = iv.format()
    return f"**{text}**" if mark_zero and iv.excludes_zero else text


def render_markdown(summary: Mapping, command: str | None = None) -> str:
    """``report.md`` of ``summary`` (see :func:`summarize`)."""
    arms = [a["name"] for a in summary["arms"]]
    rows = [*summary["sources"], MEAN_ROW, WORST_ROW]
    pct = round(summary["level"] * 100)
    out = ["# Estimator comparison", ""]
    if command:
        out += ["Command:", "", f"    {command}", ""]
    out += [
        f"Arms: {', '.join(f'`{a}`' for a in arms)} (baseline of the paired differences: `{summary['baseline']}`); "
        f"seeds {', '.join(map(str, summary['seeds']))}.",
        "",
        f"Every value is the mean over seeds with its {pct} % Student-t interval `[low, high]` "
        "(no interval with fewer than 2 seeds). *Final* is each run's last validation. "
        f"*{WORST_ROW}*: per seed the lowest final accuracy (reward) of any task, then averaged. "
        "Paired differences are taken seed by seed against the baseline (same model, data and seed); "
        "**bold**: the interval excludes 0.",
        "",
    ]
    for name, overrides in ((a["name"], a["overrides"]) for a in summary["arms"]):
        out.append(f"- `{name}`: {' '.join(f'`{o}`' for o in overrides) or '(no extra overrides)'}")
    out.append("")
    if summary["missing_runs"]:
        out += [f"Missing runs (no validation metrics): {', '.join(summary['missing_runs'])}", ""]
    for kind in KINDS:
        out += [f"## Final validation {kind}", ""] + _arm_table(summary["final"], arms, rows, kind)
    paired_arms = [a for a in arms if a != summary["baseline"]]
    if paired_arms:
        out += [f"## Paired differences against `{summary['baseline']}`", ""]
        out += _paired_table(summary["paired_vs_baseline"], summary["baseline"], paired_arms, rows)
    if summary.get("auc"):
        out += [
            "## Area under the validation curve",
            "",
            "Per run and task: the trapezoid area under the validation curve divided by the validated span "
            "(the curve's mean over training, every validation counted), then mean over seeds [interval].",
            "",
        ]
        for kind in KINDS:
            out += [f"### {kind}", ""] + _arm_table(summary["auc"], arms, rows, kind)
        if paired_arms:
            out += [f"### Paired differences of the area against `{summary['baseline']}`", ""]
            out += _paired_table(summary["paired_auc_vs_baseline"], summary["baseline"], paired_arms, rows)
    if summary.get("mde"):
        power = round(summary.get("power", 0.8) * 100)
        out += [
            f"## Minimum detectable difference ({power} % power, {pct} % two-sided, {len(summary['seeds'])} seeds)",
            "",
            "The smallest true accuracy difference these seeds would detect with that power: for each arm "
            f"after `{summary['baseline']}` from the spread of its paired differences, for `{summary['baseline']}` "
            "itself for two independent arms of its spread (`(t_{1−α/2} + t_{power}) · s · √(k/n)`, "
            "g2rpo_verl/compare/stats.py). A difference smaller than this is not evidence either way.",
            "",
        ]
        header = " | ".join(f"{a}: {t}" for a in arms for t in ("final", "area"))
        out += [f"| task | {header} |", "|---" * (1 + 2 * len(arms)) + "|"]
        for row in rows:
            cells = []
            for a in arms:
                for table in ("final", "auc"):
                    v = summary["mde"].get(table, {}).get(a, {}).get(row, {}).get("accuracy")
                    cells.append("—" if v is None or not math.isfinite(v) else f"{v:.3f}")
            out.append(f"| {row} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["## Worst task (lowest mean final accuracy)", ""]
    out += [f"- `{a}`: {summary['worst_task'].get(a) or '—'}" for a in arms]
    out.append("")
    out += [
        "## Advantages per task (training)",
        "",
        "Per run: `std` and `skew` of the advantages averaged over steps, `max_abs` the largest |A| of any "
        "step; then mean over seeds [interval]. `train_reward`: mean training reward over steps.",
        "",
    ]
    has_share = any("grad_share" in row for by_task in summary["advantage"].values() for row in by_task.values())
    stats = [*ADVANTAGE_STATS, "train_reward", "token_share"] + ([f"grad_{n}" for n in GRAD_STATS] if has_share else [])
    out += ["| task | arm | " + " | ".join(stats) + " |", "|---" * (2 + len(stats)) + "|"]
    for task in summary["tasks"]:
        for a in arms:
            row = summary["advantage"][a].get(task, {})
            out.append(f"| {task} | {a} | " + " | ".join(_cell(row.get(s)) for s in stats) + " |")
    out.append("")
    if has_share:
        out += [
            "`grad_share`: the task's projection share g_τ·g/‖g‖² of the policy gradient g = Σ_τ g_τ (the shares "
            "of a step sum to 1; negative = the task pulls against the update), `grad_norm`: ‖g_τ‖ before "
            "clipping; both averaged over the steps that ran the gradient diagnostics. `token_share`: the "
            "task's share of the step's response tokens (its weight under verl's `token-mean`), averaged over steps.",
            "",
        ]
        if summary.get("share_spread"):
            out += [
                "### Gradient equity: how far the tasks' gradient shares are from equal",
                "",
                "Per run: √(mean_τ (share_τ − 1/T)²) at each diagnosed step, averaged over those steps "
                "(0 = every task pulls equally; g2rpo_verl/compare/comparison_report.py `share_spread`), "
                f"then mean over seeds [interval]; paired against `{summary['baseline']}` seed by seed, "
                "with the minimum detectable difference.",
                "",
                f"| arm | share spread | − {summary['baseline']} (paired) | minimum detectable difference |",
                "|---|---|---|---|",
            ]
            for a in arms:
                row = summary["share_spread"].get(a)
                if row is None:
                    continue
                mde = row.get("mde")
                mde_text = "—" if mde is None or not math.isfinite(mde) else f"{mde:.3f}"
                out.append(
                    f"| {a} | {_cell(row['values'])} | {_cell(row.get('paired'), mark_zero=True)} | {mde_text} |"
                )
            out.append("")
    else:
        out += [
            "Per-task gradient share: not measured in these runs (add `++g2rpo.diagnostics.grad_every=K` to log it).",
            "",
        ]
    out += ["## Runs", "", "| run | last step | validations | wall time |", "|---|---|---|---|"]
    for name, r in summary["runs"].items():
        wall = f"{r['wall_s']:.0f} s" if "wall_s" in r else "—"
        out.append(f"| {name} | {r['last_step']} | {len(r['validation_steps'])} | {wall} |")
    out += ["", "Plots: `plots/validation.png` (curves over steps, mean and interval band), `plots/final.png`.", ""]
    return "\n".join(out)


def draw_plots(summary: Mapping, plots_dir: Path) -> list[Path]:
    """``validation.png`` (per task and kind, mean curve and interval band per arm) and ``final.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    arms = [a["name"] for a in summary["arms"]]
    sources = summary["sources"]
    paths = []
    if sources:
        fig, axes = plt.subplots(len(sources), len(KINDS), figsize=(5 * len(KINDS), 2.6 * len(sources)), squeeze=False)
        for i, source in enumerate(sources):
            for j, kind in enumerate(KINDS):
                ax = axes[i][j]
                for k, arm in enumerate(arms):
                    points = summary["curves"][arm].get(source, {}).get(kind, {})
                    if not points:
                        continue
                    steps = sorted(points, key=int)
                    x = [int(s) for s in steps]
                    mean = [points[s]["mean"] for s in steps]
                    color = f"C{k}"
                    ax.plot(x, mean, marker="o", ms=3, color=color, label=arm)
                    lo = [points[s]["low"] for s in steps]
                    hi = [points[s]["high"] for s in steps]
                    if all(math.isfinite(v) for v in lo + hi):
                        ax.fill_between(x, lo, hi, color=color, alpha=0.15)
                ax.set_title(f"{source}: validation {kind}", fontsize=9)
                ax.set_xlabel("step", fontsize=8)
                ax.tick_params(labelsize=7)
                if i == 0 and j == 0:
                    ax.legend(fontsize=7)
        fig.tight_layout()
        path = plots_dir / "validation.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    rows = [*sources, MEAN_ROW, WORST_ROW]
    fig, axes = plt.subplots(1, len(KINDS), figsize=(6 * len(KINDS), 3.5), squeeze=False)
    width = 0.8 / max(len(arms), 1)
    for j, kind in enumerate(KINDS):
        ax = axes[0][j]
        for k, arm in enumerate(arms):
            ivs = [_iv(summary["final"][arm].get(row, {}).get(kind)) for row in rows]
            means = [iv.mean if iv else math.nan for iv in ivs]
            err = [
                [iv.mean - iv.low if iv and math.isfinite(iv.low) else 0 for iv in ivs],
                [iv.high - iv.mean if iv and math.isfinite(iv.high) else 0 for iv in ivs],
            ]
            ax.bar(
                [r + k * width for r in range(len(rows))], means, width, yerr=err, capsize=2, color=f"C{k}", label=arm
            )
        ax.set_xticks([r + width * (len(arms) - 1) / 2 for r in range(len(rows))])
        ax.set_xticklabels(rows, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"final validation {kind} ({round(summary['level'] * 100)} % t interval)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = plots_dir / "final.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def write_report(workdir: Path, summary: Mapping, command: str | None = None, plots: bool = True) -> list[Path]:
    """Write ``summary.json``, ``report.md`` and (``plots``) the PNGs into ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("summary.json", json.dumps(summary, indent=1, allow_nan=True)),
        ("report.md", render_markdown(summary, command)),
    ):
        path = workdir / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    if plots:
        written += draw_plots(summary, workdir / "plots")
    return written
