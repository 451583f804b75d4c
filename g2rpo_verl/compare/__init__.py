"""``g2rpo-compare``: estimators (or config arms) × seeds on the demo, with intervals.

* :mod:`.stats` - t intervals over seeds and paired differences;
* :mod:`.report` - ``summary.json``, ``report.md`` and plots from the runs' metrics;
* :mod:`.cli` - the command: one ``g2rpo-train`` run per (arm, seed), resumable, then the report.
"""
