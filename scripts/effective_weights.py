"""Each task's weight in the actor loss under verl's token-mean vs g2rpo's task_mean, at the
paper's reported response lengths (docs/method.md, "Loss aggregation"); prints a Markdown table.

    python scripts/effective_weights.py

Lengths (tokens, start -> ~100 steps) from the paper as quoted in the design notes: general VQA
950 -> 1400, math 600 -> 1100, grounding 125 -> 65, documents 105 -> 30-50 (40 taken). Equal
numbers of samples per task in the mini-batch (the demo's and the recipe's interleaving).
"""

from __future__ import annotations

import torch

from g2rpo_verl.algorithms.loss_agg import effective_task_weights

TASKS = ("general VQA", "math", "grounding", "documents")
LENGTHS = {"start": (950.0, 600.0, 125.0, 105.0), "after ~100 steps": (1400.0, 1100.0, 65.0, 40.0)}


def main() -> None:
    counts = torch.ones(len(TASKS))
    print(
        "| lengths | task | tokens | token-mean: task weight | task_mean: task weight | "
        "token-mean: sample vs grounding |"
    )
    print("|---|---|---|---|---|---|")
    for when, lengths in LENGTHS.items():
        w = effective_task_weights(torch.tensor(lengths), counts)
        ground = w["token_mean_sample"][TASKS.index("grounding")]
        for t, name in enumerate(TASKS):
            print(
                f"| {when} | {name} | {lengths[t]:.0f} | {w['token_mean_task'][t]:.3f} | "
                f"{w['task_mean_task'][t]:.3f} | {w['token_mean_sample'][t] / ground:.1f}x |"
            )


if __name__ == "__main__":
    main()
