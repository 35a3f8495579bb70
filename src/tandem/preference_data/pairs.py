"""Preference pairs from models: two samples per prompt, and those pairs ranked by a task's gold reward.

`sample_pairs` is the one sampler behind every "two samples per prompt" in tandem: DPO on the policy's own
samples (`gold_ranked_pairs`, the setting of Rafailov et al. 2023 on IMDb), AI labels for RLAIF / RL-CAI
(Lee et al. 2023; Bai et al. 2022b) and the temperature / checkpoint pairs of synthetic preferences.
"""

from __future__ import annotations

import random

from tandem.generation import sample


def sample_pairs(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int = 0, temperature: float = 1.0,
                 model_b=None, temperature_b: float | None = None, engine=None,
                 engine_b=None) -> tuple[list[str], list[str]]:
    """Two samples per prompt: a from `model` at `temperature` (seed `seed`), b from `model_b` (default: the same
    model) at `temperature_b` (default: `temperature`) with seed `seed + 1`. `engine` / `engine_b`: engines made
    from `model` / `model_b` that sample in their place (`tandem.generation.engines`; without `model_b`, b comes
    from `engine` unless `engine_b` is given)."""
    if model_b is None and engine_b is None:
        engine_b = engine
    a = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
               engine=engine).texts
    b = sample(model if model_b is None else model_b, tokenizer, prompts, max_new_tokens=max_new_tokens,
               temperature=temperature if temperature_b is None else temperature_b, seed=seed + 1,
               engine=engine_b).texts
    return a, b


def gold_ranked_pairs(model, tokenizer, task, prompts: list[str], seed: int, label_noise: float = 0.0,
                      max_new_tokens: int | None = None) -> list[dict]:
    """{prompt, chosen, rejected}: two samples per prompt (temperature 1) ranked by the task's gold reward.

    Gold ties and pairs with an empty sample are dropped; with probability `label_noise` a pair's labels are
    swapped (seeded by `seed`).
    """
    rng = random.Random(seed)
    first, second = sample_pairs(model, tokenizer, prompts, max_new_tokens or task.max_new_tokens, seed=seed)
    gold_first = task.gold_reward(prompts, first)
    gold_second = task.gold_reward(prompts, second)
    pairs = []
    for prompt, a, b, ga, gb in zip(prompts, first, second, gold_first, gold_second):
        if ga == gb or not a.strip() or not b.strip():
            continue
        chosen, rejected = (a, b) if ga > gb else (b, a)
        if rng.random() < label_noise:
            chosen, rejected = rejected, chosen
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs
