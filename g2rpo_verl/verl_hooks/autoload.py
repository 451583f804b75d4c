"""Entry-point target of verl's ``verl.plugins`` group: ``import verl`` imports this module.

Importing it is the whole registration (verl imports entry-point modules, it does not call
them); see :mod:`g2rpo_verl.verl_hooks` for what is registered where. verl logs a failing
entry point at DEBUG only, so a failure is logged here at ERROR before it propagates.
"""

import logging

try:
    from g2rpo_verl.verl_hooks import register_all

    register_all()
except Exception:
    logging.getLogger("g2rpo_verl").exception(
        "g2rpo_verl: the verl plugin failed to load; its estimators (gs_grpo, gs_gdpo, ema_grpo) will be unknown to verl"
    )
    raise
