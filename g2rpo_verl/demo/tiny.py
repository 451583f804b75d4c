"""A tiny model, tokenizer and toy dataset built locally, so a CPU run downloads nothing.

* :func:`build_tokenizer`: byte-level BPE trained with ``tokenizers`` on a synthetic corpus of
  the toy tasks, wrapped as ``PreTrainedTokenizerFast`` with a Qwen-style (ChatML) template.
  EOS is ``<|im_end|>`` (what ends an assistant turn), pad is ``<|endoftext|>``.
* :func:`build_tiny_model`: a randomly initialised ``Qwen2ForCausalLM`` (hidden 64, 2 layers,
  float32, tied embeddings) sized to the tokenizer.
* :func:`warm_start`: a few seconds of supervised training on ``<answer>...</answer>`` responses
  to the toy prompts. A purely random model never produces the answer format, so every reward
  is 0, every GRPO advantage is 0 and a smoke run exercises no gradient at all; after the warm
  start the model emits the format and EOS and is right some of the time, so rewards vary
  within groups (the learning path, and weight sync of *changed* weights, get exercised).
* :func:`build_tiny_qwen2`: tokenizer + warm-started model, saved with ``save_pretrained`` into
  a directory verl can use as ``actor_rollout_ref.model.path``.
* :func:`write_toy_dataset`: verl-format parquet files with two tasks of different
  ``problem_type`` (see :data:`g2rpo_verl.demo.toy_reward.TOY_TASKS`).

Everything is a pure function of ``seed``: same seed, same files.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from g2rpo_verl.demo.toy_reward import ADDITION, CHOICE, OPTION_LETTERS, TOY_TASKS

__all__ = [
    "CHAT_TEMPLATE",
    "build_tokenizer",
    "build_tiny_model",
    "build_tiny_qwen2",
    "dataset_paths",
    "is_model_dir",
    "pad_sft_rows",
    "sft_steps",
    "staged_dir",
    "toy_example",
    "toy_response",
    "warm_start",
    "write_toy_dataset",
]

BOS_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
#: Reasoning/answer tags are single tokens, as ``<think>`` is in Qwen3 tokenizers.
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")

#: ChatML as used by Qwen2/2.5 (without the default system prompt). A message's content may be
#: a string or a list of ``{"type": "text", "text": ...}`` parts.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)


# ------------------------------------------------------------------------------------------------
# toy tasks
# ------------------------------------------------------------------------------------------------
def _addition(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    question = f"What is {a} plus {b}? Think inside <think></think>, then give the number inside <answer></answer>."
    return question, str(a + b)


def _choice(rng: random.Random) -> tuple[str, str]:
    values = rng.sample(range(1, 100), len(OPTION_LETTERS))
    options = "\n".join(f"{letter}. {value}" for letter, value in zip(OPTION_LETTERS, values, strict=True))
    question = (
        f"Which number is the largest?\n{options}\n"
        "Think inside <think></think>, then give the letter inside <answer></answer>."
    )
    return question, OPTION_LETTERS[values.index(max(values))]


_TASK_BUILDERS = {ADDITION: _addition, CHOICE: _choice}


def toy_response(answer: str) -> str:
    """The response the warm start teaches (the toy reward's format, without reasoning)."""
    return f"<answer>{answer}</answer>"


def toy_example(data_source: str, rng: random.Random, split: str, index: int) -> dict[str, Any]:
    """One verl dataset row of task ``data_source`` (a key of ``TOY_TASKS``)."""
    question, answer = _TASK_BUILDERS[data_source](rng)
    problem_type, task_type = TOY_TASKS[data_source]
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": question}],
        "ability": task_type,
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": {
            "split": split,
            "index": index,
            "problem_type": problem_type,
            "task_type": task_type,
        },
    }


def write_toy_dataset(out_dir: str | os.PathLike, n_train: int, n_val: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``train.parquet`` (n_train rows) and ``val.parquet`` (n_val rows) into ``out_dir``.

    Tasks alternate row by row (both splits contain both tasks when n >= 2). Columns follow
    verl's RL dataset: chat ``prompt``, ``data_source``, ``ability``,
    ``reward_model.ground_truth``, ``extra_info`` with ``split, index, problem_type,
    task_type``. Returns the two paths.
    """
    import pandas as pd

    if n_train < 1 or n_val < 1:
        raise ValueError(f"need at least one train and one val row, got {n_train=}, {n_val=}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(TOY_TASKS)
    paths = []
    for split, n_rows, split_seed in (("train", n_train, seed), ("val", n_val, seed + 1_000_003)):
        rng = random.Random(split_seed)
        rows = [toy_example(sources[i % len(sources)], rng, split, i) for i in range(n_rows)]
        path = out / f"{split}.parquet"
        pd.DataFrame(rows).to_parquet(path, index=False)
        paths.append(path)
    return paths[0], paths[1]


# ------------------------------------------------------------------------------------------------
# tokenizer and model
# ------------------------------------------------------------------------------------------------
def _corpus(seed: int, n_per_task: int = 1500) -> list[str]:
    """Chat-formatted prompts and answers of the toy tasks, to train BPE merges on."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n_per_task):
        for source in sorted(TOY_TASKS):
            question, answer = _TASK_BUILDERS[source](rng)
            texts.append(
                f"{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n"
                f"<think>The answer is {answer}.</think>{toy_response(answer)}{IM_END}\n"
            )
    return texts


def build_tokenizer(
    seed: int = 0,
    vocab_size: int = 512,
    corpus: Iterable[str] | None = None,
    special_tokens: Sequence[str] = (),
    chat_template: str = CHAT_TEMPLATE,
):
    """Train a byte-level BPE tokenizer; return a ``PreTrainedTokenizerFast``.

    Args:
        seed: seed of the default corpus (the toy tasks); unused when ``corpus`` is given.
        vocab_size: BPE vocabulary size including the special tokens (the reasoning/answer tags
            are added on top, so ``len(tokenizer) == vocab_size + len(TAG_TOKENS)`` when the
            corpus is rich enough to fill the merges).
        corpus: texts to learn the merges from (default: chat-formatted toy tasks).
        special_tokens: extra special tokens after ``<|endoftext|>, <|im_start|>, <|im_end|>``
            (e.g. Qwen-VL's ``<|vision_start|>``); they get the next ids, in order, and are
            dropped by ``decode(..., skip_special_tokens=True)`` as in the real tokenizers.
        chat_template: Jinja chat template stored on the tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS_TEXT, IM_START, IM_END, *special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(seed) if corpus is None else corpus, trainer)
    extra = {"additional_special_tokens": list(special_tokens)} if special_tokens else {}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=IM_END, pad_token=BOS_TEXT, bos_token=None, unk_token=None, **extra
    )
    tokenizer.add_tokens(list(TAG_TOKENS))
    tokenizer.chat_template = chat_template
    tokenizer.padding_side = "left"
    return tokenizer


def build_tiny_model(tokenizer, seed: int = 0, hidden_size: int = 64, num_layers: int = 2):
    """A randomly initialised float32 ``Qwen2ForCausalLM`` whose vocabulary is ``tokenizer``'s."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    config.architectures = ["Qwen2ForCausalLM"]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return model.to(torch.float32).eval()


def _warm_start_batch(tokenizer, rng: random.Random, batch_size: int):
    """Right-padded (input_ids, attention_mask, labels); loss only on response + EOS tokens."""
    sequences, targets = [], []
    sources = sorted(TOY_TASKS)
    for _ in range(batch_size):
        question, answer = _TASK_BUILDERS[rng.choice(sources)](rng)
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
        )["input_ids"]
        response = tokenizer(toy_response(answer) + IM_END, add_special_tokens=False)["input_ids"]
        sequences.append(prompt + response)
        targets.append([-100] * len(prompt) + response)
    return pad_sft_rows(sequences, targets, tokenizer.pad_token_id)


def pad_sft_rows(rows: Sequence[list[int]], targets: Sequence[list[int]], pad_token_id: int):
    """Right-pad token rows and their label rows: ``(input_ids, attention_mask, labels)``, each (B, T).

    ``targets[i]`` has ``rows[i]``'s length (-100 where no loss); padding gets label -100 and mask 0.
    """
    import torch

    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, target) in enumerate(zip(rows, targets, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(target)] = torch.tensor(target)
        mask[i, : len(row)] = 1
    return input_ids, mask, labels


def warm_start(model, tokenizer, seed: int = 0, steps: int = 120, batch_size: int = 32, lr: float = 3e-3):
    """Supervised warm start on the toy tasks (see module docstring); returns the model in eval mode.

    A few seconds for the default 120 steps. Deterministic given ``seed`` on a given machine.
    """
    import torch

    rng = random.Random(seed + 7919)

    def batch(_step: int) -> dict:
        input_ids, mask, labels = _warm_start_batch(tokenizer, rng, batch_size)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}

    return sft_steps(model, batch, steps, torch.optim.AdamW(model.parameters(), lr=lr), seed)


def sft_steps(model, batch_of_step, steps: int, optimizer, seed: int, scheduler=None, clip_norm=None, on_loss=None):
    """``steps`` supervised steps on ``model(**batch_of_step(step)).loss``; returns the model in eval mode.

    Each step: backward, optional gradient-norm clip to ``clip_norm``, ``optimizer`` step, optional
    ``scheduler`` step, then ``on_loss(step, loss)`` if given. torch's RNG is forked and seeded
    with ``seed``, so the caller's random state is untouched. One intra-op thread: the matrices
    are tiny, and on a busy 2-core machine OpenMP's spinning threads made this ~8x slower than a
    single one (and one thread keeps the result reproducible).
    """
    import torch

    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for step in range(steps):
                loss = model(**batch_of_step(step)).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                if on_loss is not None:
                    on_loss(step, loss)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def build_tiny_qwen2(
    out_dir: str | os.PathLike, seed: int = 0, overwrite: bool = False, warm_start_steps: int = 120
) -> Path:
    """Save tokenizer + (warm-started) tiny Qwen2 + generation config into ``out_dir``; return it.

    Reuses an existing complete directory unless ``overwrite``. Builds in a temporary sibling
    and renames it into place, so an interrupted build never leaves a half-written model.
    """
    from transformers import GenerationConfig

    out = Path(out_dir)
    if is_model_dir(out) and not overwrite:
        return out
    with staged_dir(out) as tmp:
        tokenizer = build_tokenizer(seed)
        model = warm_start(build_tiny_model(tokenizer, seed), tokenizer, seed, steps=warm_start_steps)
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).save_pretrained(tmp)
    return out


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out``; on success it replaces ``out`` (rename).

    An interrupted or failed build therefore never leaves a half-written ``out``, and the
    temporary directory is always removed.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_model_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a saved model config, weights and tokenizer."""
    p = Path(path)
    return (p / "config.json").is_file() and (p / "tokenizer.json").is_file() and any(p.glob("*.safetensors"))


def dataset_paths(data_dir: str | os.PathLike) -> tuple[Path, Path] | None:
    """``(train, val)`` parquet paths in ``data_dir`` if both exist, else None."""
    train, val = Path(data_dir) / "train.parquet", Path(data_dir) / "val.parquet"
    return (train, val) if train.is_file() and val.is_file() else None
