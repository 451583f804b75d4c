"""Tests of the CPU backend (g2rpo_verl.cpu): platform, hf rollout, tiny model/data, smoke CLI.

Everything except the ``e2e`` test runs in-process in seconds. The ``e2e`` test runs the real
``verl.trainer.main_ppo`` through ``python -m g2rpo_verl.demo.smoke`` (about a minute on 2 cores).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.distributed

from g2rpo_verl import cpu
from g2rpo_verl.cpu.hf_generation import HFGenerator, SamplingSpec, load_hf_model, vision_token_ids
from g2rpo_verl.cpu.platform import PlatformCPU, collapse_duplicate_backends, install_backend_string_fix
from g2rpo_verl.demo.fixtures import tiny
from g2rpo_verl.demo.fixtures.toy_reward import ADDITION, CHOICE, compute_score

MAX_NEW = 12


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # The model is tiny; on a shared 2-core machine spinning OpenMP threads only slow it down.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    # A short warm start is enough for the model to emit the answer format and EOS.
    return tiny.build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "model", seed=0, warm_start_steps=60)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture
def generator(model_dir, tokenizer) -> HFGenerator:
    return HFGenerator(load_hf_model(str(model_dir)), [tokenizer.eos_token_id], tokenizer.pad_token_id)


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    questions = ["What is 12 plus 30?", "Which number is the largest?\nA. 3\nB. 9\nC. 4\nD. 1", "Say hi."]
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)[
            "input_ids"
        ]
        for q in questions
    ]


def forward_log_probs(model, prompt: list[int], response: list[int], temperature: float) -> torch.Tensor:
    """What verl's trainer computes: log_softmax(logits / T) of each response token, one forward pass."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, torch.tensor(response).unsqueeze(-1)).squeeze(-1)


def next_token_logits(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        return model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()


# ------------------------------------------------------------------------------------------------
# platform
# ------------------------------------------------------------------------------------------------
def test_platform_answers_for_the_cpu():
    platform = PlatformCPU()  # instantiable: every abstract method of PlatformBase is implemented
    assert platform.device_name == "cpu"
    assert platform.current_device() == "cpu"
    assert torch.zeros(1).to(platform.current_device()).device.type == "cpu"
    assert platform.communication_backend_name() == "gloo"
    assert platform.ray_resource_name() == "GPU"
    assert platform.ray_resource_options(1) == {"num_gpus": 1}
    assert platform.is_available() and not platform.is_platform_available(use_smi_check=True)
    assert platform.get_device_capability() == (None, None)
    assert platform.cudart() is None and not platform.is_ipc_supported()
    with platform.nvtx_range("x"):
        pass


def test_device_module_stands_in_for_torch_cuda():
    module = PlatformCPU().device_module
    assert module.is_available() and module.device_count() == 1
    assert module.memory_allocated() == 0 and module.max_memory_reserved() == 0
    free, total = module.mem_get_info()
    assert 0 < free <= total
    module.empty_cache()
    module.synchronize()
    module.memory._set_allocator_settings("expandable_segments:False")
    with module.nvtx.range("x"):
        pass
    module.manual_seed(3)
    a = torch.rand(2)
    module.set_rng_state(module.get_rng_state())
    module.manual_seed(3)
    assert torch.equal(a, torch.rand(2))
    assert module.Stream is torch.cpu.Stream  # everything else falls through to torch.cpu
    with pytest.raises(AttributeError):
        module.no_such_cuda_api  # noqa: B018


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("cpu:gloo,cpu:gloo", "cpu:gloo"),
        ("cpu:gloo, cpu:gloo", "cpu:gloo"),
        ("cpu:gloo,cuda:nccl", "cpu:gloo,cuda:nccl"),
        ("cpu:gloo,cpu:mpi", "cpu:gloo,cpu:mpi"),  # a real conflict is torch's to report
        ("gloo", "gloo"),
        (None, None),
    ],
)
def test_collapse_duplicate_backends(backend, expected):
    assert collapse_duplicate_backends(backend) == expected


def test_backend_fix_rewrites_only_the_backend_and_is_idempotent(monkeypatch):
    calls = []

    def fake_init(*args, **kwargs):
        calls.append((args, kwargs))

    monkeypatch.setattr(torch.distributed, "init_process_group", fake_init)
    assert install_backend_string_fix() is True
    wrapped = torch.distributed.init_process_group
    assert install_backend_string_fix() is False
    assert torch.distributed.init_process_group is wrapped
    wrapped(backend="cpu:gloo,cpu:gloo", rank=0, world_size=1)
    wrapped("cpu:gloo,cpu:gloo", init_method="env://")
    assert calls == [
        ((), {"backend": "cpu:gloo", "rank": 0, "world_size": 1}),
        (("cpu:gloo",), {"init_method": "env://"}),
    ]


def test_backend_fix_makes_verls_backend_string_work_with_gloo(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.distributed, "init_process_group", torch.distributed.init_process_group)
    install_backend_string_fix()
    # exactly what verl's initialize_global_process_group_ray builds on the CPU platform
    torch.distributed.init_process_group(
        backend="cpu:gloo,cpu:gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1
    )
    try:
        t = torch.ones(3)
        torch.distributed.all_reduce(t)
        assert torch.equal(t, torch.ones(3))
    finally:
        torch.distributed.destroy_process_group()


def test_enabled_reads_verl_platform(monkeypatch):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    assert not cpu.enabled()
    monkeypatch.setenv("VERL_PLATFORM", "nvidia")
    assert not cpu.enabled()
    monkeypatch.setenv("VERL_PLATFORM", " CPU ")
    assert cpu.enabled()


def test_register_is_idempotent_and_patches_torch_only_when_enabled(monkeypatch):
    from verl.plugin.platform import PlatformRegistry
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class

    from g2rpo_verl.cpu.hf_rollout import HFReplica, HFServerAdapter

    def original(*args, **kwargs):  # an unwrapped init_process_group (restored afterwards)
        return None

    monkeypatch.setattr(torch.distributed, "init_process_group", original)

    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    cpu.register()
    cpu.register()
    assert PlatformRegistry.get("cpu") is PlatformCPU
    assert get_rollout_class("hf", "async") is HFServerAdapter
    assert get_rollout_replica_class("hf") is HFReplica
    assert torch.distributed.init_process_group is original  # CPU platform not active

    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    cpu.register()
    wrapped = torch.distributed.init_process_group
    assert wrapped is not original
    cpu.register()
    assert torch.distributed.init_process_group is wrapped


def test_cpu_env_selects_platform_and_engine():
    assert cpu.CPU_ENV["VERL_PLATFORM"] == "cpu"
    assert cpu.CPU_ENV["VERL_ENGINE_DEVICE"] == "cuda"
    assert all(isinstance(v, str) for v in cpu.CPU_ENV.values())


def test_cpu_overrides_compose_with_verls_config():
    from hydra import compose, initialize_config_module

    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose("ppo_trainer", overrides=cpu.cpu_overrides())
    assert cfg.trainer.device == "cpu"
    assert cfg.trainer.n_gpus_per_node == 1 and cfg.ray_kwargs.ray_init.num_gpus == 1
    # the fake GPU units Ray gets follow trainer.n_gpus_per_node, however it is set; main_ppo
    # unpacks ray_init with ** (which resolves the interpolation) before ray.init
    with initialize_config_module("verl.trainer.config", version_base=None):
        two = compose("ppo_trainer", overrides=[*cpu.cpu_overrides(), "trainer.n_gpus_per_node=2"])
    assert {**two.ray_kwargs.ray_init}["num_gpus"] == 2
    assert cfg.actor_rollout_ref.rollout.name == "hf"
    assert cfg.actor_rollout_ref.rollout.tensor_model_parallel_size == 1
    assert cfg.actor_rollout_ref.actor.strategy == "fsdp2" and cfg.actor_rollout_ref.ref.strategy == "fsdp2"
    assert cfg.actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype == "fp32"
    assert cfg.actor_rollout_ref.model.override_config.attn_implementation == "eager"
    assert cfg.actor_rollout_ref.model.use_remove_padding is False
    assert cfg.actor_rollout_ref.rollout.agent.num_workers == 1 and cfg.reward.num_workers == 1
    assert cfg.transfer_queue.backend.SimpleStorage.num_data_storage_units == 1
    assert cfg.data.dataloader_num_workers == 0


# ------------------------------------------------------------------------------------------------
# generation engine
# ------------------------------------------------------------------------------------------------
def test_sampling_spec_from_verl_params():
    spec = SamplingSpec.from_verl(
        {"temperature": 0.7, "top_p": 0.9, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}, 16
    )
    assert (spec.max_new_tokens, spec.temperature, spec.top_p, spec.top_k) == (16, 0.7, 0.9, 0)
    assert spec.return_log_probs and not spec.greedy and spec.logprob_temperature == 0.7
    greedy = SamplingSpec.from_verl({"temperature": 0, "top_k": 5, "max_tokens": 3, "logprobs": False}, 16)
    assert greedy.greedy and greedy.logprob_temperature == 1.0
    assert greedy.max_new_tokens == 3 and greedy.top_k == 5 and not greedy.return_log_probs
    assert SamplingSpec.from_verl({"max_new_tokens": 4}, 16).max_new_tokens == 4
    for bad in ({"top_p": 0.0}, {"temperature": -1.0}, {"max_tokens": 0}):
        with pytest.raises(ValueError):
            SamplingSpec.from_verl(bad, 16)


def test_greedy_is_deterministic_and_follows_the_argmax(generator, prompts):
    spec = SamplingSpec(max_new_tokens=MAX_NEW, temperature=0)
    for prompt in prompts:
        first = generator.generate(prompt, spec)
        assert generator.generate(prompt, spec).token_ids == first.token_ids
        logits = next_token_logits(generator.model, prompt, first.token_ids)
        assert logits.argmax(-1).tolist() == first.token_ids
        # greedy log-probs are reported at temperature 1
        expected = forward_log_probs(generator.model, prompt, first.token_ids, 1.0)
        assert torch.allclose(torch.tensor(first.log_probs), expected, atol=1e-4)


def test_sampling_is_seeded_and_differs_from_greedy(generator, prompts):
    prompt = prompts[2]
    spec = SamplingSpec(max_new_tokens=MAX_NEW, temperature=1.5, seed=11)
    a, b = generator.generate(prompt, spec), generator.generate(prompt, spec)
    assert a.token_ids == b.token_ids and a.log_probs == b.log_probs
    specs = [SamplingSpec(max_new_tokens=MAX_NEW, temperature=1.5, seed=s) for s in range(6)]
    assert len({tuple(generator.generate(prompt, spec).token_ids) for spec in specs}) > 1


def test_sampled_log_probs_match_a_forward_pass_at_the_sampling_temperature(generator, prompts):
    for temperature in (1.0, 0.6, 1.7):
        for i, prompt in enumerate(prompts):
            out = generator.generate(prompt, SamplingSpec(max_new_tokens=MAX_NEW, temperature=temperature, seed=i))
            expected = forward_log_probs(generator.model, prompt, out.token_ids, temperature)
            assert len(out.log_probs) == len(out.token_ids)
            assert torch.allclose(torch.tensor(out.log_probs), expected, atol=1e-4)


def test_top_k_restricts_samples_and_top_k_1_is_greedy(generator, prompts):
    prompt = prompts[0]
    greedy = generator.generate(prompt, SamplingSpec(max_new_tokens=MAX_NEW, temperature=0))
    top1 = generator.generate(prompt, SamplingSpec(max_new_tokens=MAX_NEW, temperature=1.0, top_k=1, seed=0))
    assert top1.token_ids == greedy.token_ids
    for seed in range(4):
        out = generator.generate(prompt, SamplingSpec(max_new_tokens=MAX_NEW, temperature=2.0, top_k=3, seed=seed))
        logits = next_token_logits(generator.model, prompt, out.token_ids)
        top3 = logits.topk(3, dim=-1).indices
        assert all(tok in row.tolist() for tok, row in zip(out.token_ids, top3, strict=True))


def test_top_p_keeps_samples_inside_the_nucleus(generator, prompts):
    prompt = prompts[1]
    top_p = 0.3
    for seed in range(4):
        out = generator.generate(prompt, SamplingSpec(max_new_tokens=MAX_NEW, temperature=1.0, top_p=top_p, seed=seed))
        probs = torch.softmax(next_token_logits(generator.model, prompt, out.token_ids), dim=-1)
        for tok, row in zip(out.token_ids, probs, strict=True):
            # the sampled token's probability is among the smallest set whose mass reaches top_p
            mass_above = row[row > row[tok]].sum().item()
            assert mass_above < top_p + 1e-6


def test_max_tokens_truncates_with_length_reason(generator, prompts):
    out = generator.generate(prompts[2], SamplingSpec(max_new_tokens=2, temperature=0))
    assert len(out.token_ids) == 2 and out.finish_reason == "length"
    assert generator.eos_token_ids.isdisjoint(out.token_ids)


def test_eos_stops_with_stop_reason_and_is_included(generator, prompts, tokenizer):
    # the warm-started model answers "<answer>..</answer><|im_end|>"
    out = generator.generate(prompts[0], SamplingSpec(max_new_tokens=MAX_NEW, temperature=0))
    assert out.finish_reason == "stop"
    assert out.token_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.eos_token_id not in out.token_ids[:-1]
    ignored = generator.generate(prompts[0], SamplingSpec(max_new_tokens=MAX_NEW, temperature=0, ignore_eos=True))
    assert ignored.finish_reason == "length" and len(ignored.token_ids) == MAX_NEW
    assert ignored.token_ids[: len(out.token_ids)] == out.token_ids


def test_stop_token_ids_end_a_sampled_response_at_their_first_occurrence(generator, prompts):
    prompt = prompts[2]
    free = generator.generate(prompt, SamplingSpec(max_new_tokens=MAX_NEW, temperature=1.5, seed=5, ignore_eos=True))
    eos_free = [i for i in range(len(free.token_ids)) if generator.eos_token_ids.isdisjoint(free.token_ids[: i + 1])]
    assert eos_free, "the first sampled token is EOS; pick another seed"
    stop = free.token_ids[min(eos_free[-1], 3)]
    cut = free.token_ids.index(stop)
    # same seed -> same draws until the stop token ends the response
    out = generator.generate(
        prompt, SamplingSpec(max_new_tokens=MAX_NEW, temperature=1.5, seed=5, stop_token_ids=(stop,))
    )
    assert out.token_ids == free.token_ids[: cut + 1] and out.finish_reason == "stop"


def test_no_log_probs_unless_requested(generator, prompts):
    out = generator.generate(prompts[0], SamplingSpec(max_new_tokens=4, temperature=1.0, return_log_probs=False))
    assert out.log_probs is None and len(out.token_ids) >= 1


def test_checkpoint_sampling_defaults_are_not_applied(model_dir, prompts):
    # HF generate() fills unset fields from model.generation_config; load_hf_model clears it so a
    # checkpoint's top_k/temperature defaults cannot leak into verl's requested sampling.
    model = load_hf_model(str(model_dir))
    assert model.generation_config.top_k is None and model.generation_config.temperature is None


def test_load_weights_rejects_unknown_partial_and_misshaped_updates(generator):
    state = generator.model.state_dict()
    with pytest.raises(KeyError):
        generator.load_weights([("not.a.weight", torch.zeros(1))])
    name = next(iter(state))
    with pytest.raises(ValueError, match="unchanged"):
        generator.load_weights([(name, state[name].clone())])
    with pytest.raises(ValueError, match="shape"):
        generator.load_weights([(name, torch.zeros(1, 1, 1))])
    assert generator.load_weights((n, t.clone()) for n, t in state.items()) == len(state)


def test_media_inputs_need_a_processor(generator):
    assert generator.multi_modal_inputs(None, None) == {}
    assert generator.multi_modal_inputs([], []) == {}
    with pytest.raises(ValueError, match="processor"):
        generator.multi_modal_inputs(image_data=[object()])


# ------------------------------------------------------------------------------------------------
# rollout server + adapter: the weight-update path verl drives
# ------------------------------------------------------------------------------------------------
class _InProcessHandle:
    """Calls ``obj.method.remote(...)`` like a Ray actor handle, without Ray (records calls)."""

    def __init__(self, obj):
        self._obj = obj
        self.calls: list[str] = []

    def __getattr__(self, name):
        method = getattr(self._obj, name)

        async def remote(*args, **kwargs):
            self.calls.append(name)
            return await method(*args, **kwargs)

        return SimpleNamespace(remote=remote)


def _rollout_config(**kwargs):
    from verl.workers.config import RolloutConfig

    defaults = dict(
        name="hf",
        dtype="float32",
        load_format="auto",
        prompt_length=128,
        response_length=MAX_NEW,
        tensor_model_parallel_size=1,
    )
    return RolloutConfig(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def model_config(model_dir):
    from verl.workers.config import HFModelConfig

    return HFModelConfig(path=str(model_dir), override_config={"attn_implementation": "eager"})


@pytest.fixture
def server(model_config):
    from g2rpo_verl.cpu.hf_rollout import HFRolloutServer

    return HFRolloutServer(_rollout_config(), model_config, replica_rank=0)


def _perturbed_state(model_dir, seed: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A copy of the model with every parameter changed, and its full state dict (tied keys included)."""
    model = load_hf_model(str(model_dir))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def test_server_generate_returns_verl_token_output(server, prompts):
    from verl.workers.rollout.replica import TokenOutput

    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}
    out = asyncio.run(server.generate("r0", prompts[0], dict(params), image_data=None, video_data=None, priority=0))
    assert isinstance(out, TokenOutput)
    assert 1 <= len(out.token_ids) <= MAX_NEW and len(out.log_probs) == len(out.token_ids)
    assert out.stop_reason in ("completed", "length")
    assert out.extra_fields == {"global_steps": None}
    greedy = asyncio.run(server.generate("r1", prompts[0], {"temperature": 0}))
    assert greedy.stop_reason == "completed"  # warm-started model ends its answer with EOS
    cut = asyncio.run(server.generate("r2", prompts[0], {"temperature": 0, "max_tokens": 2}))
    assert cut.stop_reason == "length" and len(cut.token_ids) == 2
    # default budget: response_length
    long = asyncio.run(server.generate("r3", prompts[2], {"temperature": 0, "ignore_eos": True}))
    assert len(long.token_ids) == MAX_NEW
    with pytest.raises(ValueError, match="processor"):
        asyncio.run(server.generate("r4", prompts[0], {"temperature": 0}, image_data=[object()]))


def test_update_weights_reaches_the_server_and_log_probs_match_the_updated_model(
    server, model_dir, model_config, prompts
):
    from g2rpo_verl.cpu.hf_rollout import HFServerAdapter

    handle = _InProcessHandle(server)
    adapter = HFServerAdapter(_rollout_config(), model_config, None, server_handle=handle)
    prompt = prompts[1]
    greedy = {"temperature": 0, "logprobs": True}
    before = asyncio.run(server.generate("a", prompt, dict(greedy)))

    updated, state = _perturbed_state(model_dir, seed=1)
    # verl hands the adapter a generator of (name, full tensor); pass one.
    asyncio.run(adapter.update_weights(((k, v) for k, v in state.items()), global_steps=3))
    assert handle.calls == ["load_weights"]

    after = asyncio.run(server.generate("b", prompt, dict(greedy)))
    assert after.extra_fields["global_steps"] == 3
    assert (after.token_ids, after.log_probs) != (before.token_ids, before.log_probs)  # weights changed
    assert after.token_ids == next_token_logits(updated, prompt, after.token_ids).argmax(-1).tolist()

    for seed, temperature in ((0, 1.0), (1, 0.7)):
        params = {"temperature": temperature, "top_k": -1, "top_p": 1.0, "logprobs": True, "seed": seed}
        out = asyncio.run(server.generate("c", prompt, params))
        expected = forward_log_probs(updated, prompt, out.token_ids, temperature)
        assert (torch.tensor(out.log_probs) - expected).abs().max().item() < 1e-4
        # ... and the check discriminates: the old weights give different log-probs
        original = load_hf_model(str(model_dir))
        stale = forward_log_probs(original, prompt, out.token_ids, temperature)
        assert (torch.tensor(out.log_probs) - stale).abs().max().item() > 1e-3


def test_only_the_replica_leader_sends_weights(server, model_dir, model_config, monkeypatch):
    from g2rpo_verl.cpu.hf_rollout import HFServerAdapter

    _, state = _perturbed_state(model_dir, seed=2)
    monkeypatch.setenv("RANK", "1")
    handle = _InProcessHandle(server)
    follower = HFServerAdapter(_rollout_config(tensor_model_parallel_size=2), model_config, None, server_handle=handle)
    assert (follower.replica_rank, follower.rollout_rank, follower.is_leader_rank) == (0, 1, False)
    drained = []
    asyncio.run(follower.update_weights(((drained.append(k), (k, v))[1] for k, v in state.items())))
    assert len(drained) == len(state) and handle.calls == []  # drained (collective) but not sent

    monkeypatch.setenv("RANK", "3")
    assert HFServerAdapter(_rollout_config(), model_config, None).replica_rank == 3


def test_adapter_rejects_unsupported_weight_formats(model_config):
    from g2rpo_verl.cpu.hf_rollout import HFServerAdapter

    adapter = HFServerAdapter(_rollout_config(), model_config, None, server_handle=object())
    with pytest.raises(NotImplementedError):
        asyncio.run(adapter.update_weights(iter(()), wire_format="delta_flush"))
    with pytest.raises(NotImplementedError, match="merge"):
        asyncio.run(adapter.update_weights(iter(()), peft_config={"r": 8}))


def test_server_honours_dummy_load_format(model_dir, model_config):
    from g2rpo_verl.cpu.hf_rollout import HFRolloutServer

    dummy = HFRolloutServer(_rollout_config(load_format="dummy"), model_config)
    real = load_hf_model(str(model_dir))
    dummy_sd, real_sd = dummy.generator.model.state_dict(), real.state_dict()
    assert any(not torch.equal(dummy_sd[k], real_sd[k]) for k in real_sd)  # weights come with the sync
    asyncio.run(dummy.load_weights(real_sd, global_steps=0))
    assert all(torch.equal(dummy.generator.model.state_dict()[k], real_sd[k]) for k in real_sd)


# ------------------------------------------------------------------------------------------------
# tiny model, toy data, toy reward
# ------------------------------------------------------------------------------------------------
def test_tokenizer_is_deterministic_and_chatml(tokenizer):
    assert tiny.build_tokenizer(0).backend_tokenizer.to_str() == tiny.build_tokenizer(0).backend_tokenizer.to_str()
    messages = [{"role": "user", "content": "hi"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.tokenize("<answer>7</answer>") == ["<answer>", "7", "</answer>"]


def test_tiny_model_is_small_float32_qwen2(model_dir, tokenizer):
    model = load_hf_model(str(model_dir))
    assert model.config.model_type == "qwen2" and model.config.hidden_size == 64
    assert model.config.num_hidden_layers == 2 and model.dtype == torch.float32
    assert model.config.vocab_size == len(tokenizer)
    assert tiny.is_model_dir(model_dir)


def test_toy_dataset_is_deterministic_verl_format_with_two_problem_types(tmp_path, tokenizer):
    train, val = tiny.write_toy_dataset(tmp_path / "a", n_train=10, n_val=4, seed=3)
    train2, _ = tiny.write_toy_dataset(tmp_path / "b", n_train=10, n_val=4, seed=3)
    other, _ = tiny.write_toy_dataset(tmp_path / "c", n_train=10, n_val=4, seed=4)
    df, df2 = pd.read_parquet(train), pd.read_parquet(train2)
    assert df.to_json() == df2.to_json() and df.to_json() != pd.read_parquet(other).to_json()
    assert len(df) == 10 and len(pd.read_parquet(val)) == 4
    assert {"prompt", "data_source", "reward_model", "extra_info"} <= set(df.columns)
    assert set(df.data_source) == {ADDITION, CHOICE}
    problem_types = {row["extra_info"]["problem_type"] for _, row in df.iterrows()}
    assert problem_types == {"numerical", "multiple choice"}
    assert all({"task_type", "index", "split"} <= set(row["extra_info"]) for _, row in df.iterrows())
    for _, row in df.iterrows():
        prompt = list(row["prompt"])
        assert prompt[0]["role"] == "user" and row["reward_model"]["ground_truth"]
        n_tokens = len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)["input_ids"])
        assert n_tokens <= 128  # fits the smoke run's max_prompt_length


@pytest.mark.parametrize(
    ("source", "solution", "truth", "expected"),
    [
        (ADDITION, "<think>1+2</think><answer>3</answer>", "3", (1.0, 1.0, 0.5)),
        (ADDITION, "<answer>3.001</answer>", "3", (1.0, 1.0, 0.5)),
        (ADDITION, "<answer>4</answer>", "3", (0.0, 1.0, 0.5)),
        (ADDITION, "the answer is 3", "3", (0.0, 0.0, 0.0)),
        (ADDITION, "<answer>three</answer>", "3", (0.0, 1.0, 0.0)),
        (ADDITION, "x <answer>3</answer>", "3", (1.0, 0.0, 0.5)),
        (CHOICE, "<answer>B</answer>", "B", (1.0, 1.0, 0.5)),
        (CHOICE, "<answer>(b).</answer>", "B", (1.0, 1.0, 0.5)),
        (CHOICE, "<answer>C</answer>", "B", (0.0, 1.0, 0.5)),
        (CHOICE, "<answer>B and C</answer>", "B", (0.0, 1.0, 0.0)),
        (CHOICE, None, "B", (0.0, 0.0, 0.0)),
    ],
)
def test_toy_reward(source, solution, truth, expected):
    problem_type = "numerical" if source == ADDITION else "multiple choice"
    result = compute_score(source, solution, truth, extra_info={"problem_type": problem_type})
    assert set(result) == {"score", "accuracy", "format", "structure", "problem_type"}
    accuracy, fmt, structure = expected
    assert (result["accuracy"], result["format"], result["structure"]) == expected
    assert result["score"] == pytest.approx(0.9 * accuracy + 0.1 * fmt + structure)
    assert result["problem_type"] == problem_type
    assert compute_score(source, solution, truth)["problem_type"] == problem_type  # from data_source


# ------------------------------------------------------------------------------------------------
# smoke CLI
# ------------------------------------------------------------------------------------------------
def test_user_overrides_replace_ours_by_key():
    from g2rpo_verl.demo.smoke import merge_overrides

    base = ["a.b=1", "++ray.num_gpus=1", "c=3"]
    assert merge_overrides(base, ["a.b=2", "+ray.num_gpus=2"]) == ["c=3", "a.b=2", "+ray.num_gpus=2"]
    assert merge_overrides(base, []) == base


def test_smoke_dry_run_builds_workdir_and_forwards_overrides(tmp_path, model_dir, capsys):
    import shutil

    from g2rpo_verl.demo import smoke

    shutil.copytree(model_dir, tmp_path / "model")  # reused, not rebuilt
    assert smoke.main(["--workdir", str(tmp_path), "--dry-run", "algorithm.adv_estimator=gs_grpo"]) == 0
    command = capsys.readouterr().out.split()
    assert command[1:3] == ["-m", "verl.trainer.main_ppo"]
    assert command[-1] == "algorithm.adv_estimator=gs_grpo"
    assert "algorithm.adv_estimator=grpo" not in command
    assert "actor_rollout_ref.rollout.name=hf" in command
    assert (tmp_path / "data" / "train.parquet").is_file()
    env = smoke.trainer_env(tmp_path)
    assert env["VERL_PLATFORM"] == "cpu" and "RAY_ADDRESS" not in env


# ------------------------------------------------------------------------------------------------
# vision-language: tiny Qwen3-VL, torchvision-free processor and dataset, image rollouts
# ------------------------------------------------------------------------------------------------
def _vl_image(seed: int):
    from PIL import Image, ImageDraw

    rng = __import__("random").Random(seed)
    image = Image.new("RGB", (64, 64), "white")
    x, y = rng.randrange(0, 48), rng.randrange(0, 48)
    ImageDraw.Draw(image).rectangle((x, y, x + 15, y + 15), fill=(rng.randrange(256), 40, 200))
    return image


def _vl_messages(image, question: str = "What is in the image?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]


@pytest.fixture(scope="module")
def vl_model_dir(tmp_path_factory) -> Path:
    from g2rpo_verl.demo.fixtures import tiny_vl

    corpus = [f"<|im_start|>user\nWhat is in the image? {i}<|im_end|>\n<answer>{i}</answer>" for i in range(200)]
    tokenizer = tiny_vl.build_vl_tokenizer(corpus, vocab_size=300)
    processor = tiny_vl.build_vl_processor(tokenizer)
    model = tiny_vl.build_tiny_qwen3_vl(tokenizer, seed=0, hidden_size=32, num_layers=1, vision_depth=1)
    return tiny_vl.save_vl_model(tmp_path_factory.mktemp("tiny_vl") / "model", model, processor)


@pytest.fixture(scope="module")
def vl_processor(vl_model_dir):
    from verl.utils.tokenizer import hf_processor

    # verl's own loader, exactly as its workers call it
    return hf_processor(str(vl_model_dir), trust_remote_code=True, use_fast=True)


def _vl_prompt(processor, image, question: str = "What is in the image?") -> list[int]:
    text = processor.apply_chat_template(_vl_messages(image, question), add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=[image], return_tensors="pt")["input_ids"][0].tolist()


def test_vl_processor_loads_through_verl_without_torchvision(vl_model_dir, vl_processor):
    from verl.utils.tokenizer import hf_processor

    from g2rpo_verl.demo.fixtures import tiny_vl

    assert type(vl_processor).__name__ == "Qwen3VLProcessor"  # verl binds get_rope_index by this name
    assert hasattr(vl_processor, "get_rope_index") and not hasattr(vl_processor, "video_processor")
    assert type(vl_processor.image_processor).__name__.startswith("Qwen2VLImageProcessor")
    assert tiny_vl.is_vl_model_dir(vl_model_dir)
    # the real template's image placeholder; a 64x64 image -> (64/16)^2 patches / 2x2 merge = 4 tokens
    text = vl_processor.apply_chat_template(_vl_messages(_vl_image(0)), add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is in the image?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = _vl_prompt(vl_processor, _vl_image(0))
    assert ids.count(vl_processor.image_token_id) == 4
    # without trust_remote_code transformers picks its own class, which needs torchvision
    with pytest.warns(UserWarning, match="processor"):
        assert hf_processor(str(vl_model_dir), trust_remote_code=False) is None
    with pytest.raises(ValueError, match="video"):
        vl_processor(text=["x"], videos=[[_vl_image(0)]])


def test_vl_dataset_extracts_images_without_qwen_vl_utils(tmp_path, vl_processor):
    import io

    from omegaconf import OmegaConf

    from g2rpo_verl.cpu.vl_dataset import VisionRLHFDataset, extract_images, load_image

    image = _vl_image(1)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = buffer.getvalue()
    path = tmp_path / "x.png"
    path.write_bytes(png)
    for ref in (image, {"bytes": png}, {"image": image}, str(path), f"file://{path}", png):
        assert load_image(ref).tobytes() == image.tobytes()
    assert extract_images([{"role": "user", "content": "text only"}]) is None
    with pytest.raises(ValueError, match="video"):
        extract_images([{"role": "user", "content": [{"type": "video", "video": "x.mp4"}]}])

    frame = pd.DataFrame(
        [
            {
                "data_source": "toy",
                "prompt": [{"role": "user", "content": "<image>What is in the image?"}],
                "images": [{"bytes": png}],
                "reward_model": {"style": "rule", "ground_truth": "1"},
                "extra_info": {"index": 0},
            }
        ]
    )
    frame.to_parquet(tmp_path / "d.parquet")
    config = OmegaConf.create({"max_prompt_length": 64, "filter_overlong_prompts": True, "cache_dir": str(tmp_path)})
    dataset = VisionRLHFDataset(str(tmp_path / "d.parquet"), vl_processor.tokenizer, config, processor=vl_processor)
    assert len(dataset) == 1  # the prompt-length filter ran through the image path
    messages = dataset[0]["raw_prompt"]
    images, videos, _ = VisionRLHFDataset._process_multi_modal_info(messages, 16, config)
    assert videos is None and len(images) == 1 and images[0].size == (64, 64)
    images_async, _ = asyncio.run(VisionRLHFDataset.process_vision_info(messages, 16, config))
    assert images_async[0].tobytes() == image.tobytes()


def _vl_log_probs(model, processor, prompt: list[int], image, response: list[int], temperature: float) -> torch.Tensor:
    """What verl's trainer computes: one forward pass with M-RoPE positions from the processor."""
    ids = torch.tensor([prompt + response])
    features = processor.image_processor(images=[image], return_tensors="pt")
    token_types = (ids == processor.image_token_id).to(torch.int)
    # verl's agent loop: the processor's bound get_rope_index gives the (3, B, L) positions
    positions, _ = processor.get_rope_index(
        input_ids=ids,
        mm_token_type_ids=token_types,
        image_grid_thw=features["image_grid_thw"],
        attention_mask=torch.ones_like(ids),
    )
    with torch.no_grad():
        logits = (
            model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                position_ids=positions,
                pixel_values=features["pixel_values"],
                image_grid_thw=features["image_grid_thw"],
                mm_token_type_ids=token_types,
            )
            .logits[0, len(prompt) - 1 : -1]
            .float()
        )
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, torch.tensor(response).unsqueeze(-1)).squeeze(-1)


@pytest.fixture(scope="module")
def vl_model_config(vl_model_dir):
    from verl.workers.config import HFModelConfig

    return HFModelConfig(
        path=str(vl_model_dir), trust_remote_code=True, override_config={"attn_implementation": "eager"}
    )


def test_vl_rollout_with_images_matches_the_trainer_after_a_weight_sync(vl_model_dir, vl_model_config, vl_processor):
    from g2rpo_verl.cpu.hf_rollout import HFRolloutServer, HFServerAdapter

    server = HFRolloutServer(_rollout_config(prompt_length=64), vl_model_config)
    assert type(server.generator.processor).__name__ == "Qwen3VLProcessor"
    images = [_vl_image(seed) for seed in range(4)]
    prompts = [_vl_prompt(vl_processor, image) for image in images]
    params = {"temperature": 1.0, "top_k": -1, "top_p": 1.0, "logprobs": True, "ignore_eos": True}

    async def batch(sampling):  # concurrent requests, served as one batched generate()
        return await asyncio.gather(
            *(
                server.generate(f"r{i}", p, dict(sampling), image_data=[im])
                for i, (p, im) in enumerate(zip(prompts, images))
            )
        )

    outs = asyncio.run(batch(params))
    model = load_hf_model(str(vl_model_dir))
    for out, prompt, image in zip(outs, prompts, images, strict=True):
        assert len(out.token_ids) == MAX_NEW and out.stop_reason == "length"
        expected = _vl_log_probs(model, vl_processor, prompt, image, out.token_ids, 1.0)
        assert (torch.tensor(out.log_probs) - expected).abs().max().item() < 1e-4
    # the image matters: another image changes the log-probs of the same tokens
    other = _vl_log_probs(model, vl_processor, prompts[0], images[1], outs[0].token_ids, 1.0)
    assert (torch.tensor(outs[0].log_probs) - other).abs().max().item() > 1e-4

    # weight sync through the adapter, then the same check against the updated weights
    updated = load_hf_model(str(vl_model_dir))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in updated.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    state = {k: v.clone() for k, v in updated.state_dict().items()}
    adapter = HFServerAdapter(_rollout_config(), vl_model_config, None, server_handle=_InProcessHandle(server))
    asyncio.run(adapter.update_weights(((k, v) for k, v in state.items()), global_steps=5))
    for temperature in (1.0, 0.7):
        outs = asyncio.run(batch({**params, "temperature": temperature}))
        for out, prompt, image in zip(outs, prompts, images, strict=True):
            assert out.extra_fields["global_steps"] == 5
            fresh = _vl_log_probs(updated, vl_processor, prompt, image, out.token_ids, temperature)
            stale = _vl_log_probs(model, vl_processor, prompt, image, out.token_ids, temperature)
            assert (torch.tensor(out.log_probs) - fresh).abs().max().item() < 1e-4
            assert (torch.tensor(out.log_probs) - stale).abs().max().item() > 1e-3


def test_vl_generation_never_emits_vision_special_tokens(vl_model_dir, vl_processor, generator):
    """A response holding <|image_pad|> & co. makes verl's get_rope_index fail and drops the sample."""
    model = load_hf_model(str(vl_model_dir))
    tokenizer = vl_processor.tokenizer
    vision = vision_token_ids(model.config)
    names = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    assert vision == {tokenizer.convert_tokens_to_ids(name) for name in names}
    assert vision_token_ids(generator.model.config) == frozenset()  # a text-only model: nothing to suppress
    # a model that strongly prefers them (a random tiny model merely samples them now and then)
    bias = torch.zeros(model.lm_head.out_features)
    bias[sorted(vision)] = 30.0
    model.lm_head.register_forward_hook(lambda module, args, out: out + bias)
    gen = HFGenerator(model, [tokenizer.eos_token_id], tokenizer.pad_token_id, vl_processor)
    image = _vl_image(0)
    prompt = _vl_prompt(vl_processor, image)
    mm = gen.multi_modal_inputs(image_data=[image])
    greedy = SamplingSpec(max_new_tokens=6, temperature=0.0, ignore_eos=True)
    sampled = SamplingSpec(max_new_tokens=6, temperature=1.0, ignore_eos=True, seed=0)
    for spec in (greedy, sampled):
        out = gen.generate(prompt, spec, mm)
        assert len(out.token_ids) == 6 and not set(out.token_ids) & vision
        # only the sampling is shaped: log-probs are the full softmax's, as the trainer computes them
        expected = _vl_log_probs(model, vl_processor, prompt, image, out.token_ids, spec.logprob_temperature)
        assert (torch.tensor(out.log_probs) - expected).abs().max().item() < 1e-4
        assert max(out.log_probs) < -20  # the vision tokens hold nearly all the mass
    gen.suppressed_token_ids = frozenset()  # without the suppression the same model writes them
    assert set(gen.generate(prompt, greedy, mm).token_ids) <= vision


def test_batched_generation_equals_one_prompt_at_a_time(generator, prompts):
    spec = SamplingSpec(max_new_tokens=MAX_NEW, temperature=0)
    batched = generator.generate_batch(prompts, spec)
    for prompt, out in zip(prompts, batched, strict=True):
        single = generator.generate(prompt, spec)
        assert out.token_ids == single.token_ids and out.finish_reason == single.finish_reason
        assert torch.allclose(torch.tensor(out.log_probs), torch.tensor(single.log_probs), atol=1e-5)
    sampled = generator.generate_batch(prompts, SamplingSpec(max_new_tokens=MAX_NEW, temperature=1.0, seed=4))
    for prompt, out in zip(prompts, sampled, strict=True):
        expected = forward_log_probs(generator.model, prompt, out.token_ids, 1.0)
        assert torch.allclose(torch.tensor(out.log_probs), expected, atol=1e-4)
        assert out.token_ids[-1] in generator.eos_token_ids or len(out.token_ids) == MAX_NEW
        assert generator.eos_token_ids.isdisjoint(out.token_ids[:-1])  # padding after EOS is cut


def test_a_seeded_row_draws_the_same_tokens_alone_or_in_any_batch(generator, prompts):
    # the determinism contract of the hf rollout: a request's tokens depend on its seed and
    # prompt, not on which requests share its batch nor on their order
    spec = SamplingSpec(max_new_tokens=MAX_NEW, temperature=1.5, top_p=0.95)
    seeds = [101, 202, 303, 404][: len(prompts)]
    batched = generator.generate_batch(prompts, spec, seeds=seeds)
    flipped = generator.generate_batch(prompts[::-1], spec, seeds=seeds[::-1])[::-1]
    for i, prompt in enumerate(prompts):
        alone = generator.generate(prompt, dataclasses.replace(spec, seed=seeds[i]))
        assert batched[i].token_ids == flipped[i].token_ids == alone.token_ids
    # same prompt, other seeds: other responses (the seed is used, not ignored)
    again = generator.generate_batch([prompts[0]] * 6, spec, seeds=list(range(6)))
    assert len({tuple(out.token_ids) for out in again}) > 1


def test_row_sampler_draws_from_the_warped_softmax():
    from g2rpo_verl.cpu.hf_generation import _RowSampler

    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]])
    for spec in (SamplingSpec(max_new_tokens=1, temperature=0.7), SamplingSpec(max_new_tokens=1, top_k=2)):
        draws = 4000
        sampler = _RowSampler(spec, list(range(draws)))
        one_hot = sampler(torch.zeros(draws, 1, dtype=torch.long), scores.expand(draws, -1))
        assert ((one_hot == 0).sum(-1) == 1).all()
        freq = torch.bincount(one_hot.argmax(-1), minlength=5).double() / draws
        warped = scores[0] / spec.temperature
        if spec.top_k:
            warped = torch.where(warped >= warped.topk(spec.top_k).values[-1], warped, float("-inf"))
        expected = torch.softmax(warped.double(), -1)
        # 4000 draws: a binomial frequency is within 4 standard deviations
        assert ((freq - expected).abs() <= 4 * (expected * (1 - expected) / draws).sqrt() + 1e-9).all(), (
            freq,
            expected,
        )


def test_fast_poll_replay_buffer_is_verls_sync_buffer_with_a_short_poll():
    from omegaconf import OmegaConf

    from g2rpo_verl.cpu.replay_buffer import POLL_INTERVAL_S, FastPollReplayBuffer

    kwargs = dict(
        trainer_config=OmegaConf.create({}),
        max_off_policy_threshold=8,
        max_off_policy_strategy="drop",
        sampler_kwargs=OmegaConf.create({}),
    )
    buffer = FastPollReplayBuffer("sync", **kwargs)
    assert buffer.poll_interval == POLL_INTERVAL_S < 2.0
    with pytest.raises(ValueError, match="sync"):
        FastPollReplayBuffer("colocate_async", **kwargs)


def test_request_seed_depends_on_the_request_identity_only():
    from g2rpo_verl.verl_compat.request_seeds import request_seed

    base = request_seed(42, step=3, index=7, sample=0, prompt_ids=[1, 2, 3])
    assert base == request_seed(42, 3, 7, 0, [1, 2, 3])  # stable (no per-process hash salt)
    assert 0 <= base < 2**63
    others = {
        request_seed(43, 3, 7, 0, [1, 2, 3]),
        request_seed(42, 4, 7, 0, [1, 2, 3]),
        request_seed(42, 3, 8, 0, [1, 2, 3]),
        request_seed(42, 3, 7, 1, [1, 2, 3]),
        request_seed(42, 3, 7, 0, [1, 2, 4]),
    }
    assert base not in others and len(others) == 5


def test_seeding_client_adds_the_request_seed_and_leaves_the_shared_params_alone():
    from g2rpo_verl.verl_compat.request_seeds import request_seed
    from g2rpo_verl.verl_hooks.seeded_agent_loop import _SeedingClient

    class Recorder:
        name = "inner"

        async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
            return request_id, sampling_params, kwargs

    shared = {"temperature": 1.0}
    client = _SeedingClient(Recorder(), base_seed=5, step=2, index=9, sample=3)
    rid, params, kwargs = asyncio.run(client.generate("r", prompt_ids=[4, 5], sampling_params=shared, image_data=None))
    assert params == {"temperature": 1.0, "seed": request_seed(5, 2, 9, 3, [4, 5])} and shared == {"temperature": 1.0}
    assert rid == "r" and kwargs == {"image_data": None} and client.name == "inner"


def test_replay_buffer_hands_out_a_batch_in_request_order_whatever_the_finishing_order(monkeypatch):
    import random

    from tensordict import NonTensorStack, TensorDict
    from transfer_queue import KVBatchMeta

    from g2rpo_verl.cpu import replay_buffer

    # two prompts with the same dataset index (two validation files), n = 3 samples each
    requests = [
        (index, source, session) for index, source in ((0, "ocr"), (0, "math"), (5, "math")) for session in range(3)
    ]
    prompts = {"ocr": [7, 8, 9], "math": [1, 2]}

    def batch_in(order: list[int]) -> tuple[KVBatchMeta, dict]:
        uids = {(i, s): f"{random.random():.12f}".replace("0.", "u") for i, s, _ in requests}  # verl's uids are random
        keys = [f"{uids[requests[k][:2]]}_{requests[k][2]}_0" for k in order]
        rows = {key: requests[k] for key, k in zip(keys, order)}
        return KVBatchMeta(partition_id="val", keys=keys, tags=[{"k": k} for k in order]), rows

    def fake_get(keys, partition_id, select_fields):
        assert partition_id == "val" and set(select_fields) == {"index", "data_source", "prompts"}
        rows = [current_rows[k] for k in keys]
        return TensorDict(
            {
                "index": torch.tensor([r[0] for r in rows]),
                "data_source": NonTensorStack(*[r[1] for r in rows]),
                "prompts": torch.nested.nested_tensor([torch.tensor(prompts[r[1]]) for r in rows], layout=torch.jagged),
            },
            batch_size=len(rows),
        )

    monkeypatch.setattr(replay_buffer.tq, "kv_batch_get", fake_get)
    orders = []
    for seed in range(3):
        order = list(range(len(requests)))
        random.Random(seed).shuffle(order)
        meta, current_rows = batch_in(order)
        out = replay_buffer.in_request_order(meta)
        assert [t["k"] for t in out.tags] == [order[meta.keys.index(k)] for k in out.keys]  # tags follow keys
        orders.append([current_rows[k] for k in out.keys])
    assert orders[0] == orders[1] == orders[2] == sorted(requests)
