"""What ``--model`` points at: an HF model directory or a verl FSDP checkpoint, and its run config.

Accepted forms of ``--model`` (:func:`resolve_model`):

* an HF model directory (``config.json`` + weights): used as it is;
* a verl actor checkpoint ``.../global_step_N/actor`` (``fsdp_config.json`` + the per-rank
  ``model_world_size_W_rank_R.pt`` shards + ``huggingface/`` with config, tokenizer, processor);
* ``.../global_step_N`` (its ``actor``), or verl's checkpoint root (``trainer.default_local_dir``,
  the step in ``latest_checkpointed_iteration.txt``).

A checkpoint is merged into an HF directory by verl's own ``model_merger`` (its Python API,
the same code as ``python -m verl.model_merger merge --backend fsdp --local_dir ACTOR
--target_dir DIR``), into a temporary directory that is renamed when complete, so an
interrupted export is never mistaken for a model. Two properties of verl 0.9.1's merger that a
user should know: it writes **bfloat16** weights (the dtype GPU rollouts run in), and it saves
the processor and tokenizer from the checkpoint's ``huggingface/`` folder. A processor loaded
through ``auto_map`` remote code (the CPU demo's torchvision-free Qwen3-VL processor) keeps its
code file: :func:`export_checkpoint` copies the checkpoint's ``*.py`` files the export lacks.

The run's Hydra config (``.hydra/config.yaml``, what ``verl.trainer.main_ppo`` composed) is found
by :func:`find_run_config` next to the checkpoint when the run put it there (the demo does:
``hydra.run.dir=<workdir>/hydra``); otherwise pass ``--config``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from g2rpo_verl.verl_compat import api as verl_api

__all__ = [
    "EXPORT_MARKER",
    "ModelSource",
    "TRACKER_FILE",
    "export_checkpoint",
    "find_run_config",
    "is_hf_model_dir",
    "resolve_model",
]

#: verl's checkpoint tracker file name and folder layout (listed in :mod:`g2rpo_verl.verl_compat.api`);
#: read as text so this module does not import verl.
TRACKER_FILE = verl_api.TRACKER_FILE
_STEP = verl_api.CHECKPOINT_STEP_PREFIX
#: written into an exported directory: which checkpoint it came from (reuse check).
EXPORT_MARKER = "g2rpo_export.json"
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``--model``: ``kind`` is ``"hf"`` (``path`` is the model) or ``"checkpoint"``
    (``path`` is the actor checkpoint directory, ``step`` its global step when known)."""

    kind: str
    path: Path
    step: int | None = None


def is_hf_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / w).is_file() for w in _WEIGHTS)


def _is_actor_checkpoint(path: Path) -> bool:
    config, hf = verl_api.ACTOR_CHECKPOINT_MARKERS
    return (path / config).is_file() and (path / hf).is_dir()


def _step_of(path: Path) -> int | None:
    for part in (path.name, path.parent.name):
        if part.startswith(_STEP) and part[len(_STEP) :].isdigit():
            return int(part[len(_STEP) :])
    return None


def resolve_model(model: str | os.PathLike) -> ModelSource:
    """Resolve ``--model`` (see the module docstring); raises ``FileNotFoundError`` saying what was looked for."""
    path = Path(model).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"--model {model}: no such directory")
    if is_hf_model_dir(path):
        return ModelSource("hf", path)
    if _is_actor_checkpoint(path):
        return ModelSource("checkpoint", path, _step_of(path))
    if _is_actor_checkpoint(path / verl_api.ACTOR_CHECKPOINT_DIR):
        return ModelSource("checkpoint", path / verl_api.ACTOR_CHECKPOINT_DIR, _step_of(path))
    tracker = path / TRACKER_FILE
    if tracker.is_file():
        step = tracker.read_text().strip()
        actor = Path(verl_api.checkpoint_folder(str(path), step)) / verl_api.ACTOR_CHECKPOINT_DIR
        if _is_actor_checkpoint(actor):
            return ModelSource("checkpoint", actor, int(step) if step.isdigit() else None)
        raise FileNotFoundError(
            f"--model {model}: {tracker} names step {step!r} but {actor} is not a verl actor checkpoint"
        )
    if (path / "fsdp_config.json").is_file():
        raise FileNotFoundError(
            f"--model {model}: a verl checkpoint without its huggingface/ folder (config, tokenizer) cannot be merged"
        )
    raise FileNotFoundError(
        f"--model {model}: neither an HF model directory (config.json + {' / '.join(_WEIGHTS[::2])}) nor a verl "
        f"checkpoint (global_step_N/actor with fsdp_config.json and huggingface/, or a checkpoint root with {TRACKER_FILE})"
    )


def _fingerprint(actor: Path) -> dict:
    shards = sorted(actor.glob("model_world_size_*_rank_*.pt"))
    return {
        "checkpoint": str(actor),
        "shards": [{"name": s.name, "bytes": s.stat().st_size, "mtime_ns": s.stat().st_mtime_ns} for s in shards],
    }


def export_checkpoint(actor: str | os.PathLike, target: str | os.PathLike, log=print) -> Path:
    """Merge the FSDP actor checkpoint ``actor`` into the HF directory ``target`` with verl's merger.

    Reuses ``target`` when its :data:`EXPORT_MARKER` names the same checkpoint files (path, size,
    mtime); otherwise replaces it. Returns ``target``.
    """
    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    actor, target = Path(actor).resolve(), Path(target).resolve()
    fingerprint = _fingerprint(actor)
    marker = target / EXPORT_MARKER
    if marker.is_file() and is_hf_model_dir(target):
        try:
            if json.loads(marker.read_text()) == fingerprint:
                log(f"export: {target} is already the merge of {actor}")
                return target
        except (OSError, ValueError):
            pass
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = ModelMergerConfig(
        operation="merge",
        backend="fsdp",
        local_dir=str(actor),
        target_dir=str(tmp),
        hf_model_config_path=str(actor / "huggingface"),
        trust_remote_code=True,
    )
    printed = io.StringIO()
    # unpickling the shards' DTensors outside a process group warns once per shard; harmless here
    mesh_logger = logging.getLogger("torch.distributed.device_mesh")
    level = mesh_logger.level
    mesh_logger.setLevel(logging.ERROR)
    try:
        # the merger narrates each step with print() and progress bars: kept for an error message
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            merger = FSDPModelMerger(config)
            merger.merge_and_save()
            merger.cleanup()
    except Exception as err:
        raise RuntimeError(f"verl's model_merger failed on {actor}: {err}\n{printed.getvalue()[-2000:]}") from err
    finally:
        mesh_logger.setLevel(level)
    # remote code (auto_map) the processor or model needs, e.g. the CPU demo's processor module
    for code in (actor / "huggingface").glob("*.py"):
        if not (tmp / code.name).exists():
            shutil.copy2(code, tmp / code.name)
    (tmp / EXPORT_MARKER).write_text(json.dumps(fingerprint, indent=2) + "\n")
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    log(f"export: merged {actor} into {target} (verl model_merger, bfloat16 weights)")
    return target


#: Where a run's Hydra config lies relative to a directory of the run (verl's main_ppo writes
#: ``<hydra.run.dir>/.hydra/config.yaml``; the demo sets ``hydra.run.dir=<workdir>/hydra``).
RUN_CONFIG_PLACES = (".hydra/config.yaml", "hydra/.hydra/config.yaml")
#: Directories looked in above the model: the model's own and this many parents.
RUN_CONFIG_LEVELS = 4


def find_run_config(model: ModelSource) -> Path | None:
    """The run's ``.hydra/config.yaml`` for a checkpoint or an HF export, when the run can be traced.

    Looks in :data:`RUN_CONFIG_PLACES` of the model's directory and each of its
    :data:`RUN_CONFIG_LEVELS` parents. A checkpoint's config is accepted only if its
    ``trainer.default_local_dir`` is the checkpoint's root; an HF directory's only if the run's
    ``trainer.default_local_dir`` lies inside the directory the config was found in (the demo's
    ``DIR/hf`` and ``DIR/model`` with ``DIR/checkpoints``; an export under ``global_step_N/hf``).
    So a stray config of another run is never picked. None when nothing matches.
    """
    from omegaconf import OmegaConf

    root = model.path.parent.parent if model.kind == "checkpoint" else None  # .../<root>/global_step_N/actor
    here = model.path
    for _ in range(RUN_CONFIG_LEVELS + 1):
        for place in RUN_CONFIG_PLACES:
            candidate = here / place
            if not candidate.is_file():
                continue
            try:
                local_dir = OmegaConf.load(candidate).trainer.default_local_dir
            except Exception:
                continue
            if not local_dir:
                continue
            local = Path(str(local_dir)).expanduser().resolve()
            if root is not None and local == root.resolve():
                return candidate
            if root is None and (local == here.resolve() or here.resolve() in local.parents):
                return candidate
        here = here.parent
    return None
    from omegaconf import OmegaConf

    root = model.path.parent.parent  # .../<root>/global_step_N/actor
    here = model.path
    for _ in range(5):
        for candidate in (here / ".hydra" / "config.yaml", here / "hydra" / ".hydra" / "config.yaml"):
            if candidate.is_file():
                try:
                    local_dir = OmegaConf.load(candidate).trainer.default_local_dir
                except Exception:
                    continue
                if local_dir and Path(str(local_dir)).expanduser().resolve() == root.resolve():
                    return candidate
        here = here.parent
    return None
