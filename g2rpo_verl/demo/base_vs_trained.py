"""The demo's last stage: export the trained policy and compare it with the base model, greedy.

After training, :func:`export_and_evaluate`

1. merges verl's latest actor checkpoint (``DIR/checkpoints``) into ``DIR/hf`` with verl's
   model_merger (:func:`g2rpo_verl.evaluation.checkpoint.export_checkpoint`): an HF model
   directory with tokenizer and processor;
2. evaluates the base model ``DIR/model`` and ``DIR/hf`` on the held-out validation files with
   ``g2rpo-eval``'s loop (greedy, the run's reward and ``max_response_length`` from
   ``DIR/hydra/.hydra/config.yaml``) into ``DIR/eval/base`` and ``DIR/eval/trained``;
3. writes the per-task comparison (paired bootstrap intervals) to ``DIR/eval/base_vs_trained.md``
   and returns its lines for the console;
4. writes VLMEvalKit / lmms-eval hand-off configs for ``DIR/hf`` into ``DIR/handoff``.

Verl's own validation during training samples (T 0.7, two responses per prompt); this table is
greedy, one response per prompt, so its numbers differ from the training curves' last point.
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["TABLE_FILE", "export_and_evaluate"]

TABLE_FILE = "base_vs_trained.md"


def export_and_evaluate(workdir: Path, log=print) -> list[str]:
    """Export, evaluate base and trained, compare (module docstring); returns the table's lines.

    Without a checkpoint (``trainer.save_freq`` never reached) it says so and returns ``[]``;
    raises ``FileNotFoundError`` when the validation data or the run config is missing.
    """
    from transformers.utils import logging as hf_logging

    from g2rpo_verl.demo.data import find_demo_data
    from g2rpo_verl.evaluation.checkpoint import TRACKER_FILE, export_checkpoint, find_run_config, resolve_model
    from g2rpo_verl.evaluation.eval_loop import EvalSettings, evaluate
    from g2rpo_verl.evaluation.generation import Decoding
    from g2rpo_verl.evaluation.handoff import write_handoff
    from g2rpo_verl.evaluation.paired import compare_dirs
    from g2rpo_verl.evaluation.run_config import load_run_config
    from g2rpo_verl.evaluation.tables import comparison_table

    hf_logging.disable_progress_bar()  # one "Loading weights" bar per model on the demo's console
    started = time.monotonic()
    if not (workdir / "checkpoints" / TRACKER_FILE).is_file():
        log(f"no checkpoint in {workdir / 'checkpoints'} (trainer.save_freq): no export, no base-vs-trained table")
        return []
    source = resolve_model(workdir / "checkpoints")
    config = find_run_config(source)
    if config is None:
        raise FileNotFoundError(f"no run config for {source.path} under {workdir / 'hydra'}")
    data = find_demo_data(workdir / "data")
    if data is None:
        raise FileNotFoundError(f"no demo data in {workdir / 'data'}")
    run = load_run_config(config)
    hf = export_checkpoint(source.path, workdir / "hf", log=log)
    decoding = Decoding(max_new_tokens=int(run.data["max_response_length"]))  # as in training
    val_files = tuple(str(p) for p in data.val_files)
    outs = {"base": workdir / "eval" / "base", "trained": workdir / "eval" / "trained"}
    for name, model_dir in (("base", workdir / "model"), ("trained", hf)):
        settings = EvalSettings(
            model=str(model_dir),
            model_dir=str(model_dir),
            data=val_files,
            decoding=decoding,
            run=run,
            backend="hf",
            batch_size=32,
        )
        # the models change from run to run of the demo (retraining, --rebuild): always start over
        evaluate(settings, outs[name], overwrite=True, progress=False, log=log)
    trained = f"step {source.step}"
    table = [
        f"Base model vs the policy trained to {trained} ({hf}), greedy, {len(val_files)} held-out validation files; "
        "Δ = trained - base, 95% paired bootstrap interval over prompts:",
        "",
        *comparison_table(compare_dirs(outs["base"], outs["trained"]), "base", trained),
    ]
    (workdir / "eval" / TABLE_FILE).write_text("\n".join(table) + "\n")
    write_handoff(
        hf, workdir / "handoff", name=f"g2rpo_demo_{trained.replace(' ', '_')}", max_new_tokens=decoding.max_new_tokens
    )
    log(
        f"export and evaluation in {time.monotonic() - started:.0f} s: {workdir / 'eval' / TABLE_FILE}, hand-off configs in {workdir / 'handoff'}"
    )
    return table
