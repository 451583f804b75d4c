"""Launching production runs: the preflight checks (``g2rpo-preflight``) and what they need.

The launch scripts themselves are shell (``scripts/``); they call
``python -m g2rpo_verl.launch.preflight`` with the same Hydra arguments they pass to verl.
"""
