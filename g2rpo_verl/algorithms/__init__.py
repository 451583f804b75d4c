"""The method itself, in pure torch: no verl import anywhere below this package.

- :mod:`.gaussian` — the rank map onto N(0, 1) (G²RPO's core, one short file);
- :mod:`.advantages` — ``gs_grpo`` / ``gs_gdpo`` advantages built on it;
- :mod:`.ema_grpo` — OneThinker's EMA-normalised GRPO, the comparison baseline;
- :mod:`.length` — task-level length shaping of the reward;
- :mod:`.entropy` — task-level entropy shaping of the loss (the penalty and the exact entropy);
- :mod:`.entropy_control` — the optional adaptive per-task entropy coefficient;
- :mod:`.grad_diagnostics` — per-task gradient shares and cosines from per-task gradient parts.

Each module's verl wiring has the same name under :mod:`g2rpo_verl.verl_hooks`.
"""
