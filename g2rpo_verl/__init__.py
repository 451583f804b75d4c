"""g2rpo_verl: Gaussian GRPO (G²RPO), GS-GDPO and task-level shaping for verl.

The algorithm code is pure torch and importable without verl's trainer::

    from g2rpo_verl import gaussianize, gs_grpo_advantages, gs_gdpo_advantages

The verl wiring (:mod:`g2rpo_verl.verl_hooks`) loads itself through verl's ``verl.plugins``
entry point; ``algorithm.adv_estimator=gs_grpo`` (or ``gs_gdpo``, ``ema_grpo``: every estimator declared
in :mod:`g2rpo_verl.estimators`) then selects it.
"""

from g2rpo_verl.algorithms.advantages import gs_gdpo_advantages, gs_grpo_advantages
from g2rpo_verl.algorithms.gaussian import gaussianize

__all__ = ["gaussianize", "gs_grpo_advantages", "gs_gdpo_advantages"]
__version__ = "0.1.0"
