"""A Qwen3-VL value model (per-token scalar head) for verl's critic on the CPU backend.

verl 0.9.1 loads a critic with ``AutoModelForTokenClassification`` and, for models that have
none, falls back to ``trl``'s ``AutoModelForCausalLMWithValueHead`` — which current ``trl``
releases no longer ship. transformers has token-classification heads for Qwen2/Qwen3 text
models but not for Qwen3-VL, so ``algorithm.adv_estimator=gae`` on the demo's Qwen3-VL had no
critic to build. :class:`Qwen3VLForTokenClassification` is that head: Qwen3-VL's own
``Qwen3VLModel`` (vision tower + language model, loaded from the actor's checkpoint, the
``lm_head`` left out) and a linear ``score`` layer (``num_labels`` = 1, newly initialised), the
layout of transformers' ``Qwen3ForTokenClassification``. verl's critic engine reads
``output.logits`` ``(B, L, 1)`` as the values, and verl's Qwen3-VL monkey patch (applied to
``Qwen3VLModel``) handles its multimodal inputs as for the actor.

:func:`register` adds it to ``AutoModelForTokenClassification`` for ``Qwen3VLConfig``;
:mod:`g2rpo_verl.cpu.engine_fixes` calls it when verl loads a Qwen3-VL critic on the CPU.
"""

from __future__ import annotations

from torch import nn
from transformers import AutoModelForTokenClassification, Qwen3VLConfig
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel, Qwen3VLPreTrainedModel

__all__ = ["Qwen3VLForTokenClassification", "register"]


class Qwen3VLForTokenClassification(Qwen3VLPreTrainedModel):
    """Qwen3-VL with a per-token linear head: ``logits`` ``(B, L, num_labels)``."""

    def __init__(self, config: Qwen3VLConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = Qwen3VLModel(config)
        self.score = nn.Linear(config.text_config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def forward(self, input_ids=None, **kwargs) -> TokenClassifierOutput:
        kwargs.pop("labels", None)
        kwargs.pop("temperature", None)  # verl passes it to causal-LM heads; a value head has no logits scale
        outputs = self.model(input_ids, **kwargs)
        return TokenClassifierOutput(logits=self.score(outputs[0]))


def register() -> None:
    """Make ``AutoModelForTokenClassification`` build :class:`Qwen3VLForTokenClassification` for Qwen3-VL. Idempotent."""
    AutoModelForTokenClassification.register(Qwen3VLConfig, Qwen3VLForTokenClassification, exist_ok=True)
