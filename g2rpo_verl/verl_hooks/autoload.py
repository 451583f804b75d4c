"""Entry-point target of verl's ``verl.plugins`` group: ``import verl`` imports this module.

Importing it is the whole registration (verl imports entry-point modules, it does not call
them); see :mod:`g2rpo_verl.verl_hooks` for what is registered where.
"""

from g2rpo_verl.verl_hooks import register_all

register_all()
