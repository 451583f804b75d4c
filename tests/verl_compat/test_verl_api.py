"""Every private verl name in g2rpo_verl.verl_compat.api, checked against the installed verl; the version guard.

When a verl upgrade renames, moves or reshapes one of these, a test here fails and names it,
instead of a training run failing (or silently computing something else) hours in.
"""

import inspect
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from g2rpo_verl.verl_compat import api as verl_api
from g2rpo_verl.verl_compat.api import TQ


def _source(obj) -> str:
    return inspect.getsource(obj)


# ------------------------------------------------------------------ the version guard


def test_the_installed_verl_is_in_the_tested_range():
    verl_api.check_verl_version()  # raises otherwise


@pytest.mark.parametrize("version", ["0.8.5", "0.9.0", "0.10.0", "1.0.0"])
def test_a_verl_outside_the_tested_range_is_refused_naming_the_range(version):
    with pytest.raises(RuntimeError, match=rf"tested with verl >=0.9.1,<0.10, but verl {version} is installed"):
        verl_api.check_verl_version(version, env={})


def test_the_environment_variable_turns_the_refusal_into_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="g2rpo_verl.verl_compat.api"):
        verl_api.check_verl_version("0.10.2", env={verl_api.ALLOW_UNTESTED_ENV: "1"})
    assert "verl 0.10.2 is installed" in caplog.text and "continuing" in caplog.text


def _fresh(code: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("VERL_", "G2RPO_"))}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=environ, timeout=180
    )


FAKE_VERSION = """
    import importlib.metadata as md
    real = md.version
    md.version = lambda name: "0.8.0" if name == "verl" else real(name)
    import verl  # loads the plugin through its entry point
    import verl.trainer.ppo.core_algos
    print("imported")
"""


def test_a_faked_old_verl_stops_the_first_hooked_import_in_a_fresh_process():
    # verl swallows entry-point errors, so the guard raises from the hooked import instead
    proc = _fresh(FAKE_VERSION)
    assert proc.returncode != 0 and "imported" not in proc.stdout
    assert "tested with verl >=0.9.1,<0.10, but verl 0.8.0 is installed" in proc.stderr
    allowed = _fresh(FAKE_VERSION, **{verl_api.ALLOW_UNTESTED_ENV: "1"})
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "imported" in allowed.stdout and "continuing" in allowed.stderr


# ------------------------------------------------------------------ registries and trainer hooks


def test_registries():
    assert "grpo" in verl_api.adv_estimator_registry() and "gs_grpo" in verl_api.adv_estimator_registry()
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    registry = verl_api.trainer_registry()
    assert "sync" in registry and all(issubclass(cls, PPOTrainer) for cls in registry.values())
    import importlib

    for name in (verl_api.MODULE_CORE_ALGOS, verl_api.MODULE_TRAINERS_V1, verl_api.MODULE_TRAINER_V0):
        importlib.import_module(name)
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    assert list(inspect.signature(RayPPOTrainer.__init__).parameters)[:2] == ["self", "config"]


@pytest.mark.parametrize("name, params", verl_api.TRAINER_HOOKS.items())
def test_trainer_methods_the_mixins_override_exist_with_their_signature(name, params):
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    method = getattr(PPOTrainer, name)
    assert tuple(inspect.signature(method).parameters)[: len(params)] == params


def test_trainer_attributes_the_mixins_read():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    source = _source(PPOTrainer)
    for attribute in ("self.global_steps", "self.tokenizer", "self.actor_rollout_wg", "self.distillation_config"):
        assert attribute in source, attribute


def test_actor_data_parallel_size_is_read_as_verl_reads_it():
    from verl.single_controller.base.worker import Worker
    from verl.single_controller.base.worker_group import WorkerGroup
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    assert "_query_dispatch_info" in _source(PPOTrainer._balance_batch)
    assert "self._dispatch_info = {}" in _source(WorkerGroup.__init__)
    assert hasattr(Worker, "_query_dispatch_info")


def test_the_actor_mini_batch_split_the_entropy_shaping_predicts():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine_workers import TrainingWorker

    source = _source(TrainingWorker.train_mini_batch)
    assert "tu.make_iterator(" in source and "seed=seed + self.engine.get_data_parallel_rank()" in source
    assert "mini_batch_size // self.engine.get_data_parallel_size()" in source
    assert list(inspect.signature(tu.make_iterator).parameters) == [
        "tensordict",
        "mini_batch_size",
        "epochs",
        "seed",
        "dataloader_kwargs",
    ]
    update = _source(PPOTrainer._update_actor)
    for key in ('"seed": self.config.actor_rollout_ref.actor.data_loader_seed', '"dataloader_kwargs"', '"epochs"'):
        assert key in update, key


def test_the_keys_verls_engine_puts_on_every_loss_micro_batch():
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine
    from verl.workers.utils import padding

    source = _source(FSDPEngine.forward_backward_batch)
    assert "batch_num_tokens=" in source and "dp_size=" in source
    assert 'data["loss_mask"] = data["response_mask"]' in _source(padding)  # tokens counted = response tokens
    from verl.workers.utils.losses import ppo_loss

    for key in verl_api.LOSS_BATCH_KEYS:
        assert f'data["{key}"]' in _source(ppo_loss) or key == "global_batch_size", key
    assert "global_batch_size" in _source(ppo_loss)
    from verl.workers.utils.padding import no_padding_2_padding, response_to_nested  # noqa: F401


# ------------------------------------------------------------------ the actor engine (gradient diagnostics)


def test_the_fsdp_engine_members_the_gradient_diagnostics_wrap_and_call():
    import importlib

    from verl.workers.engine.base import BaseEngine
    from verl.workers.engine_workers import TrainingWorker

    module = importlib.import_module(verl_api.MODULE_FSDP_ENGINE)
    cls_name, method = verl_api.ENGINE_TRAIN_BATCH
    engine = getattr(module, cls_name)
    train_batch = getattr(engine, method)
    assert getattr(train_batch, "_g2rpo_grad_diagnostics", False), "the plugin's wrapper is not installed"
    original = train_batch.__wrapped__
    assert original is BaseEngine.train_batch  # the FSDP engine inherits it: zero, forward/backward, step
    assert tuple(inspect.signature(original).parameters) == ("self", "data", "loss_function")
    body = _source(original)
    assert (
        body.index("self.optimizer_zero_grad()")
        < body.index("self.forward_backward_batch(")
        < body.index("self.optimizer_step()")
    )
    for name, params in verl_api.ENGINE_MEMBERS.items():
        assert tuple(inspect.signature(getattr(engine, name)).parameters)[: len(params)] == params, name
    assert "self.module" in _source(engine)
    # the engine counts the mini-batch's tokens from loss_mask; the loss reads response_mask
    assert 'batch_num_tokens = data["loss_mask"].sum()' in _source(engine.forward_backward_batch)
    # called once per mini-batch, inside train mode, with the worker's loss function
    assert "self.engine.train_batch(data, loss_function=self.loss_fn)" in _source(TrainingWorker.train_batch)


def test_extra_info_reaches_the_worker_and_worker_metrics_are_prefixed():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer
    from verl.utils import transferqueue_utils

    assert "tu.assign_non_tensor_data(tensor_dict=tensordict, key=key, val=val)" in _source(
        transferqueue_utils._async_meta_to_realdata
    )
    update = _source(PPOTrainer._update_actor)
    assert "batch.extra_info.update(extra_info)" in update
    assert f'rename_dict(output["metrics"], "{verl_api.WORKER_METRIC_PREFIX}")' in update


# ------------------------------------------------------------------ TransferQueue fields and keys


def test_transfer_queue_fields():
    from verl.trainer.ppo.v1 import agent_loop_tq, trainer_base
    from verl.trainer.ppo.v1 import utils as v1_utils

    base = _source(trainer_base)
    for field in (TQ.UID, TQ.RM_SCORES, TQ.RESPONSE_MASK, TQ.RESPONSES, TQ.ADVANTAGES, TQ.ENTROPY, TQ.OLD_LOG_PROBS):
        assert f'"{field}"' in base, field
    loop = _source(agent_loop_tq)
    assert f'extra_fields["{TQ.REWARD_EXTRA_INFO}"]' in loop
    assert 'key.rsplit("_", 2)' in _source(v1_utils.compute_advantage_for_multi_trajectories)
    assert verl_api.group_uid("ab12_3_0") == "ab12" and verl_api.group_uid("a_b_3_0") == "a_b"


def test_the_dataset_columns_reach_transfer_queue():
    from verl.utils.dataset import rl_dataset

    source = _source(rl_dataset)
    for column in (TQ.DATA_SOURCE, TQ.EXTRA_INFO):
        assert f'"{column}"' in source, column


# ------------------------------------------------------------------ replay buffer


@pytest.mark.parametrize("name, params", verl_api.REPLAY_BUFFER_HOOKS.items())
def test_replay_buffer_members_the_band_filter_uses(name, params):
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    assert tuple(inspect.signature(getattr(ReplayBuffer, name)).parameters)[: len(params)] == params


def test_replay_buffer_attributes_and_constants():
    from verl.trainer.ppo.v1 import replay_buffer

    init = _source(replay_buffer.ReplayBuffer.__init__)
    for attribute in verl_api.REPLAY_BUFFER_ATTRIBUTES:
        assert f"self.{attribute}" in init, attribute
    assert replay_buffer.FILTER_GROUPS_REWARD_METRIC == verl_api.FILTER_REWARD_METRIC
    sample = _source(replay_buffer.ReplayBuffer.sample)
    assert "self._terminal_eviction_reasons(" in sample and "self.refill_fn(" in sample


# ------------------------------------------------------------------ files, console


def test_checkpoint_layout_and_tracker_file():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer
    from verl.utils.checkpoint.checkpoint_manager import get_checkpoint_tracker_filename

    save = _source(PPOTrainer._save_checkpoint)
    assert 'f"global_step_{self.global_steps}"' in save
    assert f'os.path.join(local_global_step_folder, "{verl_api.ACTOR_CHECKPOINT_DIR}")' in save
    assert verl_api.checkpoint_folder("/ckpt", 7) == "/ckpt/global_step_7"
    from verl.utils.checkpoint import fsdp_checkpoint_manager

    manager = _source(fsdp_checkpoint_manager)
    for marker in verl_api.ACTOR_CHECKPOINT_MARKERS:
        assert f'os.path.join(local_path, "{marker}")' in manager, marker
    assert os.path.basename(get_checkpoint_tracker_filename("/x")) == verl_api.TRACKER_FILE


def test_console_logger_line_format():
    from verl.utils.logger.aggregate_logger import concat_dict_to_str

    from g2rpo_verl.demo.trainer_process import parse_step_line

    line = concat_dict_to_str({"val-core/demo_ocr/acc/mean@2": 0.5, "training/global_step": 3}, step=3)
    assert line.startswith(verl_api.CONSOLE_STEP_PREFIX + "3" + verl_api.CONSOLE_SEPARATOR)
    parsed = parse_step_line(line)
    assert parsed.step == 3 and parsed.validation_accuracy() == {"demo_ocr": 0.5}


def test_verl_config_dir_is_found_without_importing_verl():
    assert os.path.isfile(os.path.join(verl_api.verl_config_dir(), "ppo_trainer.yaml"))


# ------------------------------------------------------------------ the CPU backend's


def test_cpu_backend_private_names():
    from verl.utils import distributed
    from verl.workers.engine import base as engine_base
    from verl.workers.rollout import base as rollout_base

    from g2rpo_verl.cpu import engine_fixes

    assert isinstance(rollout_base._ROLLOUT_REGISTRY, dict)
    assert 'os.getenv("VERL_ENGINE_DEVICE")' in _source(engine_base)
    assert 'f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"' in _source(distributed)
    from torch.distributed.fsdp import CPUOffloadPolicy
    from verl.utils import model as verl_model
    from verl.workers.engine.fsdp import transformer_impl

    assert transformer_impl.CPUOffloadPolicy in (CPUOffloadPolicy, engine_fixes.UnpinnedCPUOffloadPolicy)
    assert "CPUOffloadPolicy(pin_memory=True)" in _source(transformer_impl)
    loader = getattr(verl_model.load_valuehead_model, "__wrapped__", verl_model.load_valuehead_model)
    assert list(inspect.signature(loader).parameters) == [
        "local_path",
        "torch_dtype",
        "model_config",
        "trust_remote_code",
    ]
    assert 'attn_implementation="flash_attention_2"' in _source(loader)


def test_the_dataset_hook_the_vl_dataset_overrides():
    from verl.utils.dataset.rl_dataset import RLHFDataset

    params = list(inspect.signature(RLHFDataset._process_multi_modal_info).parameters)
    assert params == ["messages", "image_patch_size", "config"]  # a classmethod: cls is bound


def test_every_listed_dependency_has_a_use():
    assert all(isinstance(use, str) and use for use in verl_api.PRIVATE_SYMBOLS.values())
    assert len(verl_api.PRIVATE_SYMBOLS) >= 15
