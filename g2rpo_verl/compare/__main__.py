import sys

from g2rpo_verl.compare.compare_cli import main

sys.exit(main())
