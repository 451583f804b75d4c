#!/usr/bin/env python
"""What one GPU with only torch installed can check of the production path, in minutes.

1. **The entropy-shaped loss at production shape** (scripts/entropy_memory.py): one actor
   micro-batch of 20,480 tokens × 151,936 vocab (Qwen3-VL) in bf16 from the logits — the
   plugin's policy-gradient term plus :func:`g2rpo_verl.algorithms.entropy.shaping_surrogate`
   over the exact entropy. Peak memory above the logits without the entropy, with it eager and
   with it compiled (verl's ``fsdp_config.use_torch_compile``, the option that bounds it), each
   against the preflight's estimate (``cluster_checks.ENTROPY_PEAK_FACTOR``, minus the flash-attn
   part it adds, which torch alone does not run); and the cosine between the bf16 and fp32
   gradients of the logits.
2. **One NCCL rank of FSDP2** (world size 1) around a Qwen3-VL-shaped model with random weights
   and reduced depth (:class:`QwenVLShaped`: the 8B text shapes with 2 decoder layers, a patch
   embedding + merger standing for the vision tower), bf16 compute / fp32 reduce, running the
   plugin's loss forward and backward: finite loss, every parameter with a finite gradient.
3. **The estimators on the device** at 4k–65k samples: ``gaussianize``, ``gs_grpo``,
   ``gs_gdpo`` equal the CPU result element by element (tied inputs: bitwise-equal advantages).

Nothing imports verl, vLLM, Ray or transformers. Prints one table; exit status 0 when every
check passes, 1 when one fails, 2 when the device is unavailable. ``--device cpu`` runs the same
code at small shapes on the CPU (gloo instead of NCCL; no peak memory), for the test suite.

    python scripts/gpu_check.py [--device cuda|cpu] [--tokens 20480] [--vocab 151936]
        [--sizes 4096 16384 65536] [--repeat 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from entropy_memory import (  # noqa: E402
    CASES,
    PRODUCTION_TOKENS,
    QWEN3_VL_VOCAB,
    entropy_from_logits,
    loss_and_grad,
    make_inputs,
)

from g2rpo_verl import gaussianize, gs_gdpo_advantages, gs_grpo_advantages  # noqa: E402
from g2rpo_verl.algorithms.entropy import shaping_surrogate  # noqa: E402
from g2rpo_verl.launch.cluster_checks import ENTROPY_PEAK_FACTOR  # noqa: E402

N_TASKS, GROUP = 6, 8
GIB = 1024**3
#: what torch alone reproduces of the preflight's factor: all but flash-attn's out-of-place part
FLASH_CE_PART = 1.0
#: measured extra may exceed the estimate by this much (allocator rounding, workspace)
FACTOR_SLACK = 0.25
MIN_BF16_COSINE = 0.99


class Table:
    """Rows ``(check, case, value, limit, ok)``; printed once at the end."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, check: str, case: str, value: str, limit: str, ok: bool | None) -> None:
        self.rows.append({"check": check, "case": case, "value": value, "limit": limit, "ok": ok})

    def failures(self) -> list[str]:
        return [f"{r['check']} {r['case']}: {r['value']} (limit {r['limit']})" for r in self.rows if r["ok"] is False]

    def print(self) -> None:
        widths = [15, 50, 30, 16, 4]
        head = ("check", "case", "value", "limit", "ok")
        print("\n" + "  ".join(h.ljust(w) for h, w in zip(head, widths)))
        print("  ".join("-" * w for w in widths))
        for r in self.rows:
            status = {True: "ok", False: "FAIL", None: "-"}[r["ok"]]
            cells = (r["check"], r["case"], r["value"], r["limit"], status)
            print("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)))


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


# --------------------------------------------------------------------------- 1. entropy loss
def check_entropy_loss(device: torch.device, tokens: int, vocab: int, table: Table, compile_: bool) -> None:
    cases = ["sampled", "exact"] + (["exact, compiled"] if compile_ else [])
    if device.type == "cuda":
        logits_bytes = tokens * vocab * 2
        peaks = {}
        for case in cases:
            inputs = make_inputs(tokens, vocab, torch.bfloat16, device)
            CASES[case](inputs)  # warm-up (compilation)
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            CASES[case](inputs)
            torch.cuda.synchronize(device)
            peaks[case] = (torch.cuda.max_memory_allocated(device) - base) / logits_bytes
            del inputs
            torch.cuda.empty_cache()
        for case in cases[1:]:
            extra = peaks[case] - peaks["sampled"]
            bound = ENTROPY_PEAK_FACTOR[case.endswith("compiled")] - FLASH_CE_PART + FACTOR_SLACK
            table.add(
                "entropy_memory",
                f"{case}: extra peak / logits ({tokens}×{vocab})",
                f"{extra:.2f}× ({extra * logits_bytes / GIB:.1f} GiB)",
                f"≤ {bound:.2f}×",
                extra <= bound,
            )
    else:
        table.add("entropy_memory", f"peak memory ({tokens}×{vocab})", "not measured on cpu", "", None)
    inputs = make_inputs(tokens, vocab, torch.float32, device)
    _, g32 = loss_and_grad(inputs, checkpointing=False)
    g32 = g32.flatten()
    bf16 = dict(inputs, logits=inputs["logits"].to(torch.bfloat16))
    _, g16 = loss_and_grad(bf16, checkpointing=False)
    cosine = F.cosine_similarity(g16.float().flatten(), g32, dim=0).item()
    table.add(
        "entropy_loss",
        f"cos(grad bf16, grad fp32) ({tokens}×{vocab})",
        f"{cosine:.5f}",
        f"≥ {MIN_BF16_COSINE}",
        cosine >= MIN_BF16_COSINE,
    )
    del inputs, bf16, g32, g16
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- 2. FSDP rank
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class DecoderLayer(nn.Module):
    """Qwen3's decoder layer shapes: GQA attention with q/k norms, SwiGLU MLP (no RoPE: random weights)."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, intermediate: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.norm1, self.norm2 = RMSNorm(hidden), RMSNorm(hidden)
        self.q = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o = nn.Linear(heads * head_dim, hidden, bias=False)
        self.q_norm, self.k_norm = RMSNorm(head_dim), RMSNorm(head_dim)
        self.gate = nn.Linear(hidden, intermediate, bias=False)
        self.up = nn.Linear(hidden, intermediate, bias=False)
        self.down = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x):  # (B, S, H)
        b, s, _ = x.shape
        h = self.norm1(x)
        q = self.q_norm(self.q(h).view(b, s, self.heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k(h).view(b, s, self.kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v(h).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        rep = self.heads // self.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, -1)
        x = x + self.o(a)
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class QwenVLShaped(nn.Module):
    """Qwen3-VL-8B's text shapes at reduced depth, and a vision stub: 16-px patches (× 2 frames ×
    3 channels) embedded to the vision width and merged 2×2 into the text width, written over the
    image-token positions."""

    def __init__(
        self,
        vocab: int,
        hidden: int,
        heads: int,
        kv_heads: int,
        head_dim: int,
        intermediate: int,
        layers: int,
        vision_hidden: int,
        patch: int = 16,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.patch_embed = nn.Linear(3 * 2 * patch * patch, vision_hidden, bias=False)
        self.merger = nn.Sequential(nn.Linear(4 * vision_hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.layers = nn.ModuleList(
            DecoderLayer(hidden, heads, kv_heads, head_dim, intermediate) for _ in range(layers)
        )
        self.norm = RMSNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, input_ids, pixel_patches, image_positions):
        x = self.embed(input_ids)  # (B, S, H)
        vision = self.merger(self.patch_embed(pixel_patches).reshape(-1, 4 * self.patch_embed.out_features))
        x = x.index_put((image_positions[:, 0], image_positions[:, 1]), vision.to(x.dtype))
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_fsdp_rank(device: torch.device, table: Table, small: bool) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if small:
        dims = dict(
            vocab=512, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128, layers=2, vision_hidden=32
        )
        rows, seq = 2, 64
    else:
        dims = dict(
            vocab=QWEN3_VL_VOCAB,
            hidden=4096,
            heads=32,
            kv_heads=8,
            head_dim=128,
            intermediate=12288,
            layers=2,
            vision_hidden=1152,
        )
        rows, seq = 2, 2048
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=0, world_size=1, device_id=device if device.type == "cuda" else None)
    try:
        torch.manual_seed(0)
        with torch.device(device):  # built on the device: no 6.5 GB host copy at full width
            model = QwenVLShaped(**dims)
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for layer in model.layers:
            fully_shard(layer, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, dims["vocab"], (rows, seq), generator=g).to(device)
        n_image = 64 if not small else 4  # image tokens per row (each from 2×2 merged patches)
        positions = torch.stack(
            [torch.arange(rows).repeat_interleave(n_image), torch.arange(1, 1 + n_image).repeat(rows)], dim=1
        ).to(device)
        patches = torch.randn(rows * n_image * 4, 3 * 2 * 16 * 16, generator=g).to(device)
        mask = torch.zeros(rows, seq - 1, dtype=torch.bool, device=device)
        mask[:, seq // 2 :] = True  # the response half
        adv = torch.randn(rows, 1, generator=g).to(device)
        weights = torch.tensor([0.02, -0.02], device=device)[:rows] / mask.sum()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        logits = model(ids, patches, positions)[:, :-1]  # (B, S-1, V) in bf16
        logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        entropy = entropy_from_logits(logits).float()
        loss = -(adv * logp * mask).sum() / mask.sum() + shaping_surrogate(entropy, mask, weights)
        loss.backward()
        _sync(device)
        seconds = time.perf_counter() - start
        grads = [(n, p.grad) for n, p in model.named_parameters()]
        missing = [n for n, gr in grads if gr is None]
        finite = all(
            torch.isfinite(gr.full_tensor() if hasattr(gr, "full_tensor") else gr).all()
            for _, gr in grads
            if gr is not None
        )
        params = sum(p.numel() for p in model.parameters())
        peak = f", peak {torch.cuda.max_memory_allocated(device) / GIB:.1f} GiB" if device.type == "cuda" else ""
        case = f"{backend} FSDP2, {params / 1e6:,.1f}M params, {rows}×{seq} tokens"
        table.add(
            "fsdp_rank", case, f"loss {loss.item():.3f}, {seconds:.1f} s{peak}", "finite", bool(torch.isfinite(loss))
        )
        table.add(
            "fsdp_rank",
            "parameters with a finite gradient",
            f"{len(grads) - len(missing)} of {len(grads)}",
            "all",
            not missing and finite,
        )
    finally:
        dist.destroy_process_group()
        if device.type == "cuda":
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------- 3. estimators
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


def check_estimators(device: torch.device, sizes: list[int], repeat: int, table: Table) -> None:
    runs = {
        "gaussianize": lambda d: gaussianize(d["scores"], d["groups"]),
        "gs_grpo": lambda d: gs_grpo_advantages(d["scores"], d["groups"], d["tasks"]),
        "gs_gdpo": lambda d: gs_gdpo_advantages(
            d["components"], d["groups"], d["tasks"], [0.9, 0.1, 1.0], d["present"]
        ),
    }
    for n in sizes:
        b = estimator_batch(n)
        on = {k: v.to(device) for k, v in b.items()}
        for name, fn in runs.items():
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
            table.add(
                "estimators",
                f"{name} n={n} ({device.type} {1e3 * t_dev:.1f} ms, cpu {1e3 * t_cpu:.1f} ms)",
                f"max|Δ| {diff:.1e}, ties {'equal' if tie_ok else 'DIFFER'}",
                "≤ 1e-12, equal",
                diff <= 1e-12 and tie_ok,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument(
        "--tokens", type=int, help=f"entropy-loss micro-batch tokens (default {PRODUCTION_TOKENS}; cpu 256)"
    )
    parser.add_argument("--vocab", type=int, help=f"vocabulary (default {QWEN3_VL_VOCAB}; cpu 4096)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the compiled-entropy case (cpu: skipped unless --compile)"
    )
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the table as JSON here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check: --device {args.device} but torch {torch.__version__} sees no CUDA device "
            f"(torch.version.cuda={torch.version.cuda}); on a CPU-only machine use --device cpu",
            file=sys.stderr,
        )
        return 2
    cpu = device.type == "cpu"
    tokens = args.tokens or (256 if cpu else PRODUCTION_TOKENS)
    vocab = args.vocab or (4096 if cpu else QWEN3_VL_VOCAB)
    compile_ = (args.compile or not cpu) and not args.no_compile
    if device.type == "cuda":
        print(f"gpu_check: {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    table = Table()
    start = time.perf_counter()
    for name, run in (
        ("entropy loss", lambda: check_entropy_loss(device, tokens, vocab, table, compile_)),
        ("FSDP rank", lambda: check_fsdp_rank(device, table, small=cpu)),
        ("estimators", lambda: check_estimators(device, args.sizes, args.repeat, table)),
    ):
        print(f"gpu_check: {name} ...", flush=True)
        try:
            run()
        except Exception as err:  # one broken check (e.g. no compiler for torch.compile) must not hide the others
            table.add(name.replace(" ", "_"), "raised", f"{type(err).__name__}: {err}"[:200], "no error", False)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    elapsed = time.perf_counter() - start
    table.print()
    failures = table.failures()
    if args.json:
        args.json.write_text(
            json.dumps({"device": str(device), "rows": table.rows, "failures": failures, "seconds": elapsed}, indent=1)
        )
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print(f"gpu_check: {'FAILED' if failures else 'all checks passed'} in {elapsed:.0f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
