"""The demo command end to end: the real ``verl.trainer.main_ppo`` through ``python -m g2rpo_verl.demo``
exactly as ``g2rpo-train`` runs it, with the demo's own model and warm start, shortened to
:data:`E2E_STEPS` steps (about 6 minutes on 2 CPU cores), then resumed for one more step.
The run is long enough to check what the demo is for: the greedy accuracy over all validation
prompts rises, and every task's entropy is held in the band derived from its own start.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from g2rpo_verl.algorithms.entropy_control import AdaptiveEntropyControl
from g2rpo_verl.demo import data as demo_data
from g2rpo_verl.demo import tasks
from g2rpo_verl.demo.overrides import load_config
from g2rpo_verl.demo.run_metrics import load_metrics

SOURCES = list(tasks.TASKS)

pytestmark = pytest.mark.e2e

E2E_STEPS = 12
E2E_ARGS = ["trainer.save_freq=6", "trainer.test_freq=6"]
TASK_KEYS = ("spatial_grounding", "numerical", "multiple_choice", "OCR", "math", "regression")


def _run_demo(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "g2rpo_verl.demo", "--workdir", str(workdir), *E2E_ARGS, *args]
    env = {k: v for k, v in os.environ.items() if k != "VERL_FILE_LOGGER_PATH"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    log = "".join(p.read_text()[-6000:] for p in sorted((workdir / "logs").glob("trainer_*.log")))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:] + log
    return proc


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("demo")
    _run_demo(workdir, f"trainer.total_training_steps={E2E_STEPS}")
    return workdir


def test_demo_command_trains_validates_per_task_and_plots(demo_run):
    metrics = load_metrics([demo_run / "metrics.jsonl"])
    assert sorted(metrics) == list(range(E2E_STEPS + 1))
    for step in (0, 6, E2E_STEPS):  # validation before training and every test_freq steps, every task
        for source in SOURCES:
            value = metrics[step][f"val-core/{source}/acc/mean@2"]
            assert math.isfinite(value) and 0 <= value <= 1, (step, source)
    for step in range(1, E2E_STEPS + 1):
        data = metrics[step]
        for task in TASK_KEYS:
            for name in ("reward/total", "length/mean", "entropy", "advantage/std", "advantage/skew"):
                assert math.isfinite(data[f"task_{task}/{name}"]), (step, task, name)
        # rollout (hf server, batched, with images) and trainer (FSDP2) log-probs agree
        assert data["training/rollout_probs_diff_valid"] == 1
        assert data["training/rollout_probs_diff_max"] < 1e-3
        # the adaptive controller's term reached the loss (negative where it raises an entropy)
        assert math.isfinite(data["actor/entropy_shaping_loss"])
        coef_max = AdaptiveEntropyControl(**load_config()["g2rpo"]["entropy"].get("adaptive", {})).coef_max
        for task in TASK_KEYS:
            assert abs(data[f"task_{task}/entropy/coef"]) <= coef_max
    for name in ("training_curves.png", "advantages.png"):
        assert (demo_run / "plots" / name).stat().st_size > 20_000
    state = json.loads((demo_run / "checkpoints" / f"global_step_{E2E_STEPS}" / "g2rpo_state.json").read_text())
    assert set(state) == {"length", "entropy", "entropy_bands"}


def test_the_short_demo_learns_and_holds_every_task_in_the_band_of_its_own_start(demo_run):
    """The direction of learning and the shaping targets, on the test's own run (not a recorded one)."""
    # greedy accuracy over all validation prompts, base model vs the policy at the last step
    base, trained = (json.loads((demo_run / "eval" / n / "metrics.json").read_text()) for n in ("base", "trained"))
    gain = trained["overall"]["accuracy"] - base["overall"]["accuracy"]
    assert gain > 0, (base["overall"], trained["overall"])

    # each task's band is [start_low·H0, start_high·H0], H0 the mean of its first start_steps entropies,
    # and the entropy stays inside it on >= 80 % of the steps after the band is set
    cfg = load_config()["g2rpo"]["entropy"]
    k, lo, hi = cfg["start_steps"], cfg["start_low"], cfg["start_high"]
    metrics = load_metrics([demo_run / "metrics.jsonl"])
    for task in TASK_KEYS:
        h = [metrics[s][f"task_{task}/entropy_estimate"] for s in range(1, E2E_STEPS + 1)]
        h0 = sum(h[:k]) / k
        assert all(f"task_{task}/entropy/band_low" not in metrics[s] for s in range(1, k)), task  # no band yet
        banded = range(k, E2E_STEPS + 1)
        for s in banded:
            assert metrics[s][f"task_{task}/entropy/band_low"] == pytest.approx(lo * h0), (task, s)
            assert metrics[s][f"task_{task}/entropy/band_high"] == pytest.approx(hi * h0), (task, s)
        inside = [lo * h0 <= metrics[s][f"task_{task}/entropy_estimate"] <= hi * h0 for s in banded]
        assert sum(inside) >= 0.8 * len(inside), (task, [round(v, 3) for v in h], round(h0, 3))


def test_the_demo_exports_the_policy_and_compares_it_with_the_base_model(demo_run):
    """``DIR/hf`` is verl's merge of the last checkpoint: it loads with transformers and says what the checkpoint says."""
    import torch
    from torch.distributed.tensor import DTensor
    from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

    from g2rpo_verl.cpu.hf_generation import HFGenerator, SamplingSpec, load_hf_model
    from g2rpo_verl.evaluation.generation import eos_token_ids
    from g2rpo_verl.evaluation.prompts import PromptBuilder
    from g2rpo_verl.evaluation.run_config import load_run_config

    step = (demo_run / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip()
    hf, actor = demo_run / "hf", demo_run / "checkpoints" / f"global_step_{step}" / "actor"
    assert json.loads((hf / "g2rpo_export.json").read_text())["checkpoint"] == str(actor)
    exported = AutoModelForImageTextToText.from_pretrained(hf, dtype=torch.float32).eval()
    exported.generation_config = GenerationConfig()  # as load_hf_model: no sampling defaults
    processor = AutoProcessor.from_pretrained(hf, trust_remote_code=True)
    assert (
        processor.tokenizer.get_vocab()
        == AutoProcessor.from_pretrained(demo_run / "model", trust_remote_code=True).tokenizer.get_vocab()
    )
    # the checkpoint's weights as verl's trainer held them (float32), in the base model's architecture
    shard = torch.load(actor / "model_world_size_1_rank_0.pt", map_location="cpu", weights_only=False)
    weights = {k: (v.to_local() if isinstance(v, DTensor) else v).float() for k, v in shard.items()}
    exported_state = exported.state_dict()
    for name, value in weights.items():  # verl's merger writes bfloat16: exactly the checkpoint, rounded
        assert torch.equal(exported_state[name], value.bfloat16().float()), name
    checkpoint_fp32, checkpoint_bf16 = load_hf_model(str(demo_run / "model")), load_hf_model(str(demo_run / "model"))
    assert not all(torch.equal(weights[k], v) for k, v in checkpoint_fp32.state_dict().items())  # trained, not the base
    checkpoint_fp32.load_state_dict(weights, strict=True)
    checkpoint_bf16.load_state_dict({k: v.bfloat16().float() for k, v in weights.items()}, strict=True)
    # greedy tokens on every validation prompt: the export (config, tokenizer, processor, weights as
    # transformers loads them) says exactly what the checkpoint says at the export's precision, and
    # what the float32 checkpoint says up to bfloat16 rounding flipping a near-tie (measured on the
    # five-task demo: 0 of 160 prompts differ at step 10, 1 and 0 of 160 at step 40 in two runs)
    builder = PromptBuilder(str(hf), load_run_config(None))
    eos = eos_token_ids(str(hf), builder.tokenizer)
    spec = SamplingSpec(max_new_tokens=32, temperature=0, return_log_probs=False)
    models = {"export": exported, "bf16": checkpoint_bf16, "fp32": checkpoint_fp32}
    generators = {k: HFGenerator(m, eos, builder.tokenizer.pad_token_id, builder.processor) for k, m in models.items()}
    tokens: dict[str, list] = {k: [] for k in models}
    for path in demo_data.data_paths(demo_run / "data").val_files:  # every validation prompt
        prompts = list(builder.prompts(path, list(range(len(pd.read_parquet(path, columns=["data_source"]))))))
        for k, g in generators.items():
            tokens[k] += [
                r.token_ids
                for r in g.generate_batch(
                    [p.prompt_ids for p in prompts], spec, [g.multi_modal_inputs(p.images) for p in prompts]
                )
            ]
    assert len(tokens["export"]) == len(SOURCES) * 32
    assert tokens["export"] == tokens["bf16"]
    same = sum(a == b for a, b in zip(tokens["export"], tokens["fp32"], strict=True))
    assert same >= 0.95 * len(tokens["export"]), (
        f"only {same} of {len(tokens['export'])} greedy responses match the float32 checkpoint"
    )

    # base vs trained, greedy, on the validation files; hand-off configs for the export
    table = (demo_run / "eval" / "base_vs_trained.md").read_text()
    n_all = 32 * len(SOURCES)
    for task in (*(spec.problem_type for spec in tasks.TASKS.values()), "(all)"):
        assert f"| {task} | {n_all if task == '(all)' else 32} |" in table, task
    for name, model in (("base", demo_run / "model"), ("trained", hf)):
        metrics = json.loads((demo_run / "eval" / name / "metrics.json").read_text())
        assert metrics["settings"]["model_dir"] == str(model) and metrics["settings"]["temperature"] == 0
        assert metrics["settings"]["reward"]["source"] == str(demo_run / "hydra" / ".hydra" / "config.yaml")
        assert metrics["overall"]["samples"] == n_all and "grounding" in metrics["by_task"]["spatial grounding"]
    handoff = json.loads((demo_run / "handoff" / "vlmevalkit.json").read_text())
    assert [m["model_path"] for m in handoff["model"].values()] == [str(hf)]


def test_rerunning_the_command_resumes_from_the_last_checkpoint(demo_run):
    more = E2E_STEPS + 1
    proc = _run_demo(demo_run, f"trainer.total_training_steps={more}", "--no-plots")
    run_files = sorted((demo_run / "logs").glob("metrics_*.jsonl"))
    assert len(run_files) == 2
    second = load_metrics([run_files[-1]])
    assert "training/global_step" not in second.get(E2E_STEPS, {}) and second[more]["training/global_step"] == more
    merged = load_metrics([demo_run / "metrics.jsonl"])
    assert sorted(merged) == list(range(more + 1)) and "task_math/reward/total" in merged[1]
    assert f"validation, step 0 -> step {more}" in proc.stdout  # first and last validation of all runs
    # the bands resumed from the checkpoint: the same as before the restart, not re-measured
    for task in TASK_KEYS:
        assert merged[more][f"task_{task}/entropy/band_low"] == merged[E2E_STEPS][f"task_{task}/entropy/band_low"]

    # a finished run is not started again: the command only redraws and summarises
    again = _run_demo(demo_run, f"trainer.total_training_steps={more}")
    assert f"already trained to step {more}" in again.stdout and f"validation, step 0 -> step {more}" in again.stdout
    assert len(list((demo_run / "logs").glob("metrics_*.jsonl"))) == 2
