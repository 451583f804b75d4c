import sys

from g2rpo_verl.compare.cli import main

sys.exit(main())
