"""Hand-off to the standard benchmarks: VLMEvalKit and lmms-eval configs for an exported model.

:func:`write_handoff` writes, for an HF model directory ``MODEL``:

* ``vlmevalkit.json`` - a VLMEvalKit ``run.py --config`` file: the model as ``Qwen3VLChat``
  (``model_path`` = ``MODEL``, greedy: ``do_sample`` false) and the datasets
  :data:`VLMEVALKIT_DATA` (MathVista, MMMU). Run ``python run.py --config vlmevalkit.json`` in a
  VLMEvalKit checkout;
* ``lmms_eval.sh`` - one ``python -m lmms_eval --model qwen3_vl --model_args pretrained=MODEL``
  command per benchmark of :data:`LMMS_EVAL_TASKS` (MathVista, MMMU, RefCOCO grounding), each
  writing into its own output folder under the script's directory.

Neither tool is installed or run by this project (they need GPUs and downloads); the content of
the files is tested. The paper's authors score grounding with OneThinker's scripts (mean IoU and
R@0.3/0.5/0.7, greedy): ``g2rpo-eval`` computes those numbers on your own grounding files; the
lmms-eval RefCOCO task is the closest public one-command equivalent.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

__all__ = [
    "LMMS_EVAL_MODEL",
    "LMMS_EVAL_TASKS",
    "VLMEVALKIT_CLASS",
    "VLMEVALKIT_DATA",
    "lmms_eval_commands",
    "vlmevalkit_config",
    "write_handoff",
]

#: VLMEvalKit's Qwen3-VL wrapper class
VLMEVALKIT_CLASS = "Qwen3VLChat"
#: VLMEvalKit dataset name -> its dataset class
VLMEVALKIT_DATA = {"MathVista_MINI": "MathVista", "MMMU_DEV_VAL": "MMMUDataset"}
#: lmms-eval's Qwen3-VL model name
LMMS_EVAL_MODEL = "qwen3_vl"
#: lmms-eval task names: MathVista testmini, MMMU validation, RefCOCO grounding (val)
LMMS_EVAL_TASKS = ("mathvista_testmini", "mmmu_val", "refcoco_bbox_rec_val")


def vlmevalkit_config(model_dir: str | os.PathLike, name: str, max_new_tokens: int = 4096) -> dict:
    """The ``run.py --config`` content for ``model_dir`` (see the module docstring)."""
    return {
        "model": {
            name: {
                "class": VLMEVALKIT_CLASS,
                "model_path": str(Path(model_dir).resolve()),
                "max_new_tokens": int(max_new_tokens),
                "do_sample": False,
                "use_custom_prompt": False,
            }
        },
        "data": {dataset: {"class": cls, "dataset": dataset} for dataset, cls in VLMEVALKIT_DATA.items()},
    }


def lmms_eval_commands(model_dir: str | os.PathLike, output_dir: str = "lmms_eval_results") -> list[list[str]]:
    """One ``python -m lmms_eval`` argument list per task of :data:`LMMS_EVAL_TASKS`."""
    pretrained = str(Path(model_dir).resolve())
    return [
        [
            "python",
            "-m",
            "lmms_eval",
            "--model",
            LMMS_EVAL_MODEL,
            "--model_args",
            f"pretrained={pretrained}",
            "--tasks",
            task,
            "--batch_size",
            "1",
            "--output_path",
            f"{output_dir}/{task}",
        ]
        for task in LMMS_EVAL_TASKS
    ]


def write_handoff(
    model_dir: str | os.PathLike, out_dir: str | os.PathLike, name: str | None = None, max_new_tokens: int = 4096
) -> dict[str, Path]:
    """Write ``vlmevalkit.json`` and ``lmms_eval.sh`` into ``out_dir``; returns their paths.

    Raises ``FileNotFoundError`` when ``model_dir`` is not an HF model directory.
    """
    from g2rpo_verl.evaluation.checkpoint import is_hf_model_dir

    model = Path(model_dir).expanduser().resolve()
    if not is_hf_model_dir(model):
        raise FileNotFoundError(
            f"--handoff {model_dir}: not an HF model directory (config.json + weights); export a checkpoint with g2rpo-eval --model first"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = name or model.name
    vlm = out / "vlmevalkit.json"
    vlm.write_text(json.dumps(vlmevalkit_config(model, name, max_new_tokens), indent=2) + "\n")
    lines = [
        "#!/usr/bin/env bash",
        f"# lmms-eval on the model at {model} (written by g2rpo-eval --handoff).",
        "# Needs a GPU machine with lmms-eval installed (pip install lmms-eval); one benchmark per command.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        *[shlex.join(cmd) for cmd in lmms_eval_commands(model)],
        "",
    ]
    lmms = out / "lmms_eval.sh"
    lmms.write_text("\n".join(lines))
    lmms.chmod(0o755)
    return {"vlmevalkit": vlm, "lmms_eval": lmms}
