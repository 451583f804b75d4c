"""PNG plots of a demo run: per-task curves, and GRPO vs G²RPO advantages on the same batches.

* :func:`plot_training_curves` -> ``training_curves.png``, six panels over training steps,
  one colour per task throughout: training reward (``task_<τ>/reward/total``), validation
  accuracy (``val-core/<data_source>/acc/mean@N``) and reward (``val-aux/<data_source>/reward/
  mean@N``), mean response length (``task_<τ>/length/mean``, with each shaped task's moving
  edge dashed: the floor ``length/bound_b`` a reasoning task's length is pulled above, its
  plateau up to ``bound_c`` shaded, and the ceiling ``bound_c`` a perception task's is pulled below),
  token entropy (``task_<τ>/entropy``, with each task's band from ``entropy/band_low..high``,
  one grey band when all tasks share it) and the share of structured answers
  (``task_<τ>/reward/structure`` / 0.5). Legends carry each task's share of the last 20 steps in
  band and its length change (:func:`g2rpo_verl.demo.run_metrics.task_shaping`).
* :func:`plot_advantages` -> ``advantages.png``, one histogram panel per task: the advantages
  verl's ``grpo`` (``compute_grpo_outcome_advantage``) and G²RPO (``gs_grpo_advantages``) give
  the same rewards, every dumped training batch (``DIR/rollouts/<step>.jsonl``) computed on its
  own as the trainer would and the results pooled. Groups are the dump's uids, tasks are
  recovered from the prompt text (:func:`g2rpo_verl.demo.tasks.task_of_prompt`).

matplotlib runs headless (Agg); nothing is shown on screen.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from g2rpo_verl.demo.run_metrics import IN_BAND_WINDOW, Metrics, series, task_names, task_shaping, validation_sources

__all__ = [
    "RolloutBatch",
    "advantages_by_task",
    "draw_all",
    "load_rollout_batches",
    "plot_advantages",
    "plot_training_curves",
]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _task_of_source() -> dict[str, str]:
    """data_source -> task-key value (problem_type) of the demo tasks, for matching colours."""
    from g2rpo_verl.demo.tasks import TASKS

    return {source: spec.problem_type for source, spec in TASKS.items()}


def _metric_task(task: str) -> str:
    return task.replace(" ", "_")


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over ``window`` points (the first points average what exists)."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or len(v) == 0:
        return v
    csum = np.cumsum(np.insert(v, 0, 0.0))
    out = np.empty_like(v)
    for i in range(len(v)):
        lo = max(0, i + 1 - window)
        out[i] = (csum[i + 1] - csum[lo]) / (i + 1 - lo)
    return out


def plot_training_curves(
    metrics: Metrics,
    out_path: Path,
    entropy_band: tuple[float, float] | None = None,
    title: str = "",
    smooth: int = 5,
) -> Path:
    """Draw the six-panel per-task figure (see module docstring); returns ``out_path``."""
    plt = _pyplot()
    metric_tasks = task_names(metrics)  # underscores instead of spaces (metric-name form)
    task_of_source = {s: _metric_task(t) for s, t in _task_of_source().items()}
    color = {task: _COLORS[i % len(_COLORS)] for i, task in enumerate(metric_tasks)}
    fig, axes = plt.subplots(2, 3, figsize=(17, 8.5), constrained_layout=True)

    shaping = {task: task_shaping(metrics, task) for task in metric_tasks}

    def per_task_panel(ax, name: str, ylabel: str, heading: str, scale: float = 1.0, note=None) -> None:
        for task in metric_tasks:
            steps, values = series(metrics, f"task_{task}/{name}")
            if not steps:
                continue
            values = [v * scale for v in values]
            if smooth > 1:
                ax.plot(steps, values, color=color[task], alpha=0.2, linewidth=1)
            label = task.replace("_", " ") + (note(task) if note else "")
            ax.plot(steps, _smooth(values, smooth), color=color[task], linewidth=2, label=label)
        ax.set_title(heading)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)

    def validation_panel(ax, prefix: str, metric: str, ylabel: str, heading: str) -> None:
        samples = ""
        for source in validation_sources(metrics):
            key = next(
                (k for data in metrics.values() for k in data if k.startswith(f"{prefix}/{source}/{metric}/mean@")),
                None,
            )
            if key is None:
                continue
            steps, values = series(metrics, key)
            task = task_of_source.get(source)
            label = f"{task.replace('_', ' ')} ({source})" if task else source
            ax.plot(steps, values, marker="o", linewidth=2, color=color.get(task), label=label)
            samples = key.rsplit("/", 1)[-1]  # mean@N: mean over N samples per prompt
        if samples:
            heading = f"{heading} ({samples})"
        ax.set_title(heading)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)

    smoothing = f" (faint: per step, bold: mean of {smooth})" if smooth > 1 else ""
    per_task_panel(axes[0, 0], "reward/total", "reward", "training reward per task" + smoothing)
    validation_panel(axes[0, 1], "val-core", "acc", "accuracy", "validation accuracy per task")
    validation_panel(axes[0, 2], "val-aux", "reward", "reward", "validation reward per task")
    axes[0, 1].set_ylim(-0.02, 1.02)

    def length_note(task: str) -> str:
        r = shaping[task]
        if r.length_first is None:
            return ""
        return f" ({r.profile or 'unshaped'}: {r.length_first:.1f} -> {r.length_last:.1f})"

    def band_note(task: str) -> str:
        r = shaping[task]
        return "" if r.in_band_last is None else f" (in band {r.in_band_last:.0%} of last {IN_BAND_WINDOW})"

    per_task_panel(axes[1, 0], "length/mean", "tokens", "mean response length per task", note=length_note)
    _draw_length_bounds(axes[1, 0], metrics, metric_tasks, color)
    per_task_panel(axes[1, 1], "entropy", "nats / token", "token entropy per task", note=band_note)
    _draw_entropy_bands(axes[1, 1], metrics, metric_tasks, color, entropy_band)
    # the structure component is 0 or 0.5 per answer (g2rpo_verl.rewards): twice its mean is
    # the share of answers in the structure the task asks for
    per_task_panel(
        axes[1, 2], "reward/structure", "share of answers", "answers with the structure the task asks for", scale=2.0
    )
    axes[1, 2].set_ylim(-0.02, 1.02)
    for ax in axes.flat:
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=8, loc="best")
    return _save(fig, out_path, title)


def _draw_length_bounds(ax, metrics: Metrics, tasks: Sequence[str], color: Mapping[str, str]) -> None:
    """Each shaped task's moving edge dashed, a reasoning plateau [b, c] shaded (neutral tasks: nothing)."""
    for task in tasks:
        _, direction = series(metrics, f"task_{task}/length/direction")
        if not direction or direction[-1] == 0:
            continue
        steps_b, b = series(metrics, f"task_{task}/length/bound_b")
        steps_c, c = series(metrics, f"task_{task}/length/bound_c")
        if not steps_b or steps_b != steps_c:
            continue
        if direction[-1] > 0:  # a perception plateau is everything under its ceiling: no fill
            ax.fill_between(steps_b, b, c, color=color[task], alpha=0.07, linewidth=0)
        edge = b if direction[-1] > 0 else c
        ax.plot(steps_b, edge, color=color[task], linestyle="--", linewidth=1, alpha=0.8)
    ax.plot(
        [], [], color="grey", linestyle="--", linewidth=1, label="moving edge (reasoning floor / perception ceiling)"
    )


def _draw_entropy_bands(ax, metrics: Metrics, tasks: Sequence[str], color, fallback) -> None:
    """Each task's band from its metrics: the band most tasks share shaded grey, any other dashed in its task's colour."""
    bands = {}
    for task in tasks:
        _, low = series(metrics, f"task_{task}/entropy/band_low")
        _, high = series(metrics, f"task_{task}/entropy/band_high")
        if low and high:
            bands[task] = (low[-1], high[-1])
    if not bands and fallback is not None:
        bands = {None: tuple(fallback)}
    if not bands:
        return
    common, shared = Counter(bands.values()).most_common(1)[0]
    if shared < 2 and len(bands) > 1:
        common = None  # every task has its own band (band_rule=start): no shared band to shade
    others = {task: band for task, band in bands.items() if band != common}
    if common is not None:
        ax.axhspan(
            *common,
            color="grey",
            alpha=0.12,
            label=f"band [{common[0]:g}, {common[1]:g}]" + (" (other tasks)" if others else ""),
        )
    for task, (low, high) in others.items():
        for y in (low, high):
            ax.axhline(y, color=color[task], linestyle="--", linewidth=1, alpha=0.8)
        ax.plot(
            [],
            [],
            color=color[task],
            linestyle="--",
            linewidth=1,
            label=f"{task.replace('_', ' ')} band [{low:.2g}, {high:.2g}]",
        )


class RolloutBatch:
    """One dumped training batch: per-sample score, prompt-group label and task name."""

    def __init__(self, step: int, scores: list[float], groups: list[str], tasks: list[str]) -> None:
        self.step, self.scores, self.groups, self.tasks = step, scores, groups, tasks

    def __len__(self) -> int:
        return len(self.scores)


def load_rollout_batches(rollout_dir: Path, task_of_prompt) -> list[RolloutBatch]:
    """verl's rollout dumps (``<step>.jsonl``: input, output, score, uid ``<group>_<i>_<j>``) as batches.

    Samples whose task ``task_of_prompt(input)`` cannot name are dropped.
    """
    batches = []
    for path in sorted(rollout_dir.glob("*.jsonl"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1):
        if not path.stem.isdigit():
            continue
        scores, groups, tasks = [], [], []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                score = float(record["score"])
                group = str(record["uid"]).rsplit("_", 2)[0]
            except (ValueError, KeyError, TypeError):
                continue
            task = task_of_prompt(str(record.get("input", "")))
            if task is None or not math.isfinite(score):
                continue
            scores.append(score)
            groups.append(group)
            tasks.append(task)
        if scores:
            batches.append(RolloutBatch(int(path.stem), scores, groups, tasks))
    return batches


def advantages_by_task(batches: Iterable[RolloutBatch]) -> dict[str, dict[str, np.ndarray]]:
    """``{task: {"GRPO": adv, "G²RPO": adv}}`` pooled over ``batches``, each batch computed alone.

    GRPO is verl's ``compute_grpo_outcome_advantage`` (group mean/std, ``norm_adv_by_std_in_grpo``
    on); G²RPO is :func:`g2rpo_verl.gs_grpo_advantages` with the batch's tasks as task ids.
    """
    import torch
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    from g2rpo_verl import gs_grpo_advantages

    pooled: dict[str, dict[str, list[np.ndarray]]] = {}
    for batch in batches:
        scores = torch.tensor(batch.scores, dtype=torch.float32)
        mask = torch.ones(len(batch), 1)
        grpo, _ = compute_grpo_outcome_advantage(
            token_level_rewards=scores.unsqueeze(-1), response_mask=mask, index=np.array(batch.groups, dtype=object)
        )
        group_ids = torch.tensor(_codes(batch.groups))
        task_ids = torch.tensor(_codes(batch.tasks))
        g2 = gs_grpo_advantages(scores, group_ids, task_ids)
        tasks = np.array(batch.tasks, dtype=object)
        for task in sorted(set(batch.tasks)):
            rows = tasks == task
            entry = pooled.setdefault(task, {"GRPO": [], "G²RPO": []})
            entry["GRPO"].append(grpo[:, 0].numpy()[rows])
            entry["G²RPO"].append(g2.reshape(-1).numpy()[rows])
    return {task: {k: np.concatenate(v) for k, v in entry.items()} for task, entry in pooled.items()}


def _codes(labels: Sequence[str]) -> list[int]:
    index: dict[str, int] = {}
    return [index.setdefault(label, len(index)) for label in labels]


def plot_advantages(
    by_task: Mapping[str, Mapping[str, np.ndarray]],
    out_path: Path,
    title: str = "",
    labels: Mapping[str, str] | None = None,
) -> Path:
    """One histogram panel per task plus one of all tasks pooled, GRPO and G²RPO overlaid.

    ``labels`` maps a task name to its panel title. The pooled panel also draws the N(0, 1)
    density that G²RPO transports every task onto, scaled to the histogram.
    """
    plt = _pyplot()
    tasks = sorted(by_task)
    panels = [*tasks, None]  # None: all tasks pooled
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.7 * rows), constrained_layout=True, squeeze=False)
    styles = {"GRPO": ("#7f7f7f", "verl grpo"), "G²RPO": ("#1f77b4", "G²RPO (gs_grpo)")}
    methods = list(styles)
    pooled = {m: np.concatenate([by_task[t][m] for t in tasks]) if tasks else np.zeros(0) for m in methods}
    bins = np.linspace(-3.0, 3.0, 37)
    for ax, task in zip(axes.flat, panels, strict=False):
        values = pooled if task is None else by_task[task]
        for method in methods:
            adv = np.clip(values[method], bins[0], bins[-1])  # the rare |A| > 3 lands in the edge bins
            colour, label = styles[method]
            ax.hist(
                adv,
                bins=bins,
                histtype="stepfilled" if method == "G²RPO" else "step",
                alpha=0.35 if method == "G²RPO" else 1.0,
                linewidth=2,
                color=colour,
                label=f"{label}: std {np.std(values[method]):.2f}, max |A| {np.max(np.abs(values[method])):.2f}",
            )
        n = len(values[methods[0]])
        if task is None:
            grid = np.linspace(bins[0], bins[-1], 200)
            density = np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi) * n * (bins[1] - bins[0])
            ax.plot(grid, density, color="black", linestyle="--", linewidth=1, label="N(0, 1)")
            ax.set_title(f"all tasks: {n} samples")
        else:
            ax.set_title(f"{(labels or {}).get(task, task)}: {n} samples")
        ax.set_xlabel("advantage")
        ax.set_ylabel("samples")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    return _save(fig, out_path, title)


def _save(fig, out_path: Path, title: str | None) -> Path:
    plt = _pyplot()
    if title:
        fig.suptitle(title, fontsize=12)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def draw_all(
    workdir: Path,
    metrics: Metrics,
    logger: logging.Logger | None = None,
    entropy_band: tuple[float, float] | None = None,
    estimator: str = "",
) -> list[Path]:
    """Both figures into ``workdir/plots``; a figure whose data is missing is skipped (and logged)."""
    from g2rpo_verl.demo.tasks import task_of_prompt

    log = logger or logging.getLogger(__name__)
    out = []
    plots = workdir / "plots"
    if task_names(metrics) or validation_sources(metrics):
        suffix = f" — adv_estimator={estimator}" if estimator else ""
        out.append(
            plot_training_curves(
                metrics, plots / "training_curves.png", entropy_band, title=f"tiny Qwen3-VL on CPU{suffix}"
            )
        )
    else:
        log.warning("no per-task metrics to plot in this run")
    batches = load_rollout_batches(workdir / "rollouts", task_of_prompt)
    if batches:
        by_task = advantages_by_task(batches)
        n = sum(len(b) for b in batches)
        title = (
            f"Advantages of the same rewards: verl grpo vs G²RPO, per task "
            f"({len(batches)} training batches computed one at a time, {n} samples pooled)"
        )
        labels = {source: problem_type for source, problem_type in _task_of_source().items()}
        out.append(plot_advantages(by_task, plots / "advantages.png", title=title, labels=labels))
    else:
        log.warning("no rollout dumps in %s: skipping the advantage histograms", workdir / "rollouts")
    return out
