"""``python -m g2rpo_verl.demo [--workdir DIR] [hydra overrides ...]`` (same as ``g2rpo-train``)."""

import sys

from g2rpo_verl.demo.run import main

sys.exit(main())
