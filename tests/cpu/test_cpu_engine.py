"""The CPU backend's fixes to verl's FSDP engine: the reference model and the critic build on CPU.

In-process and in seconds; the real runs that use them are ``tests/verl_hooks/test_entropy_shaping.py``'s
e2e test (KL loss: a reference model) and ``tests/cpu/test_cpu_backend.py``'s smoke test (``gae``: a
critic).
"""

from __future__ import annotations

import types

import pytest
import torch
import torch.distributed
from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

from g2rpo_verl.cpu import engine_fixes
from g2rpo_verl.cpu.engine_fixes import UnpinnedCPUOffloadPolicy
from g2rpo_verl.demo.fixtures import tiny


@pytest.fixture
def gloo(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def _sharded_forward(policy) -> torch.Tensor:
    from torch.distributed.device_mesh import init_device_mesh

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    mesh = init_device_mesh("cpu", (1,))
    for layer in model:
        fully_shard(layer, mesh=mesh, offload_policy=policy)
    fully_shard(model, mesh=mesh, offload_policy=policy)
    with torch.no_grad():
        return model(torch.ones(3, 4))


def test_verls_pinned_offload_policy_fails_on_cpu_and_the_unpinned_one_shards(gloo):
    # what verl builds for every forward-only (reference) FSDP2 engine
    with pytest.raises(RuntimeError, match="accelerator"):
        _sharded_forward(CPUOffloadPolicy(pin_memory=True))
    policy = UnpinnedCPUOffloadPolicy(pin_memory=True)  # verl's call, through the CPU binding
    assert isinstance(policy, CPUOffloadPolicy) and policy.pin_memory is False
    assert _sharded_forward(policy).shape == (3, 2)


def test_the_engine_module_gets_the_unpinned_policy_and_an_unknown_binding_is_an_error():
    module = types.ModuleType("fake_engine")
    module.CPUOffloadPolicy = CPUOffloadPolicy
    engine_fixes.unpin_offload_policy(module)
    engine_fixes.unpin_offload_policy(module)  # idempotent
    assert module.CPUOffloadPolicy is UnpinnedCPUOffloadPolicy

    moved = types.ModuleType("fake_engine")
    moved.CPUOffloadPolicy = None  # a verl release that builds the policy elsewhere
    with pytest.raises(RuntimeError, match="fake_engine.CPUOffloadPolicy"):
        engine_fixes.unpin_offload_policy(moved)


def test_install_patches_verls_modules_on_import(monkeypatch):
    import verl.utils.model
    import verl.workers.engine.fsdp.transformer_impl as transformer_impl

    monkeypatch.setattr(transformer_impl, "CPUOffloadPolicy", CPUOffloadPolicy)
    monkeypatch.setattr(verl.utils.model, "load_valuehead_model", verl.utils.model.load_valuehead_model)
    engine_fixes.install()  # both modules are imported already: the hooks run now
    assert transformer_impl.CPUOffloadPolicy is UnpinnedCPUOffloadPolicy
    assert getattr(verl.utils.model.load_valuehead_model, "_g2rpo_cpu_fix", False)


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    return tiny.build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "model", seed=0, warm_start_steps=0)


def _critic_config(model_dir, attention: str):
    from transformers import AutoConfig

    # as verl's HFModelConfig builds it from critic.model.override_config.attn_implementation
    config = AutoConfig.from_pretrained(model_dir, attn_implementation=attention)
    config.num_labels = 1
    return config


def test_the_critic_loads_with_its_configured_attention(qwen2_dir):
    from verl.utils.model import load_valuehead_model

    original = getattr(load_valuehead_model, "__wrapped__", load_valuehead_model)
    loader = engine_fixes.valuehead_loader(original)
    assert engine_fixes.valuehead_loader(loader) is loader  # idempotent

    # verl's own loader asks for flash-attention whatever the config says (and reports the
    # failure as "not a value head model", with the flash-attention error as its cause)
    with pytest.raises(RuntimeError) as failed:
        original(str(qwen2_dir), torch.float32, _critic_config(qwen2_dir, "eager"), False)
    assert "flash" in str(failed.value.__cause__).lower()

    model = loader(str(qwen2_dir), torch.float32, _critic_config(qwen2_dir, "eager"), False)
    assert type(model).__name__ == "Qwen2ForTokenClassification"
    assert model.config._attn_implementation == "eager" and model.config.num_labels == 1
    with torch.no_grad():
        values = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert values.shape == (1, 3, 1)

    # a config that asks for flash-attention keeps it: transformers refuses, loudly
    with pytest.raises(RuntimeError) as failed:
        loader(str(qwen2_dir), torch.float32, _critic_config(qwen2_dir, "flash_attention_2"), False)
    assert "flash" in str(failed.value.__cause__).lower()
    # and from_pretrained is itself again afterwards
    from transformers import PreTrainedModel

    assert PreTrainedModel.from_pretrained.__func__.__name__ == "from_pretrained"
    assert not hasattr(PreTrainedModel.from_pretrained, "__wrapped__")


def test_a_qwen3_vl_critic_loads_the_actors_weights_under_a_value_head(tmp_path):
    from transformers import AutoConfig, AutoModelForImageTextToText
    from verl.utils.model import load_valuehead_model

    from g2rpo_verl.demo.fixtures import tiny_vl

    corpus = [f"<|im_start|>user\nWhat is in the image? {i}<|im_end|>\n<answer>{i}</answer>" for i in range(100)]
    tokenizer = tiny_vl.build_vl_tokenizer(corpus, vocab_size=300)
    model = tiny_vl.build_tiny_qwen3_vl(tokenizer, seed=0, hidden_size=32, num_layers=1, vision_depth=1)
    model_dir = tiny_vl.save_vl_model(tmp_path / "model", model, tiny_vl.build_vl_processor(tokenizer))

    config = AutoConfig.from_pretrained(model_dir, attn_implementation="eager", trust_remote_code=True)
    config.num_labels = 1  # as verl's critic engine sets it
    loader = engine_fixes.valuehead_loader(getattr(load_valuehead_model, "__wrapped__", load_valuehead_model))
    critic = loader(str(model_dir), torch.float32, config, True)
    assert type(critic).__name__ == "Qwen3VLForTokenClassification"
    actor = AutoModelForImageTextToText.from_pretrained(model_dir)
    actor_params = dict(actor.named_parameters())
    shared = [name for name, _ in critic.named_parameters() if name in actor_params]
    assert len(shared) == len(list(critic.parameters())) - 2  # everything but score.weight / score.bias
    assert all(torch.equal(critic.get_parameter(n), actor_params[n]) for n in shared)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        values = critic(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert values.shape == (1, 4, 1) and torch.isfinite(values).all()
