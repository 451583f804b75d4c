"""The evaluation loop: prompts -> responses -> reward -> ``predictions.jsonl`` -> metrics and report.

Output directory ``O``:

* ``settings.json`` - what was evaluated and how (model, data, decoding, reward and its kwargs,
  task key). A rerun into the same ``O`` resumes only when these agree; otherwise it stops
  naming the keys that differ (``overwrite=True`` / ``--overwrite`` starts over);
* ``predictions.jsonl`` - one scored response per line, appended per batch
  (:mod:`.records`); a rerun generates only the responses it lacks;
* ``metrics.json`` - ``{"settings", "overall", "by_data_source", "by_task"}``
  (:mod:`.metrics`), always recomputed from the whole ``predictions.jsonl``;
* ``report.md`` - the same as tables (:mod:`.report`).

Scoring is the training run's (:mod:`.run_config`): the same reward function with the same
kwargs, per response ``fn(data_source, solution_str, ground_truth, extra_info)``; the task of a
sample is resolved as training resolves it
(:func:`g2rpo_verl.verl_hooks.samples.resolve_task_keys`: dataset column, then ``extra_info``,
then the reward's dict). An error of the reward function (a configuration error) stops the
evaluation; every batch scored before it stays in ``predictions.jsonl``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from g2rpo_verl.evaluation.aggregates import compute_metrics
from g2rpo_verl.evaluation.generation import Decoding, make_backend, select_backend
from g2rpo_verl.evaluation.predictions import Prediction, PredictionStore, json_safe, prediction_key
from g2rpo_verl.evaluation.run_config import RunConfig
from g2rpo_verl.evaluation.tables import render_report

__all__ = ["EvalSettings", "evaluate", "score_response"]

logger = logging.getLogger("g2rpo_verl.evaluation")

SETTINGS_FILE = "settings.json"
PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class EvalSettings:
    """One evaluation. ``model`` is what the user named, ``model_dir`` the HF directory loaded.

    ``limit`` evaluates only the first ``limit`` rows of each file (None: all).
    ``batch_size`` is in prompts (each with ``decoding.n`` responses).
    """

    model: str
    model_dir: str
    data: tuple[str, ...]
    decoding: Decoding
    run: RunConfig
    backend: str = "auto"
    batch_size: int = 16
    limit: int | None = None

    def identity(self) -> dict[str, Any]:
        """What must agree for a rerun to resume (written to ``settings.json``)."""
        return json_safe(
            {
                "model": self.model,
                "model_dir": self.model_dir,
                "data": list(self.data),
                "limit": self.limit,
                "n": self.decoding.n,
                "temperature": self.decoding.temperature,
                "top_p": self.decoding.top_p,
                "max_new_tokens": self.decoding.max_new_tokens,
                "seed": self.decoding.seed,
                "reward": self.run.describe(),
                "task_key": self.run.task_key,
            }
        )


def score_response(reward_fn: Callable[..., Any], prompt, text: str) -> dict[str, Any]:
    """The reward dict of one response (a bare number becomes ``{"score": x}``)."""
    result = reward_fn(
        data_source=prompt.data_source,
        solution_str=text,
        ground_truth=prompt.ground_truth,
        extra_info=prompt.extra_info,
    )
    if isinstance(result, Mapping):
        if "score" not in result:
            raise ValueError(f"the reward function returned a dict without 'score' (keys {sorted(result)})")
        return dict(result)
    return {"score": float(result)}


def _check_resume(out: Path, identity: dict[str, Any], overwrite: bool) -> None:
    path = out / SETTINGS_FILE
    if overwrite:
        for name in (SETTINGS_FILE, PREDICTIONS_FILE, METRICS_FILE, REPORT_FILE):
            (out / name).unlink(missing_ok=True)
        return
    if not path.is_file():
        if (out / PREDICTIONS_FILE).is_file():
            raise ValueError(
                f"{out / PREDICTIONS_FILE} exists without {SETTINGS_FILE}: pass --overwrite or another --out"
            )
        return
    previous = json.loads(path.read_text())
    differ = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
    if differ:
        detail = "; ".join(f"{k}: {previous.get(k)!r} -> {identity.get(k)!r}" for k in differ)
        raise ValueError(f"{out} holds an evaluation with other settings ({detail}); pass --overwrite or another --out")


def evaluate(
    settings: EvalSettings, out_dir: str | Path, overwrite: bool = False, progress: bool = True, log=logger.info
) -> dict[str, Any]:
    """Run (or resume) one evaluation into ``out_dir``; returns the content of ``metrics.json``."""
    from g2rpo_verl.evaluation.prompts import read_rows

    started = time.monotonic()
    names = [Path(f).name for f in settings.data]
    if len(set(names)) < len(names):  # a response's key is "<file name>:<row>#<sample>"
        raise ValueError(f"--data: file names must be distinct, got {sorted(n for n in names if names.count(n) > 1)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    identity = settings.identity()
    _check_resume(out, identity, overwrite)
    backend_name = select_backend(settings.backend)  # fails before any model loads
    reward_fn = settings.run.reward_fn()
    (out / SETTINGS_FILE).write_text(json.dumps(identity, indent=2) + "\n")

    store = PredictionStore(out / PREDICTIONS_FILE)
    done = store.done_keys()
    n = settings.decoding.n
    todo: list[tuple[str, list[int]]] = []
    wanted: set[str] = set()
    total = 0
    for file in settings.data:
        rows = list(range(read_rows(file)))[: settings.limit]
        total += len(rows)
        keys = {row: [prediction_key(file, row, s) for s in range(n)] for row in rows}
        wanted.update(k for ks in keys.values() for k in ks)
        missing = [row for row in rows if not all(k in done for k in keys[row])]
        if missing:
            todo.append((file, missing))
    remaining = sum(len(rows) for _, rows in todo)
    if remaining:
        log(
            f"eval: {remaining} of {total} prompts to generate ({backend_name}, {'greedy' if settings.decoding.greedy else 'sampled'}, n={n}) -> {out}"
        )
        _generate(settings, backend_name, reward_fn, todo, store, done, total, progress)
    else:
        log(f"eval: all {total} prompts already in {store.path}")

    records = [r for r in store.load() if r["key"] in wanted]
    if len(records) != len(wanted):
        raise RuntimeError(f"{store.path}: {len(wanted) - len(records)} responses missing after generation")
    metrics = compute_metrics(records, n)
    wall_s = time.monotonic() - started
    (out / METRICS_FILE).write_text(json.dumps(json_safe({"settings": identity, **metrics}), indent=2) + "\n")
    (out / REPORT_FILE).write_text(render_report(metrics, identity, wall_s))
    log(
        f"eval: {len(records)} responses scored; metrics {out / METRICS_FILE}, report {out / REPORT_FILE} ({wall_s:.0f} s)"
    )
    return {"settings": identity, **metrics}


def _generate(
    settings: EvalSettings,
    backend_name: str,
    reward_fn,
    todo,
    store: PredictionStore,
    done: set[str],
    total: int,
    progress: bool,
) -> None:
    from tqdm import tqdm

    from g2rpo_verl.evaluation.prompts import PromptBuilder
    from g2rpo_verl.verl_hooks.samples import resolve_task_keys

    builder = PromptBuilder(settings.model_dir, settings.run)
    backend = make_backend(backend_name, settings.model_dir, builder.tokenizer, builder.processor)
    remaining = sum(len(rows) for _, rows in todo)
    bar = tqdm(
        total=total, initial=total - remaining, unit="prompt", desc="eval", disable=not progress, dynamic_ncols=True
    )
    batch_index = 0
    try:
        for file, rows in todo:
            dataset = builder.dataset(file)
            for start in range(0, len(rows), settings.batch_size):
                chunk = rows[start : start + settings.batch_size]
                prompts = list(builder.prompts(file, chunk, dataset))
                responses = backend.generate(prompts, settings.decoding, batch_index)
                batch: list[Prediction] = []
                for prompt, outs in zip(prompts, responses, strict=True):
                    for sample, response in enumerate(outs):
                        key = prediction_key(prompt.file, prompt.row, sample)
                        if key in done:
                            continue
                        reward = score_response(reward_fn, prompt, response.text)
                        columns = {k: [v] for k, v in prompt.columns.items()}
                        task = resolve_task_keys(settings.run.task_key, columns, [prompt.extra_info], [reward])[0]
                        batch.append(
                            Prediction(
                                file=prompt.file,
                                row=prompt.row,
                                sample=sample,
                                id=prompt.id,
                                data_source=prompt.data_source,
                                task=task,
                                prompt=prompt.prompt,
                                response=response.text,
                                response_tokens=response.tokens,
                                finish_reason=response.finish_reason,
                                ground_truth=prompt.ground_truth,
                                extra_info=prompt.extra_info,
                                reward=reward,
                            )
                        )
                store.append(batch)
                done.update(p.key for p in batch)
                batch_index += 1
                bar.update(len(chunk))
    finally:
        bar.close()
