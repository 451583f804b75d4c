"""The embedded default: G²RPO end to end on a CPU, with nothing downloaded.

``g2rpo-train`` (or ``python -m g2rpo_verl.demo``) builds a tiny Qwen3-VL and six generated
visual tasks, then runs the real ``verl.trainer.main_ppo`` pipeline (Ray, TransferQueue, FSDP2
on gloo, the CPU backend's ``hf`` rollout, reward workers, per-task validation) with
``algorithm.adv_estimator=gs_grpo``, length and entropy shaping, and draws the run as PNGs.

Modules, each named for what it holds:

* :mod:`.tasks` - the visual tasks drawn with PIL (grounding, counting, attribute multiple
  choice, OCR, arithmetic, area regression), one reward topology each;
* :mod:`.data` - verl parquet: one training file, one validation file per task;
* :mod:`.model` - the tiny Qwen3-VL, tokenizer, processor and its supervised warm start;
* :mod:`.overrides` - ``configs/demo_cpu.yaml`` -> Hydra overrides, plus the run's paths;
* :mod:`.trainer_process` - the trainer child process, its log and the progress bar;
* :mod:`.metrics` - verl's file-logger metrics: merged across resumed runs, summarised;
* :mod:`.plots` - per-task curves and GRPO vs G²RPO advantage histograms;
* :mod:`.run` - the command;
* fixtures shared with the tests: :mod:`.tiny` (a tiny Qwen2, its BPE tokenizer, toy text
  data), :mod:`.toy_reward` (its reward), :mod:`.tiny_vl` (a tiny Qwen3-VL, tokenizer,
  processor, supervised warm start) and :mod:`.smoke` (``python -m g2rpo_verl.demo.smoke``:
  the real trainer on the toy text tasks, the e2e tests' runner).

The vision-language CPU pieces it relies on (torchvision-free processor and dataset, batched
image rollouts) live in :mod:`g2rpo_verl.cpu`.
"""
