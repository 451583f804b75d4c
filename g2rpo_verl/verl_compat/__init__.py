"""What the plugin relies on in verl, kept light (no import of verl at module import time).

- :mod:`.api` — every private verl symbol the plugin touches, checked against the installed verl;
- :mod:`.request_seeds` — per-request rollout seeds and the overrides selecting the seeded loop.
"""
