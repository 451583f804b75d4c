"""``g2rpo-eval``: a trained policy from checkpoint to a per-task table, scored as training scored.

Modules, from the bottom up (each imports only the ones above it):

* :mod:`.records` - the typed values that pass between the steps (:class:`EvalPrompt`,
  :class:`Prediction`) and the ``predictions.jsonl`` file (append per batch, resume);
* :mod:`.metrics` - per data source / per task aggregates of ``predictions.jsonl`` (pure Python);
* :mod:`.compare` - two evaluations side by side, paired bootstrap intervals per task;
* :mod:`.report` - ``report.md`` and the console tables;
* :mod:`.handoff` - VLMEvalKit / lmms-eval configurations pointing at an exported model;
* :mod:`.checkpoint` - an HF model directory or a verl FSDP checkpoint (merged with verl's
  own ``model_merger``), and the run's Hydra config next to it;
* :mod:`.run_config` - what the run's config says about scoring and prompts (reward function
  and its kwargs, the data section, the task key);
* :mod:`.prompts` - a verl parquet file turned into prompts exactly as verl's dataset and agent
  loop build them;
* :mod:`.generation` - greedy or sampled responses: HF ``generate`` (CPU, the ``hf`` rollout's
  engine) or vLLM (GPU);
* :mod:`.evaluate` - the loop: prompts -> responses -> reward -> ``predictions.jsonl`` ->
  ``metrics.json`` + ``report.md``;
* :mod:`.cli` - the ``g2rpo-eval`` command.

See ``docs/evaluation.md`` for the user's view.
"""
