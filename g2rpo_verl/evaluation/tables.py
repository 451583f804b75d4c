"""Markdown for ``report.md`` and the console: a metrics table, a comparison table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from g2rpo_verl.evaluation.paired import CONFIDENCE, TaskComparison

__all__ = ["comparison_table", "metrics_table", "render_report"]


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def metrics_table(groups: Mapping[str, Mapping[str, Any]], label: str, n: int = 1) -> list[str]:
    """One markdown row per group (task or data source) of :func:`..metrics.compute_metrics`."""
    extra = [f"mean@{n}", f"pass@{n}"] if n > 1 else []
    head = [
        label,
        "prompts",
        "accuracy",
        *extra,
        "reward",
        "format",
        "structure",
        "length",
        "truncated",
        "failures",
        "IoU",
        "R@0.3",
        "R@0.5",
        "R@0.7",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in groups.items():
        g = m.get("grounding") or {}
        cells = [
            str(name),
            str(m["prompts"]),
            _num(m["accuracy"]),
            *[_num(m.get(k)) for k in extra],
            _num(m["reward"]),
            _num(m["format_rate"]),
            _num(m["structure_rate"]),
            _num(m["response_length"], 1),
            _num(m["truncated_rate"]),
            str(m["reward_failures"]),
            _num(g.get("mean_iou")),
            *[_num(g.get(f"R@{t}")) for t in (0.3, 0.5, 0.7)],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def comparison_table(rows: Sequence[TaskComparison], a: str = "A", b: str = "B") -> list[str]:
    """Markdown rows ``task | prompts | acc a | acc b | Δ [CI] | reward a | reward b | Δ [CI]``."""
    pct = f"{CONFIDENCE:.0%}"
    head = [
        "task",
        "prompts",
        f"accuracy {a}",
        f"accuracy {b}",
        f"Δ accuracy [{pct} CI]",
        f"reward {a}",
        f"reward {b}",
        f"Δ reward [{pct} CI]",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        acc, rew = row.accuracy, row.reward
        prompts = f"{row.prompts}" + (f" (+{row.unpaired} unpaired)" if row.unpaired else "")
        cells = [
            row.task,
            prompts,
            _num(acc.a),
            _num(acc.b),
            f"{acc.delta:+.3f} [{acc.low:+.3f}, {acc.high:+.3f}]",
            _num(rew.a if rew else None),
            _num(rew.b if rew else None),
            f"{rew.delta:+.3f} [{rew.low:+.3f}, {rew.high:+.3f}]" if rew else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_report(metrics: Mapping[str, Any], settings: Mapping[str, Any], wall_s: float | None = None) -> str:
    """``report.md``: settings, then per-task and per-data-source tables."""
    n = int(settings.get("n", 1))
    decoding = (
        "greedy"
        if float(settings.get("temperature", 0)) == 0
        else f"sampled, T={settings['temperature']}, top-p={settings.get('top_p', 1.0)}"
    )
    reward = settings.get("reward", {})
    lines = [
        f"# Evaluation of `{settings.get('model')}`",
        "",
        f"- data: {', '.join(f'`{d}`' for d in settings.get('data', []))}",
        f"- decoding: {decoding}, n={n}, max_new_tokens={settings.get('max_new_tokens')}",
        f"- reward: `{reward.get('path')}:{reward.get('name')}` with kwargs `{reward.get('kwargs', {})}` (from {reward.get('source')})",
        f"- task key: `{settings.get('task_key')}`",
    ]
    if wall_s is not None:
        lines.append(f"- wall time of this invocation: {wall_s:.0f} s")
    overall = metrics["overall"]
    lines += [
        "",
        f"Overall: accuracy {_num(overall['accuracy'])}, reward {_num(overall['reward'])} over "
        f"{overall['prompts']} prompts ({overall['samples']} responses).",
        "",
        "## Per task",
        "",
        *metrics_table(metrics["by_task"], "task", n),
        "",
        "## Per data source",
        "",
        *metrics_table(metrics["by_data_source"], "data source", n),
        "",
        "Column definitions: `g2rpo_verl/evaluation/aggregates.py` (docs/evaluation.md).",
        "",
    ]
    return "\n".join(lines)
