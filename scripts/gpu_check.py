#!/usr/bin/env python
"""What a GPU machine with torch (and transformers) but no vLLM or Ray can check, in minutes.

1. ``gaussianize``, ``gs_grpo_advantages`` and ``gs_gdpo_advantages`` on the device equal the
   CPU results (float64 outputs compared element by element; tied scores must map to identical
   advantages on the device too) at 4k–65k samples, with the median time of each on both.
2. The entropy-shaped loss (the plugin's per-task weights from
   :mod:`g2rpo_verl.algorithms.entropy`, plus a policy-gradient term) forward and backward on a
   small random Qwen3-VL in bf16 with an image per sample: finite gradients in both towers, and
   the shaping gradient equals the autograd gradient of the penalty's definition over the
   whole batch whatever the micro-batch split (as the trainer relies on), to bf16 accuracy.

Nothing imports verl: the algorithm code is pure torch.

Usage::

    python scripts/gpu_check.py [--device cuda|cpu] [--sizes 4096 16384 65536] [--repeat 5] [--json PATH]

Exit status 0 when every check passes, 1 when one fails, 2 when the device is unavailable.
``--device cpu`` runs the same checks against the CPU itself (for the test suite: the script
is exercised, the comparisons are trivially equal).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from g2rpo_verl import gaussianize, gs_gdpo_advantages, gs_grpo_advantages  # noqa: E402
from g2rpo_verl.algorithms.entropy import (  # noqa: E402
    penalty_weights,
    row_entropy_sums,
    shaping_surrogate,
    task_entropy_penalty,
)

N_TASKS, GROUP = 6, 8


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, device: torch.device, repeat: int) -> float:
    fn()  # warm-up (kernel compilation, allocator)
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def estimator_batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` samples in groups of 8 over 6 tasks; half the tasks score in {0, 0.5, 1} (ties
    everywhere), the others dense; three reward components with ties and absent entries."""
    g = torch.Generator().manual_seed(seed)
    groups = torch.arange(n) // GROUP
    tasks = groups % N_TASKS
    dense = torch.rand(n, generator=g, dtype=torch.float64)
    tied = torch.randint(0, 3, (n,), generator=g).double() / 2
    scores = torch.where(tasks % 2 == 0, tied, dense)
    components = torch.stack([tied, torch.randint(0, 2, (n,), generator=g).double(), dense], dim=1)
    present = torch.ones(n, 3, dtype=torch.bool)
    present[:, 2] = tasks % 3 != 0  # the dense component does not apply to a third of the tasks
    return {"scores": scores, "groups": groups, "tasks": tasks, "components": components, "present": present}


def check_estimators(device: torch.device, sizes: list[int], repeat: int) -> tuple[list[dict], list[str]]:
    rows, failures = [], []
    for n in sizes:
        b = estimator_batch(n)
        on = {k: v.to(device) for k, v in b.items()}
        runs = {
            "gaussianize": (
                lambda d: gaussianize(d["scores"], d["groups"]),
            ),
            "gs_grpo": (lambda d: gs_grpo_advantages(d["scores"], d["groups"], d["tasks"]),),
            "gs_gdpo": (
                lambda d: gs_gdpo_advantages(d["components"], d["groups"], d["tasks"], [0.9, 0.1, 1.0], d["present"]),
            ),
        }
        for name, (fn,) in runs.items():
            ref = fn(b)
            got = fn(on).cpu()
            diff = (got - ref).abs().max().item()
            # ties: samples of one group with equal inputs get bitwise-equal outputs on the device
            if name == "gs_gdpo":
                inputs = torch.where(b["present"], b["components"], torch.full_like(b["components"], -1.0))
            else:
                inputs = b["scores"][:, None]
            _, key = torch.unique(torch.cat([b["groups"][:, None].double(), inputs], 1), dim=0, return_inverse=True)
            order = torch.argsort(key, stable=True)
            k, v = key[order], got[order]
            same = k[1:] == k[:-1]
            tie_ok = bool(same.any()) and bool(torch.equal(v[1:][same], v[:-1][same]))
            t_cpu = _median_time(lambda: fn(b), torch.device("cpu"), repeat)
            t_dev = _median_time(lambda: fn(on), device, repeat)
            row = {
                "check": name, "n": n, "max_abs_diff": diff, "ties_identical": tie_ok,
                "cpu_ms": 1e3 * t_cpu, f"{device.type}_ms": 1e3 * t_dev,
            }
            rows.append(row)
            print(
                f"{name:12s} n={n:6d}  max|{device.type}-cpu|={diff:.1e}  ties identical={tie_ok}  "
                f"cpu {1e3 * t_cpu:8.2f} ms  {device.type} {1e3 * t_dev:8.2f} ms",
                flush=True,
            )
            if not diff <= 1e-12 or not tie_ok:
                failures.append(f"{name} n={n}: max diff {diff:.2e}, ties identical {tie_ok}")
    return rows, failures


# --------------------------------------------------------------------------- Qwen3-VL in bf16
PATCH, MERGE, TEMPORAL = 16, 2, 2
IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 500, 501, 502, 503
VOCAB = 512


def tiny_qwen3_vl(seed: int = 0):
    """A random Qwen3-VL (2 text layers, 2 vision blocks, width 128) built from a config."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    hidden, heads = 128, 4
    head_dim = hidden // heads
    half = head_dim // 2
    h_w = max(1, round(half * 20 / 64))
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
            num_attention_heads=heads, num_key_value_heads=heads // 2, head_dim=head_dim,
            max_position_embeddings=1024, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [half - 2 * h_w, h_w, h_w], "mrope_interleaved": True},
        ),
        vision_config=dict(
            depth=2, hidden_size=hidden, intermediate_size=2 * hidden, num_heads=heads, patch_size=PATCH,
            spatial_merge_size=MERGE, temporal_patch_size=TEMPORAL, out_hidden_size=hidden,
            num_position_embeddings=64, deepstack_visual_indexes=[0],
        ),
        image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN,
        vision_start_token_id=VISION_START, vision_end_token_id=VISION_END, tie_word_embeddings=True,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return Qwen3VLForConditionalGeneration(config)


def vl_batch(n_rows: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n_rows`` sequences: [vision_start, 4 image tokens (a 64x64 image), vision_end, prompt, response]."""
    g = torch.Generator().manual_seed(seed)
    grid = 64 // PATCH  # 4 x 4 patches, 2 x 2 merged: 4 image tokens
    n_img_tokens = grid * grid // (MERGE * MERGE)
    prompt_len, resp_len = 6, 12
    ids = torch.randint(0, 400, (n_rows, 2 + n_img_tokens + prompt_len + resp_len), generator=g)
    ids[:, 0], ids[:, 1 : 1 + n_img_tokens], ids[:, 1 + n_img_tokens] = VISION_START, IMAGE_TOKEN, VISION_END
    resp_start = 2 + n_img_tokens + prompt_len
    lengths = torch.randint(3, resp_len + 1, (n_rows,), generator=g)
    mask = torch.zeros(n_rows, resp_len, dtype=torch.bool)
    for i, n in enumerate(lengths.tolist()):
        mask[i, :n] = True
    pixel = torch.randn(n_rows * grid * grid, 3 * TEMPORAL * PATCH * PATCH, generator=g)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "mm_token_type_ids": (ids == IMAGE_TOKEN).long().to(device),  # 1 = image token (M-RoPE)
        "pixel_values": pixel.to(device=device, dtype=torch.bfloat16),
        "image_grid_thw": torch.tensor([[1, grid, grid]] * n_rows).to(device),
        "response_mask": mask.to(device),
        "resp_start": torch.tensor(resp_start),
        "tasks": (torch.arange(n_rows) % 3).to(device),
        "advantages": torch.randn(n_rows, generator=g).to(device),
    }


def _token_entropy_logp(model, batch: dict, rows: torch.Tensor):
    """Per response token: entropy and log-prob of the token, (rows, L) float32 (verl's upcast)."""
    out = model(
        input_ids=batch["input_ids"][rows],
        attention_mask=batch["attention_mask"][rows],
        mm_token_type_ids=batch["mm_token_type_ids"][rows],
        pixel_values=torch.cat([batch["pixel_values"].view(len(batch["input_ids"]), -1, batch["pixel_values"].shape[-1])[r] for r in rows.tolist()]),
        image_grid_thw=batch["image_grid_thw"][rows],
    )
    s = int(batch["resp_start"])
    logits = out.logits[:, s - 1 : -1].float()
    logp = torch.log_softmax(logits, -1)
    entropy = -(logp.exp() * logp).sum(-1)
    token_logp = logp.gather(-1, batch["input_ids"][rows, s:, None])[..., 0]
    return entropy, token_logp


def check_entropy_shaped_loss(device: torch.device, repeat: int) -> tuple[dict, list[str]]:
    failures = []
    model = tiny_qwen3_vl().to(device=device, dtype=torch.bfloat16)
    batch = vl_batch(12, device)
    n = len(batch["input_ids"])
    all_rows = torch.arange(n)
    mask = batch["response_mask"]
    low = torch.tensor([0.0, 10.0, 0.0], dtype=torch.float64)  # task 1 below its band
    high = torch.tensor([1.0, 12.0, 100.0], dtype=torch.float64)  # task 0 above, task 2 inside
    beta = 0.5

    with torch.no_grad():  # the old policy's entropy picks each task's band side (trainer side)
        old_entropy, _ = _token_entropy_logp(model, batch, all_rows)
    s, c = row_entropy_sums(old_entropy.cpu(), mask.cpu())
    weights = penalty_weights(s, c, batch["tasks"].cpu(), torch.zeros(n, dtype=torch.long), low, high, beta).to(device)

    def shaped_grads(split):
        model.zero_grad(set_to_none=True)
        for part in split:
            rows = torch.tensor(part)
            entropy, token_logp = _token_entropy_logp(model, batch, rows)
            m = mask[rows]
            pg = -(batch["advantages"][rows, None] * token_logp * m).sum() / mask.sum()
            loss = pg + shaping_surrogate(entropy, m, weights[rows])
            loss.backward()
        return {k: p.grad.float().clone() for k, p in model.named_parameters() if p.grad is not None}

    def definition_grads():
        model.zero_grad(set_to_none=True)
        entropy, token_logp = _token_entropy_logp(model, batch, all_rows)
        pg = -(batch["advantages"][:, None] * token_logp * mask).sum() / mask.sum()
        loss = pg + task_entropy_penalty(entropy, mask, batch["tasks"], low.to(device), high.to(device), beta)
        loss.backward()
        return {k: p.grad.float().clone() for k, p in model.named_parameters() if p.grad is not None}

    expected = definition_grads()
    split = [list(range(0, 5)), list(range(5, 7)), list(range(7, 12))]  # uneven micro-batches
    got = shaped_grads(split)
    finite = all(torch.isfinite(g).all() for g in got.values())
    vision = [k for k in got if "visual" in k and got[k].abs().sum() > 0]
    text = [k for k in got if "language_model" in k and got[k].abs().sum() > 0]
    scale = max(g.abs().max().item() for g in expected.values())
    diff = max((got[k] - expected[k]).abs().max().item() for k in expected)
    t = _median_time(lambda: shaped_grads(split), device, repeat)
    result = {
        "check": "entropy_shaped_loss_bf16", "rows": n, "finite": finite, "vision_params_with_grad": len(vision),
        "text_params_with_grad": len(text), "max_abs_grad_diff_vs_definition": diff, "max_abs_grad": scale,
        f"{device.type}_ms_fwd_bwd": 1e3 * t,
    }
    print(
        f"entropy-shaped loss, Qwen3-VL bf16, {n} rows in 3 micro-batches: finite={finite}, "
        f"params with grad: vision {len(vision)}, text {len(text)}; max |grad - definition grad| {diff:.2e} "
        f"(max |grad| {scale:.2e}); fwd+bwd {1e3 * t:.1f} ms",
        flush=True,
    )
    if not finite:
        failures.append("entropy-shaped loss: non-finite gradient")
    if not vision or not text:
        failures.append("entropy-shaped loss: a tower got no gradient")
    # bf16 weights and activations: the split changes rounding, not the maths
    if not diff <= 0.05 * scale:
        failures.append(f"entropy-shaped loss: gradient differs from the definition's by {diff:.2e} (scale {scale:.2e})")
    return result, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check: --device {args.device} but torch {torch.__version__} sees no CUDA device "
            f"(torch.version.cuda={torch.version.cuda}); on a CPU-only machine use --device cpu",
            file=sys.stderr,
        )
        return 2
    if device.type == "cuda":
        print(f"gpu_check: {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    start = time.perf_counter()
    rows, failures = check_estimators(device, args.sizes, args.repeat)
    loss_row, loss_failures = check_entropy_shaped_loss(device, args.repeat)
    failures += loss_failures
    elapsed = time.perf_counter() - start
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "estimators": rows, "loss": loss_row,
                                         "failures": failures, "seconds": elapsed}, indent=1))
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print(f"gpu_check: {'FAILED' if failures else 'all checks passed'} in {elapsed:.0f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
