"""Per-request rollout seeds: the seed function and the overrides selecting the seeded agent loop.

Light on purpose (no verl import): the CPU backend and drivers build their overrides from it.
The loop itself is :class:`g2rpo_verl.verl_hooks.seeded_agent_loop.SeededSingleTurnAgentLoop`,
registered with verl by ``verl_hooks/agent_loops.yaml``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

__all__ = ["SEEDED_AGENT_LOOP", "AGENT_LOOP_CONFIG", "SEEDED_LOOP_OVERRIDES", "request_seed"]

#: Name of the seeded single-turn loop in verl's agent-loop registry.
SEEDED_AGENT_LOOP = "g2rpo_seeded"
#: verl agent-loop config listing the plugin's loops (``actor_rollout_ref.rollout.agent.agent_loop_config_path``).
AGENT_LOOP_CONFIG = Path(__file__).parent.parent / "verl_hooks" / "agent_loops.yaml"
#: Hydra overrides that make the seeded loop every sample's default agent loop.
SEEDED_LOOP_OVERRIDES = [
    f"actor_rollout_ref.rollout.agent.agent_loop_config_path={AGENT_LOOP_CONFIG}",
    f"actor_rollout_ref.rollout.agent.default_agent_loop={SEEDED_AGENT_LOOP}",
]


def request_seed(base_seed: int, step: int, index: int, sample: int, prompt_ids: list[int]) -> int:
    """A 63-bit seed that depends only on the request's identity (stable across processes).

    ``base_seed``: the rollout seed; ``step``: the trainer step the prompt was drawn at;
    ``index``: its dataset row; ``sample``: its number within the group; ``prompt_ids``: its
    tokens. Python's ``hash`` is salted per process, so the identity goes through SHA-256.
    """
    head = f"{int(base_seed)}|{int(step)}|{int(index)}|{int(sample)}|".encode()
    digest = hashlib.sha256(head + np.asarray(prompt_ids, dtype=np.int64).tobytes()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
